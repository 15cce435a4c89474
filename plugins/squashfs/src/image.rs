//! Finding and vetting a uenv image before anything is attached or mounted.
//!
//! Owns the rules of DESIGN §3: an image is an absolute path inside one of the
//! configured `image_dirs` (after canonicalisation of its directory) or a bare
//! name looked up in them; its last component is opened with `O_NOFOLLOW`; it
//! must be a regular file holding a complete squashfs superblock. The opened
//! descriptor is what later goes to the loop device, so nothing can swap the
//! file between the check and the attach. This module must never mount or
//! attach anything.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::superblock::{check_superblock, SuperblockError};

/// Longest accepted mount name (a file name limit).
pub const MAX_MOUNT_NAME_LEN: usize = 255;

/// The directory name an image is mounted under: the image's file stem,
/// restricted to `[A-Za-z0-9][A-Za-z0-9._+@-]*` so it is a safe single path
/// component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MountName(String);

impl MountName {
    /// Derive the mount name from an image file name (its stem).
    ///
    /// # Errors
    ///
    /// [`ImageError::BadName`] when the stem is empty or not a safe component.
    pub fn from_image_file_name(file_name: &str) -> Result<Self, ImageError> {
        let stem = Path::new(file_name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let mut bytes = stem.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok = bytes
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'@' | b'-'));
        if !(first_ok && rest_ok) || stem.len() > MAX_MOUNT_NAME_LEN {
            return Err(ImageError::BadName {
                file_name: file_name.to_owned(),
            });
        }
        Ok(Self(stem.to_owned()))
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an image request was refused. Each message names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// `image_dirs` is empty.
    #[error("no image_dirs are configured; set plugins.mount.options.image_dirs")]
    NoImageDirs,
    /// Neither absolute nor a bare file name.
    #[error("{requested:?} is neither an absolute path nor a bare file name; give the full path or only the file name")]
    NotAbsolute {
        /// The request.
        requested: String,
    },
    /// The final component is `.`, `..` or missing.
    #[error("{requested:?} does not name a file")]
    NoFileName {
        /// The request.
        requested: String,
    },
    /// The image is not there.
    #[error("image {path} does not exist (image_dirs: {dirs})")]
    NotFound {
        /// Path tried (for a bare name: the name).
        path: String,
        /// The configured directories.
        dirs: String,
    },
    /// The image lies outside every image dir.
    #[error("{path} is outside the configured image_dirs ({dirs}); move the image into one of them or add its directory to image_dirs")]
    OutsideImageDirs {
        /// The canonical path.
        path: String,
        /// The configured directories.
        dirs: String,
    },
    /// The last component is a symbolic link.
    #[error("{path} is a symbolic link; images are opened without following links, configure the real file instead")]
    Symlink {
        /// The path.
        path: String,
    },
    /// A directory.
    #[error("{path} is a directory, not a squashfs image file")]
    Directory {
        /// The path.
        path: String,
    },
    /// Neither a directory nor a regular file (device, FIFO, socket).
    #[error("{path} is a {kind}, not a regular squashfs image file")]
    NotRegularFile {
        /// The path.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// The file name gives no usable mount point name.
    #[error("image file name {file_name:?} does not give a usable mount point name: its stem must match [A-Za-z0-9][A-Za-z0-9._+@-]* (at most 255 bytes); rename the image")]
    BadName {
        /// The file name.
        file_name: String,
    },
    /// Not a complete squashfs image.
    #[error("{path}: {source}")]
    Superblock {
        /// The path.
        path: String,
        /// What is wrong with the content.
        source: SuperblockError,
    },
    /// Any other I/O failure.
    #[error("{what} {path} failed: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// On which path.
        path: String,
        /// The OS error.
        source: io::Error,
    },
}

/// An image that passed every check, with its open descriptor.
#[derive(Debug)]
pub struct ValidatedImage {
    /// Canonical path: the key the manager counts references under.
    pub path: PathBuf,
    /// The mount directory name.
    pub mount_name: MountName,
    /// The image opened `O_RDONLY|O_NOFOLLOW|O_CLOEXEC`; this is what gets attached.
    pub file: File,
}

/// Resolves requested image paths against the configured `image_dirs`.
#[derive(Debug, Clone)]
pub struct ImageLocator {
    image_dirs: Vec<PathBuf>,
}

impl ImageLocator {
    /// A locator over `image_dirs` (absolute paths; canonicalised at each lookup,
    /// because the directories may be mounted after nodeinit starts).
    #[must_use]
    pub fn new(image_dirs: Vec<PathBuf>) -> Self {
        Self { image_dirs }
    }

    fn dirs_text(&self) -> String {
        let dirs: Vec<String> = self
            .image_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(", ")
    }

    /// The canonical path `requested` designates, without opening or judging
    /// the file itself (its directory is canonicalised, its name kept): used to
    /// find the references of an image that may since have been deleted.
    ///
    /// # Errors
    ///
    /// [`ImageError`] when the request is malformed, outside `image_dirs`, or
    /// (for a bare name) found in no image dir.
    pub fn locate(&self, requested: &str) -> Result<PathBuf, ImageError> {
        if self.image_dirs.is_empty() {
            return Err(ImageError::NoImageDirs);
        }
        let req = Path::new(requested);
        let file_name = match req.components().next_back() {
            Some(Component::Normal(name)) => name,
            _ => {
                return Err(ImageError::NoFileName {
                    requested: requested.to_owned(),
                })
            }
        };
        if req.is_absolute() {
            let parent = req.parent().ok_or_else(|| ImageError::NoFileName {
                requested: requested.to_owned(),
            })?;
            let parent = canonical_dir(parent, requested, &self.dirs_text())?;
            let candidate = parent.join(file_name);
            self.require_inside(&parent, &candidate)?;
            return Ok(candidate);
        }
        if req.components().count() != 1 {
            return Err(ImageError::NotAbsolute {
                requested: requested.to_owned(),
            });
        }
        for dir in &self.image_dirs {
            let Ok(dir) = dir.canonicalize() else {
                continue;
            };
            let candidate = dir.join(file_name);
            if candidate.symlink_metadata().is_ok() {
                return Ok(candidate);
            }
        }
        Err(ImageError::NotFound {
            path: requested.to_owned(),
            dirs: self.dirs_text(),
        })
    }

    fn require_inside(&self, canonical_parent: &Path, candidate: &Path) -> Result<(), ImageError> {
        let inside = self.image_dirs.iter().any(|dir| {
            dir.canonicalize()
                .is_ok_and(|dir| canonical_parent.starts_with(dir))
        });
        if inside {
            Ok(())
        } else {
            Err(ImageError::OutsideImageDirs {
                path: candidate.display().to_string(),
                dirs: self.dirs_text(),
            })
        }
    }

    /// Locate `requested`, open it without following a final symlink, and
    /// check it is a regular file holding a complete squashfs image.
    ///
    /// # Errors
    ///
    /// [`ImageError`] naming the first rule the image breaks.
    pub fn validate(&self, requested: &str) -> Result<ValidatedImage, ImageError> {
        let path = self.locate(requested)?;
        let shown = path.display().to_string();
        let file = std::fs::OpenOptions::new()
            .read(true)
            // O_NONBLOCK: opening a FIFO must fail the type check below, not hang PID 1.
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
            .open(&path)
            .map_err(|source| match source.raw_os_error() {
                Some(nix::libc::ELOOP) => ImageError::Symlink {
                    path: shown.clone(),
                },
                Some(nix::libc::ENOENT) => ImageError::NotFound {
                    path: shown.clone(),
                    dirs: self.dirs_text(),
                },
                _ => ImageError::Io {
                    what: "opening image",
                    path: shown.clone(),
                    source,
                },
            })?;
        let meta = file.metadata().map_err(|source| ImageError::Io {
            what: "fstat of image",
            path: shown.clone(),
            source,
        })?;
        let kind = meta.file_type();
        if kind.is_dir() {
            return Err(ImageError::Directory { path: shown });
        }
        if !kind.is_file() {
            let kind = if kind.is_block_device() {
                "block device"
            } else if kind.is_char_device() {
                "character device"
            } else if kind.is_fifo() {
                "FIFO"
            } else if kind.is_socket() {
                "socket"
            } else {
                "special file"
            };
            return Err(ImageError::NotRegularFile { path: shown, kind });
        }
        let file_name =
            path.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| ImageError::BadName {
                    file_name: path.display().to_string(),
                })?;
        let mount_name = MountName::from_image_file_name(file_name)?;
        check_superblock(&file, meta.len()).map_err(|source| ImageError::Superblock {
            path: shown,
            source,
        })?;
        Ok(ValidatedImage {
            path,
            mount_name,
            file,
        })
    }
}

fn canonical_dir(dir: &Path, requested: &str, dirs: &str) -> Result<PathBuf, ImageError> {
    dir.canonicalize().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ImageError::NotFound {
            path: requested.to_owned(),
            dirs: dirs.to_owned(),
        },
        _ => ImageError::Io {
            what: "resolving the directory of",
            path: requested.to_owned(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_name_is_the_stem() {
        let name = MountName::from_image_file_name("pytorch-2.5.sqfs").unwrap();
        assert_eq!(name.as_str(), "pytorch-2.5");
    }

    #[test]
    fn mount_name_rejects_unsafe_stems() {
        for bad in [".sqfs", "-x.sqfs", "a b.sqfs", "é.sqfs"] {
            let err = MountName::from_image_file_name(bad).unwrap_err();
            assert!(
                matches!(err, ImageError::BadName { ref file_name } if file_name == bad),
                "{err}"
            );
        }
    }

    #[test]
    fn locate_rejects_relative_paths_and_dot_names() {
        let dir = tempfile::tempdir().unwrap();
        let locator = ImageLocator::new(vec![dir.path().to_path_buf()]);
        let err = locator.locate("sub/x.sqfs").unwrap_err();
        assert!(matches!(err, ImageError::NotAbsolute { .. }), "{err}");
        let err = locator.locate("/x/..").unwrap_err();
        assert!(matches!(err, ImageError::NoFileName { .. }), "{err}");
    }

    #[test]
    fn no_image_dirs_is_a_config_error() {
        let err = ImageLocator::new(vec![]).locate("/x.sqfs").unwrap_err();
        assert!(
            err.to_string()
                .contains("set plugins.mount.options.image_dirs"),
            "{err}"
        );
    }
}
