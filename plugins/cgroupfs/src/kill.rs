//! Killing every process of a cgroup subtree, and describing what survived.
//!
//! Owns the kill strategy: `1` to `cgroup.kill` (Linux 5.14+, kills the whole
//! subtree atomically, even processes forking meanwhile); on older kernels,
//! SIGKILL each pid of `cgroup.procs` in the subtree, repeated until a pass
//! finds no new pid. No grace period (PS3). Must never wait and never remove
//! directories: `events` waits, `scope` removes.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::control_file::{self, ControlFileError};

/// How the processes were killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMethod {
    /// One write to `cgroup.kill`.
    CgroupKill,
    /// SIGKILL to each pid (the kernel has no `cgroup.kill`).
    SignalEachPid,
}

/// Kill every process in `cgroup_dir` and below.
///
/// # Errors
///
/// When `cgroup.kill` exists but the write fails, or the fallback cannot read
/// `cgroup.procs` or signal a pid for a reason other than it being gone.
pub fn kill_all(cgroup_dir: &Path) -> Result<KillMethod, String> {
    match control_file::write(&cgroup_dir.join("cgroup.kill"), "1") {
        Ok(()) => Ok(KillMethod::CgroupKill),
        Err(err) if err.kind() == ErrorKind::NotFound && cgroup_dir.is_dir() => {
            tracing::debug!(cgroup = %cgroup_dir.display(), "no cgroup.kill (kernel older than 5.14): signalling each pid");
            signal_each_pid(cgroup_dir)?;
            Ok(KillMethod::SignalEachPid)
        }
        Err(err) => Err(err.to_string()),
    }
}

/// SIGKILL every pid listed in `cgroup.procs` of `cgroup_dir` and its
/// descendants, pass after pass, until a pass finds no pid it has not already
/// signalled (a process forking between read and kill is caught next pass).
/// Returns how many pids were signalled.
///
/// # Errors
///
/// When a `cgroup.procs` file cannot be read or `kill` fails with other than `ESRCH`.
pub fn signal_each_pid(cgroup_dir: &Path) -> Result<usize, String> {
    let mut signalled = HashSet::new();
    loop {
        let pids = subtree_pids(cgroup_dir).map_err(|err| err.to_string())?;
        let fresh: Vec<i32> = pids
            .into_iter()
            .filter(|pid| !signalled.contains(pid))
            .collect();
        if fresh.is_empty() {
            return Ok(signalled.len());
        }
        for pid in fresh {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => {
                    return Err(format!(
                        "SIGKILL to pid {pid} in {}: {errno}",
                        cgroup_dir.display()
                    ))
                }
            }
            signalled.insert(pid);
        }
    }
}

/// The pids in `cgroup.procs` of `cgroup_dir` and every cgroup below it.
///
/// # Errors
///
/// When a `cgroup.procs` file or a directory cannot be read (a cgroup removed
/// meanwhile is skipped).
pub fn subtree_pids(cgroup_dir: &Path) -> Result<Vec<i32>, ControlFileError> {
    let mut pids = Vec::new();
    for dir in subtree_dirs(cgroup_dir)? {
        match control_file::read(&dir.join("cgroup.procs")) {
            Ok(text) => pids.extend(parse_procs(&text)),
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(pids)
}

/// `cgroup_dir` and all cgroup directories below it, parents before children.
///
/// # Errors
///
/// When a directory cannot be listed for a reason other than having vanished.
pub fn subtree_dirs(cgroup_dir: &Path) -> Result<Vec<PathBuf>, ControlFileError> {
    let mut dirs = vec![cgroup_dir.to_path_buf()];
    let mut next = 0;
    while let Some(dir) = dirs.get(next).cloned() {
        next += 1;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(source) if source.kind() == ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ControlFileError {
                    operation: "listing".to_owned(),
                    path: dir,
                    source,
                })
            }
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    Ok(dirs)
}

/// Parse `cgroup.procs`: one pid per line. Lines that are not pids are skipped
/// (the kernel writes none; a fixture or a future format must not make us kill
/// the wrong thing).
#[must_use]
pub fn parse_procs(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|line| line.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .collect()
}

/// Describe the processes still in `cgroup_dir`'s subtree: pid, command and
/// state from `/proc/<pid>/stat`, so a D-state (uninterruptible I/O) process
/// is visible as the reason a kill did not complete.
#[must_use]
pub fn describe_survivors(cgroup_dir: &Path) -> String {
    match subtree_pids(cgroup_dir) {
        Ok(pids) if pids.is_empty() => "no pid listed in cgroup.procs any more".to_owned(),
        Ok(pids) => pids
            .iter()
            .map(|&pid| describe_pid(pid))
            .collect::<Vec<_>>()
            .join(", "),
        Err(err) => format!("pids unknown ({err})"),
    }
}

/// `pid 123 (sleep) state D (uninterruptible sleep: ...)`.
#[must_use]
pub fn describe_pid(pid: i32) -> String {
    match procfs::process::Process::new(pid).and_then(|process| process.stat()) {
        Ok(stat) => format!(
            "pid {pid} ({}) state {} ({})",
            stat.comm,
            stat.state,
            state_meaning(stat.state)
        ),
        Err(err) => format!("pid {pid} (state unknown: {err})"),
    }
}

/// What a `/proc/<pid>/stat` state letter means for a kill.
#[must_use]
pub fn state_meaning(state: char) -> &'static str {
    match state {
        'D' => "uninterruptible sleep, usually stuck I/O: it dies when the I/O returns",
        'R' => "running",
        'S' => "sleeping",
        'T' | 't' => "stopped",
        'Z' => "zombie: dead, waiting for its parent to reap it",
        'X' => "dead",
        'I' => "idle kernel thread",
        _ => "unknown state",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_procs() {
        assert_eq!(parse_procs("12\n345\n"), vec![12, 345]);
        assert_eq!(parse_procs(""), Vec::<i32>::new());
        assert_eq!(parse_procs("0\n-1\nx\n7\n"), vec![7]);
    }

    #[test]
    fn subtree_is_walked_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("cgroup.procs"), "1000001\n").unwrap();
        std::fs::write(dir.path().join("a/b/cgroup.procs"), "1000002\n").unwrap();
        let dirs = subtree_dirs(dir.path()).unwrap();
        assert_eq!(
            dirs,
            vec![
                dir.path().to_path_buf(),
                dir.path().join("a"),
                dir.path().join("a/b")
            ]
        );
        assert_eq!(
            subtree_pids(dir.path()).unwrap(),
            vec![1_000_001, 1_000_002]
        );
    }

    #[test]
    fn describes_a_live_process_with_its_state() {
        let me = std::process::id() as i32;
        let text = describe_pid(me);
        assert!(text.starts_with(&format!("pid {me} (")), "{text}");
        assert!(
            text.contains(" state R (running)") || text.contains(" state S (sleeping)"),
            "{text}"
        );
        assert!(describe_pid(i32::MAX).contains("state unknown"));
        assert!(state_meaning('D').contains("uninterruptible"));
    }
}
