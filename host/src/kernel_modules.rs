//! Loading the kernel modules an initramfs ships (loop, squashfs, virtio
//! drivers, ...): PID 1 has no modprobe. The list is
//! `/lib/modules/<release>/modules.load`, one path per line relative to that
//! directory, dependencies first — as `tests/vm/mkinitramfs.sh` writes it.
//!
//! Owns only `finit_module(2)` of listed files; never resolves dependencies
//! itself (the list is already in order) and never unloads.

use std::ffi::CStr;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// What loading the list did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ModulesLoaded {
    /// Modules loaded now.
    pub loaded: Vec<String>,
    /// Modules the kernel already had (`EEXIST`).
    pub present: Vec<String>,
    /// `path: error` for each that failed.
    pub failed: Vec<String>,
}

/// The list file of the running kernel, under `root` (normally `/`).
pub fn list_path(root: &Path) -> Option<PathBuf> {
    let release = nix::sys::utsname::uname()
        .ok()?
        .release()
        .to_string_lossy()
        .into_owned();
    Some(root.join("lib/modules").join(release).join("modules.load"))
}

/// Loads every module named in `list` (paths relative to its directory).
/// `Ok(None)` when there is no list.
///
/// # Errors
///
/// The list exists but cannot be read.
pub fn load_listed(list: &Path) -> Result<Option<ModulesLoaded>, String> {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", list.display())),
    };
    let dir = list.parent().unwrap_or(Path::new("/"));
    let mut out = ModulesLoaded::default();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let path = dir.join(line);
        let name = Path::new(line)
            .file_stem()
            .map_or_else(|| line.to_owned(), |s| s.to_string_lossy().into_owned());
        match load_one(&path) {
            Ok(()) => out.loaded.push(name),
            Err(Errno::EEXIST) => out.present.push(name),
            Err(e) => out
                .failed
                .push(format!("{}: {}", path.display(), describe(e))),
        }
    }
    Ok(Some(out))
}

fn load_one(path: &Path) -> Result<(), Errno> {
    let file = File::open(path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))?;
    let no_params: &CStr = c"";
    finit_module(&file, no_params, ModuleInitFlags::empty())
}

fn describe(e: Errno) -> String {
    let hint = match e {
        Errno::ENOENT => "the file is not in the image",
        Errno::ENOEXEC => "not a module for this kernel (wrong kernel version or compressed)",
        Errno::EKEYREJECTED | Errno::EBADMSG => "signature rejected (module signing is enforced)",
        Errno::EPERM => "module loading is disabled (CAP_SYS_MODULE or kernel.modules_disabled)",
        Errno::ENOSYS => "this kernel was built without module support",
        _ => "see dmesg",
    };
    format!("{e} ({hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_list_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_listed(&dir.path().join("modules.load")), Ok(None));
    }

    #[test]
    fn a_missing_or_bogus_module_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.load"),
            "# comment\nkernel/nosuch.ko\nbogus.ko\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("bogus.ko"), b"not an ELF module").unwrap();
        let out = load_listed(&dir.path().join("modules.load"))
            .unwrap()
            .unwrap();
        assert!(out.loaded.is_empty() && out.present.is_empty());
        assert_eq!(out.failed.len(), 2);
        assert_eq!(
            out.failed[0],
            format!("{}/kernel/nosuch.ko: ENOENT: No such file or directory (the file is not in the image)", dir.path().display())
        );
        // ENOEXEC where the kernel takes modules; ENOSYS on one built without
        // (like the development VM). Real loading is proven in the VM test.
        let bogus = format!("{}/bogus.ko: ", dir.path().display());
        assert!(
            out.failed[1].starts_with(&format!("{bogus}ENOEXEC: Exec format error (not a module for this kernel"))
                || out.failed[1] == format!("{bogus}ENOSYS: Function not implemented (this kernel was built without module support)"),
            "{}",
            out.failed[1]
        );
    }
}
