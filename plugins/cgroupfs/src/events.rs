//! `cgroup.events`: parsing, and waiting for a cgroup to empty.
//!
//! Owns the wait for `populated 0`: `poll` on `cgroup.events`, which the
//! kernel wakes when `populated` changes, bounded by the remaining timeout —
//! never a fixed sleep. Must never signal processes.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nodeinit_sys::Deadline;

use crate::control_file::{self, ControlFileError};
use crate::exit_watch::ExitWatch;

/// The fields of `cgroup.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupEvents {
    /// Some process lives in this cgroup or below.
    pub populated: bool,
    /// The cgroup is frozen (absent before Linux 5.2).
    pub frozen: Option<bool>,
}

/// Parse the text of `cgroup.events` (`populated 0|1`, `frozen 0|1`, one per line).
///
/// # Errors
///
/// A message when `populated` is missing or a known key has a value other than 0/1.
pub fn parse(text: &str) -> Result<CgroupEvents, String> {
    let mut populated = None;
    let mut frozen = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            return Err(format!("malformed line {line:?} (expected \"key value\")"));
        };
        let flag = match value.trim() {
            "0" => false,
            "1" => true,
            other => return Err(format!("{key} has value {other:?}, expected 0 or 1")),
        };
        match key {
            "populated" => populated = Some(flag),
            "frozen" => frozen = Some(flag),
            // Later kernels may add keys; they are not ours to judge.
            _ => {}
        }
    }
    let populated = populated.ok_or_else(|| "no \"populated\" line".to_owned())?;
    Ok(CgroupEvents { populated, frozen })
}

/// Why `cgroup.events` of a cgroup could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The file could not be read (a missing cgroup shows as `NotFound`).
    #[error(transparent)]
    Read(#[from] ControlFileError),
    /// The file did not parse.
    #[error("parsing {path}: {reason}")]
    Malformed {
        /// The `cgroup.events` file.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

/// Read and parse `<cgroup_dir>/cgroup.events`.
///
/// # Errors
///
/// [`EventsError`] naming the file.
pub fn read(cgroup_dir: &Path) -> Result<CgroupEvents, EventsError> {
    let path = cgroup_dir.join("cgroup.events");
    let text = control_file::read(&path)?;
    parse(&text).map_err(|reason| EventsError::Malformed {
        path: path.display().to_string(),
        reason,
    })
}

/// How a wait for an empty cgroup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// `populated 0`.
    Emptied,
    /// The cgroup directory went away meanwhile (someone else removed it).
    Vanished,
    /// Still populated when the timeout passed.
    TimedOut,
}

/// Wait until `cgroup_dir` has no process left in its subtree, or `timeout` passes.
///
/// Uses `poll(POLLPRI)` on an open `cgroup.events`: kernfs wakes it when the
/// file's content changes after our last read, so a change between read and
/// poll is never lost. (An inotify instance would work too, but closing one
/// waits for an SRCU grace period — ~8 ms per destroy on a 2-vCPU VM.) The
/// same poll watches pidfds of the processes ([`ExitWatch`]), because the
/// kernel rate-limits `cgroup.events` notifications.
///
/// # Errors
///
/// When poll fails, or `cgroup.events` is unreadable or malformed.
pub fn wait_until_empty(cgroup_dir: &Path, timeout: Duration) -> io::Result<WaitOutcome> {
    let deadline = Instant::now() + timeout;
    let events_path = cgroup_dir.join("cgroup.events");
    let file = match File::open(&events_path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(WaitOutcome::Vanished),
        Err(err) => {
            return Err(io::Error::new(
                err.kind(),
                format!("opening {}: {err}", events_path.display()),
            ))
        }
    };
    let mut exits = ExitWatch::of_subtree(cgroup_dir);
    let mut buffer = [0_u8; 512];
    loop {
        // Each read re-arms the poll: kernfs compares against the last read.
        let length = match file.read_at(&mut buffer, 0) {
            Ok(length) => length,
            Err(err) if err.raw_os_error() == Some(Errno::ENODEV as i32) => {
                return Ok(WaitOutcome::Vanished)
            }
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("reading {}: {err}", events_path.display()),
                ))
            }
        };
        let text = String::from_utf8_lossy(buffer.get(..length).unwrap_or_default());
        let events = parse(&text).map_err(|reason| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("parsing {}: {reason}", events_path.display()),
            )
        })?;
        if !events.populated {
            return Ok(WaitOutcome::Emptied);
        }
        let deadline = Deadline::at(deadline);
        if deadline.has_passed() {
            return Ok(WaitOutcome::TimedOut);
        }
        // The one rounding rule: up, so a sub-millisecond remainder still
        // blocks instead of spinning.
        let poll_timeout =
            PollTimeout::try_from(deadline.poll_timeout_ms()).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
        fds.extend(
            exits
                .pidfds()
                .iter()
                .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, poll_timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                return Err(io::Error::other(format!(
                    "poll on {}: {errno}",
                    events_path.display()
                )))
            }
        }
        let exited: Vec<usize> = fds
            .iter()
            .skip(1)
            .enumerate()
            .filter(|(_, fd)| fd.revents().is_some_and(|revents| !revents.is_empty()))
            .map(|(index, _)| index)
            .collect();
        drop(fds);
        exits.forget(&exited);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_populated_and_frozen() {
        assert_eq!(
            parse("populated 1\nfrozen 0\n").unwrap(),
            CgroupEvents {
                populated: true,
                frozen: Some(false)
            }
        );
        assert_eq!(
            parse("populated 0\n").unwrap(),
            CgroupEvents {
                populated: false,
                frozen: None
            }
        );
        assert_eq!(
            parse("populated 0\nfrozen 1\nfuture 0\n").unwrap(),
            CgroupEvents {
                populated: false,
                frozen: Some(true)
            }
        );
    }

    #[test]
    fn malformed_events_are_explained() {
        assert_eq!(parse("frozen 0\n").unwrap_err(), "no \"populated\" line");
        assert_eq!(
            parse("populated 2\n").unwrap_err(),
            "populated has value \"2\", expected 0 or 1"
        );
        assert_eq!(
            parse("populated\n").unwrap_err(),
            "malformed line \"populated\" (expected \"key value\")"
        );
    }

    #[test]
    fn read_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.events"), "populated x\n").unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cgroup.events"), "{err}");
        assert!(err.contains("expected 0 or 1"), "{err}");
    }

    #[test]
    fn wait_returns_at_once_when_empty_or_gone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        assert_eq!(
            wait_until_empty(dir.path(), Duration::from_secs(60)).unwrap(),
            WaitOutcome::Emptied
        );
        let gone = dir.path().join("gone");
        assert_eq!(
            wait_until_empty(&gone, Duration::from_secs(60)).unwrap(),
            WaitOutcome::Vanished
        );
    }

    #[test]
    fn wait_times_out_while_populated() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.events"), "populated 1\n").unwrap();
        assert_eq!(
            wait_until_empty(dir.path(), Duration::ZERO).unwrap(),
            WaitOutcome::TimedOut
        );
    }
}
