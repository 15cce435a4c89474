//! Loading plugin files (DESIGN.md §2 "Loading a plugin file").
//!
//! Owns the path from a resolved plugin file to an opened [`PluginLibrary`]
//! (bare names are resolved by `config::PluginPath`): the file and directory checks, the ELF check, the
//! optional pin, and `dlopen` of the checked descriptor through
//! `/proc/self/fd/N`. Must never hand `dlopen` a path that was not checked,
//! nor a bare relative name (it would search library paths).
//!
//! Checked descriptors stay open for the life of the process: glibc matches
//! already-loaded libraries by name, so a reused `/proc/self/fd/N` would
//! silently return the first library loaded under that name.

mod elf_check;
mod file_check;
mod pin;

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nodeinit_plugin_api::{OpenError, PluginLibrary};

pub use pin::sha256_hex;

use crate::config::Sha256Pin;

/// Why one plugin file could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadFailure {
    /// No such file.
    Missing,
    /// The final path component is a symlink.
    Symlink,
    /// Not a regular file.
    NotRegular(String),
    /// Owner or mode unsafe for code run as root.
    Unsafe(String),
    /// Could not open/read.
    Open(String),
    /// Not a loadable 64-bit little-endian ELF shared object.
    NotElf(String),
    /// ELF for another machine (`e_machine`).
    WrongMachine(u16),
    /// A PIE executable, not a library.
    Executable,
    /// Segments beyond the end of the file.
    Truncated(String),
    /// The `sha256` pin does not match.
    PinMismatch {
        /// From the config.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// `dlopen` or the root module failed.
    Library(OpenError),
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no such file: check the plugin path or [host].plugin_dir"),
            Self::Symlink => f.write_str(
                "is a symbolic link; plugins are opened with O_NOFOLLOW: point the config at the real file",
            ),
            Self::NotRegular(what) => write!(f, "not a regular file ({what})"),
            Self::Unsafe(why) => write!(f, "refused: {why}"),
            Self::Open(why) => write!(f, "cannot open: {why}"),
            Self::NotElf(why) => write!(f, "not a shared library: {why}"),
            Self::WrongMachine(m) => write!(
                f,
                "ELF built for another machine (e_machine {m}); rebuild it for {}",
                std::env::consts::ARCH
            ),
            Self::Executable => f.write_str(
                "an executable (has PT_INTERP), not a shared library: build the plugin as crate-type cdylib",
            ),
            Self::Truncated(why) => write!(f, "truncated or corrupt: {why}; reinstall the plugin"),
            Self::PinMismatch { expected, actual } => write!(
                f,
                "sha256 mismatch: config pins {expected}, file is {actual}; reinstall the plugin or update the pin"
            ),
            Self::Library(e) => write!(f, "{e}"),
        }
    }
}

/// A [`LoadFailure`] with the path it happened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The resolved plugin path.
    pub path: PathBuf,
    /// What went wrong.
    pub failure: LoadFailure,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.failure)
    }
}

impl std::error::Error for LoadError {}

/// A plugin file, checked and opened.
#[derive(Debug)]
pub struct LoadedPlugin {
    /// The path it was loaded from.
    pub path: PathBuf,
    /// The opened library.
    pub library: PluginLibrary,
    /// SHA-256 of the file, when it was computed (pinned plugins).
    pub sha256: Option<String>,
}

/// Descriptors of loaded plugins (with the path they were loaded from),
/// kept open for the life of the process.
static LOADED_FDS: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// SHA-256 of the file that was loaded from `path` — read through the
/// descriptor kept open, so a file replaced on disk since does not count.
pub fn loaded_sha256(path: &Path) -> Option<String> {
    let loaded = LOADED_FDS.lock().unwrap_or_else(PoisonError::into_inner);
    let (_, file) = loaded.iter().rev().find(|(p, _)| p == path)?;
    sha256_hex(file).ok()
}

/// Checks and loads one plugin file.
///
/// # Errors
///
/// A [`LoadError`] naming `path` and the one-line reason.
pub fn load_plugin(path: &Path, pin: Option<&Sha256Pin>) -> Result<LoadedPlugin, LoadError> {
    let fail = |failure| LoadError {
        path: path.to_path_buf(),
        failure,
    };
    let file = file_check::open_checked(path).map_err(fail)?;
    let len = file
        .metadata()
        .map_err(|e| fail(LoadFailure::Open(e.to_string())))?
        .len();
    elf_check::check_elf(&file, len).map_err(fail)?;
    let sha256 = match pin {
        Some(pin) => {
            pin::verify(&file, pin).map_err(fail)?;
            Some(pin.as_hex().to_owned())
        }
        None => None,
    };
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let library = open_library(&fd_path).map_err(|e| fail(LoadFailure::Library(e)))?;
    LOADED_FDS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((path.to_path_buf(), file));
    tracing::debug!(path = %path.display(), plugin = library.name(), version = library.version(), "plugin loaded");
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        library,
        sha256,
    })
}

fn open_library(fd_path: &Path) -> Result<PluginLibrary, OpenError> {
    // SAFETY: `fd_path` names a descriptor that `load_plugin` opened with
    // O_NOFOLLOW and checked (root-owned, not group/world-writable, a
    // little-endian ET_DYN for this machine with every PT_LOAD inside the
    // file); the descriptor is kept open forever, so the file cannot be
    // swapped under the name.
    let result = unsafe { PluginLibrary::open(fd_path) };
    if let Err(OpenError::AbiMismatch { report, .. }) = &result {
        tracing::debug!(report = %report, "abi_stable layout report");
    }
    result
}
