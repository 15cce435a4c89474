//! nodeinit's keeper/worker split as the agent sees it: PID 1 maps no
//! plugin, the worker (`nodeinit-worker`) does; and a worker killed with
//! SIGSEGV is restarted by PID 1 and the live allocation survives it (same
//! namespaces for the same id, the uenv readable through the old FDs, the
//! squashfs references unchanged).
//!
//! Owns finding the worker and killing it. Must never touch PID 1. (Finding
//! the worker is the same `/proc` search as the sandbox demo agent's in
//! `host/src/demo.rs`: this binary plays an outside agent and does not link
//! the nodeinit library, so it keeps its own copy.)

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nodeinit_handoff::{GrantedNamespaces, HandoffClient};

use crate::namespaces;

/// The squashfs backend's record of which allocation holds which image.
const MOUNT_STATE: &str = "/run/nodeinit/squashfs-mounts.json";

/// The pid of the running worker: its name (`comm`) is `nodeinit-worker`
/// (forked or re-executed alike; its command line may be the keeper's) and
/// it is in our PID namespace (a namespace holder is PID 1 of its own).
pub fn worker_pid() -> Option<i32> {
    let own_ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read(e.path().join("comm")).ok()?;
        let is_worker = comm == b"nodeinit-worker\n";
        let same_ns = std::fs::read_link(e.path().join("ns/pid")).ok()? == own_ns;
        (is_worker && same_ns).then_some(pid)
    })
}

fn plugin_mappings(pid: &str) -> Result<usize, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("cannot read /proc/{pid}/maps: {e}"))?;
    Ok(maps.lines().filter(|l| l.contains("libnodeinit_")).count())
}

/// PID 1 maps no `libnodeinit_*.so`; the worker does.
pub fn pid1_maps_no_plugin() -> Result<String, String> {
    let in_pid1 = plugin_mappings("1")?;
    let worker = worker_pid().ok_or("no nodeinit-worker process")?;
    let in_worker = plugin_mappings(&worker.to_string())?;
    match (in_pid1, in_worker) {
        (0, n) if n > 0 => Ok(format!(
            "/proc/1/maps has no libnodeinit_*.so; worker {worker} maps {n} segments of them"
        )),
        (p, w) => Err(format!(
            "/proc/1/maps has {p} plugin mappings, worker {worker} has {w}"
        )),
    }
}

fn ns_inodes(granted: &GrantedNamespaces) -> Result<Vec<u64>, String> {
    granted
        .fds
        .iter()
        .map(|fd| {
            nix::sys::stat::fstat(fd.as_raw_fd())
                .map(|s| s.st_ino)
                .map_err(|e| format!("fstat of a namespace FD: {e}"))
        })
        .collect()
}

/// Block until `pid` has exited (its pidfd turns readable).
fn wait_gone(pid: i32) -> Result<(), String> {
    // SAFETY: pidfd_open takes a pid and flags; returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Ok(());
    }
    let fd = i32::try_from(fd).map_err(|_| "pidfd out of range".to_owned())?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(30_000u16)) {
        Ok(0) => Err(format!("worker {pid} still alive 30 s after SIGSEGV")),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("poll on the worker's pidfd: {e}")),
    }
}

/// Kill the worker with SIGSEGV while `granted` (allocation `id`) is live,
/// ask for `id` again while no worker serves, and compare.
pub fn survives_worker_restart(
    client: &HandoffClient,
    id: &str,
    granted: &GrantedNamespaces,
) -> Result<String, String> {
    let before = ns_inodes(granted)?;
    let mounts_before = std::fs::read_to_string(MOUNT_STATE).unwrap_or_default();
    let worker = worker_pid().ok_or("no nodeinit-worker process")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::Signal::SIGSEGV,
    )
    .map_err(|e| format!("kill -SEGV {worker}: {e}"))?;
    wait_gone(worker)?;
    // No worker serves now: this request waits in PID 1's listen backlog.
    let again = namespaces::request(client, id)
        .map_err(|e| format!("request during the worker restart: {e}"))?;
    let after = ns_inodes(&again)?;
    if before != after {
        return Err(format!(
            "namespaces before the restart {before:?}, after {after:?}"
        ));
    }
    let new_worker = worker_pid().ok_or("no worker after the restart")?;
    if new_worker == worker {
        return Err(format!("worker {worker} was not replaced"));
    }
    namespaces::uenv_inside(granted).map_err(|e| format!("old FDs after the restart: {e}"))?;
    let mounts_after = std::fs::read_to_string(MOUNT_STATE).unwrap_or_default();
    if mounts_before != mounts_after {
        return Err(format!(
            "squashfs references changed: {mounts_before:?} -> {mounts_after:?}"
        ));
    }
    drop(again);
    Ok(format!(
        "worker {worker} killed by SIGSEGV, worker {new_worker} answered the request sent meanwhile with the same namespaces {after:?}; uenv readable through the old FDs; mount references unchanged"
    ))
}
