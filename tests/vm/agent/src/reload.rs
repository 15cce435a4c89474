//! A live plugin upgrade on a real node: with an allocation live, the
//! plugin file is replaced by a rebuilt one whose version differs and
//! `nodeinit reload` (the binary is `/init`) must hand over to it —
//! `nodeinit status` shows the new version, the allocation answers with the
//! same namespaces; then a truncated file: the reload is refused and
//! nothing changes.
//!
//! Owns swapping the plugin file. Must never touch PID 1 itself.

use std::os::fd::AsRawFd;
use std::process::Command;

use crate::namespaces;

/// The plugin file the config names.
pub const INSTALLED: &str = "/usr/lib/nodeinit/plugins/libnodeinit_faulty.so";
/// The rebuilt plugin (`FAULTY_VERSION=2.0.0-reload`).
pub const NEW: &str = "/images/faulty-v2.so";
/// A truncated copy.
pub const BROKEN: &str = "/images/faulty-broken.so";
/// The version string of [`NEW`].
pub const NEW_VERSION: &str = "2.0.0-reload";

fn nodeinit(arg: &str) -> Result<(bool, String), String> {
    let out = Command::new("/init")
        .arg(arg)
        .output()
        .map_err(|e| format!("cannot run /init {arg}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn install(from: &str) -> Result<(), String> {
    let tmp = format!("{INSTALLED}.new");
    std::fs::copy(from, &tmp).map_err(|e| format!("copy {from} to {tmp}: {e}"))?;
    std::fs::rename(&tmp, INSTALLED).map_err(|e| format!("rename {tmp} onto {INSTALLED}: {e}"))
}

fn faulty_line(status: &str) -> String {
    status
        .lines()
        .find(|l| l.contains(INSTALLED))
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn worker_line(status: &str) -> String {
    status
        .lines()
        .next()
        .unwrap_or_default()
        .split("serving")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The whole check.
pub fn upgrade() -> Result<String, String> {
    let client = namespaces::client();
    let granted = namespaces::request(&client, "vmtest-reload-1")?;
    let inodes = |g: &nodeinit_handoff::GrantedNamespaces| -> Vec<u64> {
        g.fds
            .iter()
            .filter_map(|fd| nix::sys::stat::fstat(fd.as_raw_fd()).ok().map(|s| s.st_ino))
            .collect()
    };
    let (_, before) = nodeinit("status")?;
    if faulty_line(&before) != "readiness faulty 0.1.0" {
        return Err(format!("status before the reload: {before}"));
    }
    install(NEW)?;
    let (ok, reloaded) = nodeinit("reload")?;
    if !ok {
        return Err(format!(
            "nodeinit reload to the new version failed: {reloaded}"
        ));
    }
    let (_, after) = nodeinit("status")?;
    let line = faulty_line(&after);
    if !line.contains(NEW_VERSION) {
        return Err(format!("status after the reload shows {line:?}: {after}"));
    }
    let again = namespaces::request(&client, "vmtest-reload-1")?;
    if inodes(&granted) != inodes(&again) {
        return Err("the new worker answered with other namespaces".into());
    }
    namespaces::uenv_inside(&granted).map_err(|e| format!("old FDs after the reload: {e}"))?;
    drop(again);
    install(BROKEN)?;
    let (ok, refused) = nodeinit("reload")?;
    if ok || !refused.contains("truncated or corrupt") {
        return Err(format!("a truncated plugin was not refused: {refused}"));
    }
    let (_, unchanged) = nodeinit("status")?;
    if faulty_line(&unchanged) != line || worker_line(&unchanged) != worker_line(&after) {
        return Err(format!(
            "the refused reload changed the worker: {after} -> {unchanged}"
        ));
    }
    namespaces::release(&client, granted)?;
    Ok(format!(
        "status showed {:?}, then {line:?} after nodeinit reload; the allocation kept its namespaces; a truncated plugin was refused and nothing changed",
        faulty_line(&before)
    ))
}
