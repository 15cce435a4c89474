//! The squashfs superblock check done before an image reaches a loop device.
//!
//! Owns reading and judging the first 96 bytes of an image (magic `hsqs`,
//! version 4, block size, `bytes_used` against the file size). It must never
//! open files by path: it reads from the descriptor the caller validated, so
//! what is checked is what gets attached.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Size of the squashfs 4.0 superblock.
pub const SUPERBLOCK_LEN: usize = 96;
/// The on-disk magic, little-endian `0x73717368`.
pub const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

/// Why a file is not a usable squashfs image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    /// Zero-length file.
    #[error("the file is empty (0 bytes); rebuild the image with mksquashfs")]
    Empty,
    /// The magic is not `hsqs`.
    #[error("not a squashfs image: it starts with {found:02x?}, expected the magic \"hsqs\"")]
    BadMagic {
        /// The first bytes found (up to 4).
        found: Vec<u8>,
    },
    /// Shorter than a superblock, or shorter than the superblock's `bytes_used`.
    #[error("truncated squashfs image: the superblock says {expected} bytes, the file has {actual}; copy the image again")]
    Truncated {
        /// Bytes the image needs.
        expected: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// A superblock this kernel driver cannot mount.
    #[error("unsupported squashfs superblock: {detail}")]
    Unsupported {
        /// What is wrong.
        detail: String,
    },
    /// Reading the file failed.
    #[error("reading the squashfs superblock failed: {0}")]
    Read(String),
}

/// Check that `file` (of `file_len` bytes) holds a complete squashfs 4 image.
///
/// # Errors
///
/// [`SuperblockError`] naming what is wrong.
pub fn check_superblock(file: &File, file_len: u64) -> Result<(), SuperblockError> {
    if file_len == 0 {
        return Err(SuperblockError::Empty);
    }
    let mut block = [0u8; SUPERBLOCK_LEN];
    let available = usize::try_from(file_len).map_or(SUPERBLOCK_LEN, |n| n.min(SUPERBLOCK_LEN));
    let head = block
        .get_mut(..available)
        .ok_or_else(|| SuperblockError::Read("superblock buffer bounds".to_owned()))?;
    file.read_exact_at(head, 0)
        .map_err(|e| SuperblockError::Read(e.to_string()))?;
    judge_superblock(&block[..available], file_len)
}

/// The pure part of [`check_superblock`]: judge the bytes read from the start.
///
/// # Errors
///
/// [`SuperblockError`] naming what is wrong.
pub fn judge_superblock(head: &[u8], file_len: u64) -> Result<(), SuperblockError> {
    if head.is_empty() {
        return Err(SuperblockError::Empty);
    }
    let magic_matches = match head.get(..SQUASHFS_MAGIC.len()) {
        Some(magic) => magic == SQUASHFS_MAGIC,
        // A file shorter than the magic is truncated if what it has is a prefix of it.
        None => SQUASHFS_MAGIC.starts_with(head),
    };
    if !magic_matches {
        return Err(SuperblockError::BadMagic {
            found: head.iter().take(4).copied().collect(),
        });
    }
    if head.len() < SUPERBLOCK_LEN {
        return Err(SuperblockError::Truncated {
            expected: SUPERBLOCK_LEN as u64,
            actual: file_len,
        });
    }
    let block_size = read_u32(head, 12);
    let block_log = read_u16(head, 22);
    let major = read_u16(head, 28);
    let bytes_used = read_u64(head, 40);
    if major != 4 {
        return Err(SuperblockError::Unsupported {
            detail: format!("version {major}, the kernel mounts only version 4"),
        });
    }
    if !block_size.is_power_of_two()
        || u32::from(block_log) >= 32
        || 1u32 << block_log != block_size
    {
        return Err(SuperblockError::Unsupported {
            detail: format!("block size {block_size} does not match block_log {block_log}"),
        });
    }
    if bytes_used > file_len || bytes_used < SUPERBLOCK_LEN as u64 {
        return Err(SuperblockError::Truncated {
            expected: bytes_used.max(SUPERBLOCK_LEN as u64),
            actual: file_len,
        });
    }
    Ok(())
}

fn read_u16(head: &[u8], at: usize) -> u16 {
    let mut raw = [0u8; 2];
    if let Some(src) = head.get(at..at + 2) {
        raw.copy_from_slice(src);
    }
    u16::from_le_bytes(raw)
}

fn read_u32(head: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    if let Some(src) = head.get(at..at + 4) {
        raw.copy_from_slice(src);
    }
    u32::from_le_bytes(raw)
}

fn read_u64(head: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    if let Some(src) = head.get(at..at + 8) {
        raw.copy_from_slice(src);
    }
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid superblock: 128 KiB blocks, 4096 bytes used.
    fn superblock(bytes_used: u64) -> Vec<u8> {
        let mut sb = vec![0u8; SUPERBLOCK_LEN];
        sb[..4].copy_from_slice(SQUASHFS_MAGIC);
        sb[12..16].copy_from_slice(&(1u32 << 17).to_le_bytes());
        sb[22..24].copy_from_slice(&17u16.to_le_bytes());
        sb[28..30].copy_from_slice(&4u16.to_le_bytes());
        sb[40..48].copy_from_slice(&bytes_used.to_le_bytes());
        sb
    }

    #[test]
    fn accepts_complete_image() {
        assert_eq!(judge_superblock(&superblock(4000), 4096), Ok(()));
    }

    #[test]
    fn rejects_truncated_image() {
        let err = judge_superblock(&superblock(8192), 4096).unwrap_err();
        assert_eq!(
            err,
            SuperblockError::Truncated {
                expected: 8192,
                actual: 4096
            }
        );
        assert!(err
            .to_string()
            .contains("superblock says 8192 bytes, the file has 4096"));
    }

    #[test]
    fn rejects_short_head_with_magic_as_truncated() {
        let err = judge_superblock(b"hsqs\0\0", 6).unwrap_err();
        assert_eq!(
            err,
            SuperblockError::Truncated {
                expected: 96,
                actual: 6
            }
        );
    }

    #[test]
    fn rejects_bad_magic_and_short_garbage() {
        let err = judge_superblock(b"\x7fELF and more", 13).unwrap_err();
        assert_eq!(
            err,
            SuperblockError::BadMagic {
                found: b"\x7fELF".to_vec()
            }
        );
        assert!(err.to_string().contains("expected the magic \"hsqs\""));
        let err = judge_superblock(b"hx", 2).unwrap_err();
        assert_eq!(
            err,
            SuperblockError::BadMagic {
                found: b"hx".to_vec()
            }
        );
    }

    #[test]
    fn rejects_wrong_version_and_block_size() {
        let mut sb = superblock(4000);
        sb[28..30].copy_from_slice(&3u16.to_le_bytes());
        assert!(judge_superblock(&sb, 4096)
            .unwrap_err()
            .to_string()
            .contains("version 3"));
        let mut sb = superblock(4000);
        sb[22..24].copy_from_slice(&12u16.to_le_bytes());
        assert!(judge_superblock(&sb, 4096)
            .unwrap_err()
            .to_string()
            .contains("block_log 12"));
    }

    #[test]
    fn empty_is_its_own_error() {
        assert_eq!(judge_superblock(b"", 0), Err(SuperblockError::Empty));
    }
}
