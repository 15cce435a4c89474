//! Log lines to stderr that never block the thread that logs.
//!
//! Owns this process's writes of log lines to descriptor 2. On a node that
//! is `/dev/console`, often a 115200-baud serial line (about 11 KB/s): once
//! the tty's buffer is full a blocking `write(2)` waits for the line to
//! drain, so a worker that logs four lines per allocation would serve at
//! the baud rate, and an event loop that logs a client's invalid message
//! would stall every client behind the console.
//!
//! In [`never_block`] mode (the worker's), a line is written at once with
//! a non-blocking write on a description of its own (`/proc/self/fd/2`
//! opened anew, so the keeper's and the agent's descriptor keep their
//! blocking mode), or, when the console is behind, queued (at most
//! [`QUEUE_BYTES`]) for one flusher thread that writes as fast as the
//! console takes it. A line that does not fit is dropped whole and
//! counted; the count reaches the console as `nodeinit: N log lines
//! dropped …` ahead of the next line that fits. Before the mode is set
//! (the keeper, PID 1, always) lines are written blocking, as before: a
//! PID 1's last words must not be dropped.
//!
//! It must never log itself (it runs inside the subscriber), nor hold its
//! lock across a write that can block.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{Mode, SFlag};

/// Bytes queued at most while the console is behind (about 6 s of a
/// 115200-baud line); lines beyond are dropped.
pub const QUEUE_BYTES: usize = 64 * 1024;

const STDERR: std::os::fd::RawFd = 2;

/// The [`tracing_subscriber::fmt::MakeWriter`] of nodeinit's subscriber:
/// each event is one line, handed to descriptor 2's queue.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsoleOutput;

/// One event's writer (the subscriber writes the formatted line at once).
#[derive(Debug)]
pub struct ConsoleLine;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ConsoleOutput {
    type Writer = ConsoleLine;

    fn make_writer(&'a self) -> Self::Writer {
        ConsoleLine
    }
}

impl io::Write for ConsoleLine {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        CONSOLE.write_line(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where lines go once they must not block.
#[derive(Clone)]
enum Target {
    /// A description of its own, `O_NONBLOCK` (a tty or a pipe).
    Reopened(Arc<OwnedFd>),
    /// A socket: `send(MSG_DONTWAIT)` on descriptor 2 itself.
    Socket,
}

impl Target {
    fn write(&self, bytes: &[u8]) -> Result<usize, Errno> {
        match self {
            Self::Reopened(fd) => nix::unistd::write(fd, bytes),
            Self::Socket => nix::sys::socket::send(
                STDERR,
                bytes,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            ),
        }
    }

    /// Until it takes more (at most a second: a console that never
    /// reports `POLLOUT` is simply tried again).
    fn wait_writable(&self) {
        let stderr = std::io::stderr();
        let fd: BorrowedFd<'_> = match self {
            Self::Reopened(fd) => fd.as_fd(),
            Self::Socket => stderr.as_fd(),
        };
        let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(1000u16));
    }
}

struct State {
    /// The process that set the target: a forked child writes blocking
    /// (its copy of the flusher does not run) until it sets one itself.
    owner: u32,
    target: Option<Target>,
    pending: VecDeque<u8>,
    dropped: u64,
    flusher: bool,
}

/// The queue of one output (module docs); [`CONSOLE`] is stderr's.
pub(crate) struct LineQueue {
    state: Mutex<State>,
    /// Lines were queued (for the flusher), or the queue emptied (for
    /// [`LineQueue::flush`]).
    changed: Condvar,
}

/// Descriptor 2's queue.
static CONSOLE: LineQueue = LineQueue::new();

/// From now on, in this process, log lines never block (module docs).
/// When descriptor 2 is a regular file or a device other than a tty,
/// writes do not wait anyway and nothing changes.
///
/// # Errors
///
/// Descriptor 2 cannot be examined or reopened (e.g. `/proc` is not
/// mounted); lines are then written blocking, as before.
pub fn never_block() -> io::Result<()> {
    if let Some(target) = stderr_target()? {
        CONSOLE.set_target(target);
    }
    Ok(())
}

/// Waits, at most `limit`, until every queued line is written: before the
/// process exits.
pub fn flush(limit: Duration) {
    CONSOLE.flush(limit);
}

fn stderr_target() -> io::Result<Option<Target>> {
    let stat = nix::sys::stat::fstat(STDERR)
        .map_err(|e| io::Error::other(format!("fstat of stderr: {e}")))?;
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFSOCK {
        return Ok(Some(Target::Socket));
    }
    if kind != SFlag::S_IFIFO && !nix::unistd::isatty(STDERR).unwrap_or(false) {
        // A file, /dev/null, /dev/kmsg: a write never waits for a reader.
        return Ok(None);
    }
    let flags = OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open("/proc/self/fd/2", flags, Mode::empty())
        .map_err(|e| io::Error::other(format!("reopening stderr (/proc/self/fd/2): {e}")))?;
    // SAFETY: open(2) just returned this descriptor; nothing else owns it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    Ok(Some(Target::Reopened(Arc::new(fd))))
}

/// Write `bytes` to stderr, blocking: before a target is set, or when no
/// flusher can run.
fn write_blocking(bytes: &[u8]) {
    let _ = io::Write::write_all(&mut std::io::stderr().lock(), bytes);
}

impl LineQueue {
    const fn new() -> Self {
        Self {
            state: Mutex::new(State {
                owner: 0,
                target: None,
                pending: VecDeque::new(),
                dropped: 0,
                flusher: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This process's target, if it set one.
    fn target(state: &State) -> Option<&Target> {
        state
            .target
            .as_ref()
            .filter(|_| state.owner == std::process::id())
    }

    fn set_target(&self, target: Target) {
        let mut state = self.state();
        if Self::target(&state).is_some() {
            return;
        }
        *state = State {
            owner: std::process::id(),
            target: Some(target),
            pending: VecDeque::new(),
            dropped: 0,
            flusher: false,
        };
    }

    /// One formatted line (module docs).
    fn write_line(&'static self, line: &[u8]) {
        let mut state = self.state();
        let Some(target) = Self::target(&state).cloned() else {
            drop(state);
            return write_blocking(line);
        };
        if state.pending.is_empty() && state.dropped == 0 {
            match target.write(line) {
                Ok(n) if n == line.len() => return,
                Ok(n) => state.pending.extend(&line[n..]),
                Err(Errno::EAGAIN | Errno::EINTR) => state.pending.extend(line),
                // The console is gone (EIO, EPIPE): nothing to wait for.
                Err(_) => return,
            }
        } else if !Self::accept(&mut state, line) {
            return;
        }
        if !state.flusher {
            state.flusher = std::thread::Builder::new()
                .name("nodeinit-console".into())
                .spawn(move || self.run_flusher())
                .is_ok();
            if !state.flusher {
                let pending: Vec<u8> = state.pending.drain(..).collect();
                drop(state);
                return write_blocking(&pending);
            }
        }
        self.changed.notify_all();
    }

    /// Queue `line` behind the others, after the notice of the lines
    /// dropped before it; false when it does not fit (then it is counted).
    fn accept(state: &mut State, line: &[u8]) -> bool {
        let notice = dropped_notice(state.dropped);
        if state.pending.len() + notice.len() + line.len() > QUEUE_BYTES {
            state.dropped += 1;
            return false;
        }
        state.pending.extend(notice.as_bytes());
        state.pending.extend(line);
        state.dropped = 0;
        true
    }

    /// The flusher: the queue's head, as fast as the target takes it.
    fn run_flusher(&self) {
        let mut state = self.state();
        loop {
            let Some(target) = Self::target(&state).cloned() else {
                return;
            };
            if state.pending.is_empty() && state.dropped > 0 {
                let notice = dropped_notice(std::mem::take(&mut state.dropped));
                state.pending.extend(notice.as_bytes());
            }
            if state.pending.is_empty() {
                self.changed.notify_all();
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let head = state.pending.as_slices().0.to_vec();
            match target.write(&head) {
                Ok(n) => drop(state.pending.drain(..n)),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    drop(state);
                    target.wait_writable();
                    state = self.state();
                }
                // The console is gone: what is queued can never be written.
                Err(_) => state.pending.clear(),
            }
        }
    }

    fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut state = self.state();
        while Self::target(&state).is_some() && state.flusher && !state.pending.is_empty() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

fn dropped_notice(dropped: u64) -> String {
    if dropped == 0 {
        return String::new();
    }
    format!("nodeinit: {dropped} log lines dropped: the console did not keep up\n")
}

#[cfg(test)]
mod tests;
