//! Finding and vetting a uenv image before anything is attached or mounted.
//!
//! Owns the rules of DESIGN §3: an image is an absolute path inside one of the
//! configured `image_dirs` or a bare name looked up in them; it must be a
//! regular file holding a complete squashfs superblock. Each image dir is
//! opened as a descriptor and checked (see [`crate::beneath`]), and the rest
//! of the path is resolved beneath it without following any link, in one
//! `openat2` lookup for the directories and one `openat(O_NOFOLLOW)` for the
//! file: there is no second walk by name a rename could redirect (issue 12,
//! item 8). `..` is refused before any lookup. The opened descriptor is what
//! later goes to the loop device, so nothing can swap the file between the
//! check and the attach. This module must never mount or attach anything.
//!
//! Image dirs are reopened for every lookup, not kept open: a site may mount
//! its image filesystem over the directory after nodeinit started, and a
//! descriptor taken before would keep showing the directory underneath.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::OFlags;

use crate::beneath::{self, CheckedDir, DirError};
use crate::escape::text as esc;
use crate::superblock::{check_superblock, SuperblockError};

/// Longest accepted mount name (a file name limit).
pub const MAX_MOUNT_NAME_LEN: usize = 255;
/// Bytes of the directory hash in a disambiguated mount name (8 hex digits):
/// short enough to read, and a clash is refused anyway.
const DIR_HASH_BYTES: usize = 4;

/// The directory name an image is mounted under: the image's file stem,
/// restricted to `[A-Za-z0-9][A-Za-z0-9._+@-]*` so it is a safe single path
/// component, plus a short hash of its directory unless it lies directly in
/// the first image dir ([`MountName::for_image`]).
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

    /// The mount name of the image at canonical `path` (issue 11, item 7):
    ///
    /// - an image directly in the first image dir (`primary_dir`, canonical)
    ///   is mounted under its plain stem: `/images/base.sqfs` → `base`;
    /// - any other image gets its stem plus the first 8 hex digits of the
    ///   SHA-256 of its canonical directory: `/var/cache/lattice/uenv/base.sqfs`
    ///   → `base-87aadd10`.
    ///
    /// The name depends only on the image's own path, so it is the same in
    /// every run and after a restart ([`crate::SquashfsManager`]'s
    /// `reconstruct_state` finds mounts by what the kernel says, and
    /// `force_unmount` of an untracked image recomputes it), and two images
    /// named alike in different directories never share a mount point. The
    /// rare clash that remains (an image in the first dir literally named
    /// `base-87aadd10.sqfs`) is refused, never stacked.
    ///
    /// # Errors
    ///
    /// [`ImageError::BadName`] when the file name gives no usable name.
    pub fn for_image(path: &Path, primary_dir: Option<&Path>) -> Result<Self, ImageError> {
        let file_name =
            path.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| ImageError::BadName {
                    file_name: path.display().to_string(),
                })?;
        let plain = Self::from_image_file_name(file_name)?;
        let parent = path.parent().unwrap_or(Path::new("/"));
        if primary_dir == Some(parent) {
            return Ok(plain);
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(parent.as_os_str().as_encoded_bytes());
        let short: String = digest
            .iter()
            .take(DIR_HASH_BYTES)
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("{}-{short}", plain.0);
        if name.len() > MAX_MOUNT_NAME_LEN {
            return Err(ImageError::BadName {
                file_name: file_name.to_owned(),
            });
        }
        Ok(Self(name))
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
    #[error("image {p} does not exist (image_dirs: {d})", p = esc(.path), d = esc(.dirs))]
    NotFound {
        /// Path tried (for a bare name: the name).
        path: String,
        /// The configured directories.
        dirs: String,
    },
    /// The image lies outside every image dir.
    #[error("{p} is outside the configured image_dirs ({d}); move the image into one of them or add its directory to image_dirs", p = esc(.path), d = esc(.dirs))]
    OutsideImageDirs {
        /// The canonical path.
        path: String,
        /// The configured directories.
        dirs: String,
    },
    /// The last component is a symbolic link.
    #[error("{p} is a symbolic link; images are opened without following links, configure the real file instead", p = esc(.path))]
    Symlink {
        /// The path.
        path: String,
    },
    /// A directory on the way to the image is a symbolic link.
    #[error("{p} passes through a symbolic link below image dir {d}; links are not followed below an image dir (a rename could point them anywhere): give the real path of the image, or add the link's target directory to image_dirs", p = esc(.path), d = esc(.dir))]
    SymlinkInPath {
        /// The path.
        path: String,
        /// The image dir it was resolved beneath.
        dir: String,
    },
    /// An image dir is unusable (not a directory, writable by others...).
    #[error(transparent)]
    Dir(#[from] DirError),
    /// A directory.
    #[error("{p} is a directory, not a squashfs image file", p = esc(.path))]
    Directory {
        /// The path.
        path: String,
    },
    /// Neither a directory nor a regular file (device, FIFO, socket).
    #[error("{p} is a {kind}, not a regular squashfs image file", p = esc(.path))]
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
    #[error("{p}: {source}", p = esc(.path))]
    Superblock {
        /// The path.
        path: String,
        /// What is wrong with the content.
        source: SuperblockError,
    },
    /// Any other I/O failure.
    #[error("{what} {p} failed: {source}", p = esc(.path))]
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

/// An image found beneath an image dir: its table key and its open parent.
struct Found {
    /// Canonical path (the image dir as the kernel names it, plus the rest).
    path: PathBuf,
    /// The directory holding the file, opened beneath the image dir.
    parent: Option<OwnedFd>,
    /// The image dir.
    dir: CheckedDir,
    /// The file name inside `parent`.
    name: PathBuf,
}

impl ImageLocator {
    /// A locator over `image_dirs` (absolute paths; opened at each lookup,
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

    /// The image dirs that exist now, opened and checked. A missing dir is
    /// skipped (it may appear later); any other problem is an error.
    fn open_dirs(&self) -> Result<Vec<CheckedDir>, ImageError> {
        let mut dirs = Vec::with_capacity(self.image_dirs.len());
        for dir in &self.image_dirs {
            match CheckedDir::open("image_dirs", dir, false) {
                Ok(checked) => dirs.push(checked),
                Err(DirError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(dirs)
    }

    /// Find `requested` without opening the file: which image dir, which
    /// relative path, and its canonical key.
    fn find(&self, requested: &str) -> Result<Found, ImageError> {
        if self.image_dirs.is_empty() {
            return Err(ImageError::NoImageDirs);
        }
        let req = Path::new(requested);
        let file_name = match req.components().next_back() {
            Some(Component::Normal(name)) => PathBuf::from(name),
            _ => {
                return Err(ImageError::NoFileName {
                    requested: requested.to_owned(),
                })
            }
        };
        let dirs = self.open_dirs()?;
        if req.is_absolute() {
            let outside = || ImageError::OutsideImageDirs {
                path: requested.to_owned(),
                dirs: self.dirs_text(),
            };
            let Some((dir, rel)) = dirs
                .into_iter()
                .find_map(|d| d.relative(req).map(Path::to_path_buf).map(|rel| (d, rel)))
            else {
                // Not below an image dir that exists: outside, or below one that is missing.
                let below_missing = self.image_dirs.iter().any(|d| req.starts_with(d));
                return Err(if below_missing {
                    ImageError::NotFound {
                        path: requested.to_owned(),
                        dirs: self.dirs_text(),
                    }
                } else {
                    outside()
                });
            };
            // `..` is refused, not resolved: it is how a request leaves a directory.
            if !beneath::is_plain_relative(&rel) {
                return Err(outside());
            }
            let parent = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                None => None,
                Some(parent_rel) => Some(
                    beneath::open_beneath(dir.fd(), parent_rel, OFlags::RDONLY | OFlags::DIRECTORY)
                        .map_err(|source| match source.raw_os_error() {
                            Some(nix::libc::ELOOP) => ImageError::SymlinkInPath {
                                path: requested.to_owned(),
                                dir: dir.configured.display().to_string(),
                            },
                            Some(nix::libc::ENOENT | nix::libc::ENOTDIR) => ImageError::NotFound {
                                path: requested.to_owned(),
                                dirs: self.dirs_text(),
                            },
                            Some(nix::libc::EXDEV) => outside(),
                            _ => ImageError::Io {
                                what: "resolving the directory of",
                                path: requested.to_owned(),
                                source,
                            },
                        })?,
                ),
            };
            return Ok(Found {
                path: dir.canonical.join(&rel),
                parent,
                dir,
                name: file_name,
            });
        }
        if req.components().count() != 1 {
            return Err(ImageError::NotAbsolute {
                requested: requested.to_owned(),
            });
        }
        for dir in dirs {
            let exists =
                rustix::fs::statat(dir.fd(), &file_name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok();
            if exists {
                return Ok(Found {
                    path: dir.canonical.join(&file_name),
                    parent: None,
                    dir,
                    name: file_name,
                });
            }
        }
        Err(ImageError::NotFound {
            path: requested.to_owned(),
            dirs: self.dirs_text(),
        })
    }

    /// The canonical path `requested` designates, without opening or judging
    /// the file itself: used to find the references of an image that may
    /// since have been deleted.
    ///
    /// # Errors
    ///
    /// [`ImageError`] when the request is malformed, outside `image_dirs`, or
    /// (for a bare name) found in no image dir.
    pub fn locate(&self, requested: &str) -> Result<PathBuf, ImageError> {
        self.find(requested).map(|found| found.path)
    }

    /// The canonical path of the first image dir, when it exists: images
    /// directly in it are mounted under their plain stem.
    #[must_use]
    pub fn primary_dir(&self) -> Option<PathBuf> {
        let first = self.image_dirs.first()?;
        Some(first.canonicalize().unwrap_or_else(|_| first.clone()))
    }

    /// Locate `requested`, open it without following a link anywhere below
    /// its image dir, and check it is a regular file holding a complete
    /// squashfs image.
    ///
    /// # Errors
    ///
    /// [`ImageError`] naming the first rule the image breaks.
    pub fn validate(&self, requested: &str) -> Result<ValidatedImage, ImageError> {
        let found = self.find(requested)?;
        let path = found.path;
        let shown = path.display().to_string();
        let at = found.parent.as_ref().map_or(found.dir.fd(), AsFd::as_fd);
        // O_NONBLOCK: opening a FIFO must fail the type check below, not hang PID 1.
        let fd = rustix::fs::openat(
            at,
            &found.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        )
        .map_err(|errno| match errno {
            rustix::io::Errno::LOOP => ImageError::Symlink {
                path: shown.clone(),
            },
            rustix::io::Errno::NOENT => ImageError::NotFound {
                path: shown.clone(),
                dirs: self.dirs_text(),
            },
            _ => ImageError::Io {
                what: "opening image",
                path: shown.clone(),
                source: errno.into(),
            },
        })?;
        let file = File::from(fd);
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
        let mount_name = MountName::for_image(&path, self.primary_dir().as_deref())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_name_is_the_stem() {
        let name = MountName::from_image_file_name("pytorch-2.5.sqfs").unwrap();
        assert_eq!(name.as_str(), "pytorch-2.5");
    }

    #[test]
    fn mount_name_is_plain_only_in_the_first_image_dir() {
        let primary = Path::new("/images");
        let plain = MountName::for_image(Path::new("/images/base.sqfs"), Some(primary)).unwrap();
        assert_eq!(plain.as_str(), "base");
        let other = MountName::for_image(
            Path::new("/var/cache/lattice/uenv/base.sqfs"),
            Some(primary),
        )
        .unwrap();
        let sub = MountName::for_image(Path::new("/images/sub/base.sqfs"), Some(primary)).unwrap();
        // First 4 bytes of sha256("/var/cache/lattice/uenv") and of "/images/sub".
        assert_eq!(other.as_str(), "base-87aadd10");
        assert_eq!(&sha_hex("/var/cache/lattice/uenv")[..8], "87aadd10");
        assert_eq!(
            sub.as_str(),
            format!("base-{}", &sha_hex("/images/sub")[..8])
        );
        assert_ne!(other, sub);
        assert_eq!(
            MountName::for_image(Path::new("/var/cache/lattice/uenv/base.sqfs"), None).unwrap(),
            other,
            "the name must not depend on whether the first dir exists"
        );
    }

    fn sha_hex(text: &str) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
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
