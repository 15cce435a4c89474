//! Loading the modules the initramfs builder packed.
//!
//! Owns `finit_module` of each entry of `/lib/modules/<release>/modules.load`
//! (dependencies first, as `mkinitramfs.sh --module` wrote it), skipping
//! modules already present in `/sys/module`. nodeinit may already have loaded
//! them; the agent does it only so its checks of the virtio disk, loop devices
//! and squashfs never depend on that. Must never unload anything.

use std::ffi::CString;
use std::fs::File;
use std::path::Path;

use nix::kmod::{finit_module, ModuleInitFlags};

/// Loads every module of `modules.load` not loaded yet; returns the names loaded.
///
/// # Errors
/// Names the module file and the kernel's errno when a load fails.
pub fn load_packed_modules() -> Result<Vec<String>, String> {
    let release = nix::sys::utsname::uname()
        .map_err(|e| format!("uname failed: {e}"))?
        .release()
        .to_string_lossy()
        .into_owned();
    let base = Path::new("/lib/modules").join(&release);
    let list_path = base.join("modules.load");
    let list = match std::fs::read_to_string(&list_path) {
        Ok(list) => list,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", list_path.display())),
    };
    let mut loaded = Vec::new();
    for relative in list.lines().filter(|l| !l.trim().is_empty()) {
        let file_name = Path::new(relative)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(relative);
        let name = file_name
            .split(".ko")
            .next()
            .unwrap_or(file_name)
            .replace('-', "_");
        if Path::new("/sys/module")
            .join(&name)
            .join("initstate")
            .exists()
        {
            continue;
        }
        let path = base.join(relative);
        let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match finit_module(&file, &CString::default(), ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => loaded.push(name),
            Err(e) => return Err(format!("finit_module {} failed: {e}", path.display())),
        }
    }
    Ok(loaded)
}
