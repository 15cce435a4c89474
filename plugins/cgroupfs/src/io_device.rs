//! Block devices that `io.max` limits apply to.
//!
//! Owns the `MAJ:MIN` newtype and the default device list: every whole disk in
//! `/sys/block` except loop, ram and zram devices (throttling those is
//! meaningless, and loop devices come and go with uenv mounts). Must never
//! write to the kernel.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// Where whole-disk block devices are listed.
pub const SYS_BLOCK: &str = "/sys/block";

/// Name prefixes of virtual block devices that never get an `io.max` line.
const SKIPPED_PREFIXES: [&str; 3] = ["loop", "ram", "zram"];

/// A block device number, written `MAJ:MIN` as `io.max` wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct IoDevice {
    major: u32,
    minor: u32,
}

impl IoDevice {
    /// A device from its numbers.
    #[must_use]
    pub fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Parse `MAJ:MIN` (surrounding whitespace, such as the newline of a
    /// `/sys/block/*/dev` file, is ignored).
    ///
    /// # Errors
    ///
    /// A message naming the bad text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let numbers = trimmed.split_once(':').and_then(|(major, minor)| {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            (digits(major) && digits(minor))
                .then(|| Some(Self::new(major.parse().ok()?, minor.parse().ok()?)))
                .flatten()
        });
        numbers.ok_or_else(|| {
            format!("{trimmed:?} is not a block device number (expected MAJ:MIN, e.g. \"259:0\")")
        })
    }
}

impl TryFrom<String> for IoDevice {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl fmt::Display for IoDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// The whole disks listed in `sys_block` (normally [`SYS_BLOCK`]), minus loop,
/// ram and zram, sorted.
///
/// # Errors
///
/// A message naming the directory or `dev` file that could not be read.
pub fn detect(sys_block: &Path) -> Result<Vec<IoDevice>, String> {
    let entries = std::fs::read_dir(sys_block).map_err(|err| {
        format!(
            "listing {}: {err}; set the `io_devices` option to the MAJ:MIN of your disks",
            sys_block.display()
        )
    })?;
    let mut devices = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| format!("listing {}: {err}", sys_block.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if SKIPPED_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            continue;
        }
        let dev_file = entry.path().join("dev");
        let text = std::fs::read_to_string(&dev_file)
            .map_err(|err| format!("reading {}: {err}", dev_file.display()))?;
        devices
            .push(IoDevice::parse(&text).map_err(|why| format!("{}: {why}", dev_file.display()))?);
    }
    devices.sort_unstable();
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_maj_min() {
        let device = IoDevice::parse("259:0\n").unwrap();
        assert_eq!(device, IoDevice::new(259, 0));
        assert_eq!(device.to_string(), "259:0");
        for bad in ["", "8", "8:", ":0", "a:b", "8:0:1", "-1:0", "99999999999:0"] {
            let err = IoDevice::parse(bad).unwrap_err();
            assert!(
                err.contains("is not a block device number"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn detection_skips_loop_ram_and_zram() {
        let dir = tempfile::tempdir().unwrap();
        for (name, dev) in [
            ("vda", "254:0"),
            ("nvme0n1", "259:0"),
            ("loop0", "7:0"),
            ("ram0", "1:0"),
            ("zram0", "253:0"),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("dev"), format!("{dev}\n")).unwrap();
        }
        assert_eq!(
            detect(dir.path()).unwrap(),
            vec![IoDevice::new(254, 0), IoDevice::new(259, 0)]
        );
    }

    #[test]
    fn detection_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sda")).unwrap();
        let err = detect(dir.path()).unwrap_err();
        assert!(err.contains("sda/dev"), "{err}");
        std::fs::write(dir.path().join("sda").join("dev"), "garbage").unwrap();
        let err = detect(dir.path()).unwrap_err();
        assert!(
            err.contains("\"garbage\" is not a block device number"),
            "{err}"
        );
        let err = detect(&dir.path().join("missing")).unwrap_err();
        assert!(err.contains("set the `io_devices` option"), "{err}");
    }
}
