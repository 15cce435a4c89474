//! The modules the initramfs builder packed, as nodeinit should have loaded them.
//!
//! Owns the check that every entry of `/lib/modules/<release>/modules.load`
//! (written by `mkinitramfs.sh --module`) is live in `/sys/module` when the
//! agent starts: nodeinit's `kernel_modules` phase loads them as PID 1,
//! before anything needs the virtio disk, loop devices or squashfs.
//! Must never load or unload a module itself (that would hide a nodeinit bug).

use std::path::Path;

/// Every module of `modules.load` is loaded; returns their names.
///
/// # Errors
/// Names the list file when it cannot be read or is empty, and every module
/// that is not loaded.
pub fn packed_modules_loaded() -> Result<String, String> {
    let release = nix::sys::utsname::uname()
        .map_err(|e| format!("uname failed: {e}"))?
        .release()
        .to_string_lossy()
        .into_owned();
    let list_path = Path::new("/lib/modules")
        .join(&release)
        .join("modules.load");
    let list = std::fs::read_to_string(&list_path)
        .map_err(|e| format!("cannot read {}: {e}", list_path.display()))?;
    let names: Vec<String> = list
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(module_name)
        .collect();
    if names.is_empty() {
        return Err(format!("{} lists no module", list_path.display()));
    }
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !Path::new("/sys/module").join(name).exists())
        .collect();
    if missing.is_empty() {
        Ok(format!("loaded by nodeinit: {}", names.join(" ")))
    } else {
        Err(format!(
            "not in /sys/module: {missing:?} (listed in {})",
            list_path.display()
        ))
    }
}

/// `kernel/drivers/block/virtio_blk.ko` → `virtio_blk` (dashes become
/// underscores, as in `/sys/module`).
fn module_name(relative: &str) -> String {
    let file_name = Path::new(relative)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(relative);
    file_name
        .split(".ko")
        .next()
        .unwrap_or(file_name)
        .replace('-', "_")
}
