//! Persistent holders cloned by a small single-threaded spawner process,
//! not by the multi-threaded server.
//!
//! Why: a holder that must outlive its creator (the unshare backend's
//! holders under nodeinit's keeper) cannot share the creator's memory (a
//! dead worker's address space would stay alive, and a core dump before
//! Linux 5.16 or the OOM killer choosing it would kill every holder sharing
//! it), so it is a fork-style copy-on-write clone. Cloned from the
//! multi-threaded server, every page a server thread writes afterwards
//! took a copy-on-write fault with a TLB shootdown to the other CPUs, and
//! the page tables were copied per holder: 0.41–0.70 × the floor under
//! load. A spawner has one thread, so its copy-on-write faults flush only
//! its own CPU, and it writes almost nothing between two clones.
//!
//! How it starts: forked (`clone` with `CLONE_PARENT`: its parent is the
//! keeper, like the holders') from the worker, lazily, by the first request
//! that needs a persistent holder, and again after it died. Not an exec of
//! an entry point: the unshare backend is a plugin (`.so`) and owns no
//! executable or `main` to re-enter, and the worker's start belongs to the
//! host; and not a fork before the worker makes threads, for the same
//! reason. A fork of a multi-threaded process is safe here because the
//! child never returns to Rust code that allocates or locks: it runs
//! [`spawner_main`] on a stack mapped for it before the fork, makes only
//! async-signal-safe libc syscall wrappers on plain integers and buffers on
//! that stack, and first closes every FD it inherited but its socket (a
//! copied client socket or namespace FD would keep a connection or an
//! allocation alive). It runs no plugin code: it clones holders and nothing
//! else.
//!
//! Lifetime: it exits when its socket's other end closes (the worker died
//! or dropped it), and is killed with its parent, the keeper
//! (`PR_SET_PDEATHSIG`, only then: without `CLONE_PARENT` its "parent" is
//! the worker *thread* that forked it, which may end first). A
//! spawner that dies, or does not answer within [`ANSWER_TIMEOUT_SECS`],
//! fails the request in flight with an error naming it, and the next
//! request starts a new one; an idle spawner found dead is replaced
//! silently (with a warning). There are [`SPAWNERS`] of them, so two
//! allocations' clones (most of a millisecond of kernel time each, for
//! the network namespace) run in parallel; a request takes the longest
//! idle one (FIFO) or waits for whichever comes back first, never for one
//! particular spawner's lock.
//!
//! The handover: right after the clone the spawner sends the holder's pid,
//! its pidfd, the read end of its *ready* pipe and the write end of a
//! *commit* pipe back over `SCM_RIGHTS`; the worker opens the namespaces
//! while the holder starts, then waits for its ready report
//! ([`SpawnedHolder::wait_ready`]: the mount propagation is cut). The
//! holder then waits on the commit pipe, and exits by itself if that pipe
//! closes unwritten — the spawner or the worker died before the holder was
//! recorded — so no holder outlives a failed handover unrecorded.
//! [`HolderCommit::commit`] releases it.
//!
//! Owns the spawner process, its wire format (fixed-size structs on a
//! `SOCK_SEQPACKET` pair) and the code spawner and holder run. Never
//! records holders (the unshare backend does).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Condvar, Mutex, PoisonError};

use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::mount_namespace::Propagation;

/// Spawner processes per worker.
pub const SPAWNERS: usize = 2;
/// How long a spawner may take to answer one request (a holder's clone and
/// its ready report; the holder itself has 10 s of that).
pub const ANSWER_TIMEOUT_SECS: i64 = 15;
/// The spawner's stack (it makes syscalls in a few small frames).
const SPAWNER_STACK_BYTES: usize = 256 * 1024;
/// The stack a holder starts on (its copy of the spawner's mapping).
const HOLDER_STACK_BYTES: usize = 64 * 1024;
/// The spawner's process name (`comm`, at most 15 bytes).
pub const SPAWNER_NAME: &str = "nodeinit-spawn";

/// Where a failed request failed, in the spawner.
#[repr(u32)]
#[derive(Clone, Copy)]
enum Step {
    Done = 0,
    BadRequest = 1,
    Pipe = 2,
    Clone = 3,
}

impl Step {
    fn describe(code: u32) -> &'static str {
        match code {
            1 => "the request was malformed",
            2 => "pipe2 for the new holder",
            3 => "clone",
            _ => "an unknown step",
        }
    }
}

/// A request: clone a holder with `flags`, remount `/` with `remount`
/// (`mount(2)` flags, 0: none) in it first.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Request {
    flags: u64,
    remount: u64,
}

/// The answer; on success it carries the pidfd, the commit pipe's write
/// end and the ready pipe's read end, in that order.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Answer {
    step: u32,
    errno: i32,
    pid: i32,
    _pad: i32,
}

/// A holder cloned by a spawner, not yet released to live on its own.
#[derive(Debug)]
pub struct SpawnedHolder {
    /// Its pid.
    pub pid: Pid,
    /// Its pidfd.
    pub pidfd: OwnedFd,
    /// What releases it.
    pub commit: HolderCommit,
    /// Where it reports ready (`None` once read).
    ready: Option<OwnedFd>,
}

impl SpawnedHolder {
    /// Wait until the holder has cut its mount namespace's propagation and
    /// reported ready. The spawner answers right after the clone, so the
    /// caller can open the namespaces meanwhile; nothing may use the mount
    /// namespace before this returned `Ok`. A second call does nothing.
    ///
    /// # Errors
    ///
    /// The holder's remount failed (with the kernel's reason), it exited,
    /// or it did not report within 10 s; it is killed then.
    pub fn wait_ready(&mut self) -> io::Result<()> {
        let Some(ready) = self.ready.take() else {
            return Ok(());
        };
        let outcome = match super::spawner::wait_ready(ready.as_fd(), self.pidfd.as_fd()) {
            Ok(0) => return Ok(()),
            Ok(errno) => io::Error::other(format!(
                "holder {}: changing the propagation of / in the new mount namespace: {}",
                self.pid,
                nix::errno::Errno::from_raw(errno)
            )),
            Err(e) => io::Error::other(format!("holder {} did not start: {e}", self.pid)),
        };
        let _ = nodeinit_sys::pidfd::kill(self.pidfd.as_fd());
        Err(outcome)
    }
}

/// The write end of a new holder's commit pipe. Until [`Self::commit`] the
/// holder exits as soon as this is dropped: commit once the holder is
/// recorded, so a crash in between leaves no unrecorded holder behind.
#[derive(Debug)]
pub struct HolderCommit {
    pid: Pid,
    fd: Mutex<Option<OwnedFd>>,
}

impl HolderCommit {
    /// Let the holder live on by itself (a second call does nothing).
    ///
    /// # Errors
    ///
    /// The write failing (`EPIPE`: the holder is gone).
    pub fn commit(&self) -> io::Result<()> {
        let Some(fd) = self
            .fd
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Ok(());
        };
        match nix::unistd::write(&fd, &[1u8]) {
            Ok(1) => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "committing holder {}: wrote {n} bytes",
                self.pid
            ))),
            Err(e) => Err(io::Error::other(format!(
                "committing holder {}: {e}",
                self.pid
            ))),
        }
    }
}

/// One live spawner process.
#[derive(Debug)]
struct Spawner {
    pid: i32,
    pidfd: OwnedFd,
    socket: OwnedFd,
}

/// The spawners of this process: the idle ones in FIFO order, and how many
/// exist (idle or serving a request).
struct Pool {
    idle: std::collections::VecDeque<Spawner>,
    pids: Vec<i32>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    idle: std::collections::VecDeque::new(),
    pids: Vec::new(),
});
/// Signalled when a spawner becomes idle or a place for one frees up.
static IDLE: Condvar = Condvar::new();

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pids of the live spawners of this process (diagnostics and tests).
pub fn spawner_pids() -> Vec<i32> {
    pool().pids.clone()
}

/// What a request got from the pool.
enum Lease {
    /// An idle spawner, the longest idle first.
    Idle(Spawner),
    /// Room for a new one: the caller starts it (outside the lock: a fork
    /// of this process takes a while).
    Start,
}

/// A spawner for one request: a new one while there are fewer than
/// [`SPAWNERS`] (so two exist as soon as two requests were made), else the
/// longest idle, else wait until one is given back. Requests never wait on
/// a particular spawner's lock, so one slow clone does not hold up a
/// request another spawner could serve.
fn lease() -> Lease {
    let mut pool = pool();
    loop {
        if pool.pids.len() < SPAWNERS {
            // Reserved; the pid is filled in (or the place freed) by `started`.
            pool.pids.push(0);
            return Lease::Start;
        }
        if let Some(spawner) = pool.idle.pop_front() {
            return Lease::Idle(spawner);
        }
        pool = IDLE.wait(pool).unwrap_or_else(PoisonError::into_inner);
    }
}

/// A reserved place got its spawner (`Some(pid)`) or stays empty.
fn started(pid: Option<i32>) {
    let mut pool = pool();
    if let Some(at) = pool.pids.iter().position(|p| *p == 0) {
        match pid {
            Some(pid) => pool.pids[at] = pid,
            None => {
                pool.pids.remove(at);
                IDLE.notify_one();
            }
        }
    }
}

/// Give a spawner back after a request (`Some`), or drop its place (it
/// died or was killed).
fn give_back(pid: i32, spawner: Option<Spawner>) {
    let mut pool = pool();
    match spawner {
        Some(spawner) => pool.idle.push_back(spawner),
        None => pool.pids.retain(|p| *p != pid),
    }
    IDLE.notify_one();
}

fn start_leased(parent: bool) -> io::Result<Spawner> {
    let spawner = Spawner::start(parent);
    started(spawner.as_ref().ok().map(|s| s.pid));
    spawner
}

/// Clone a holder in new namespaces `flags` through a spawner process, its
/// mount namespace given `propagation` first when set. With
/// `CLONE_PARENT` in `flags`, the spawner and the holder are children of
/// this process's parent (the keeper); without, the spawner is this
/// process's child and the holder the spawner's (and dies with it).
///
/// # Errors
///
/// Starting the spawner, the spawner dying or not answering (named, with
/// its pid; the next call starts a new one), or the step that failed in it
/// with the kernel's reason.
pub fn clone_persistent_holder(
    flags: CloneFlags,
    propagation: Option<Propagation>,
) -> io::Result<SpawnedHolder> {
    let request = Request {
        flags: flags.bits() as u64,
        remount: propagation.map_or(0, super::spawner::propagation_flags) as u64,
    };
    let parent = flags.contains(CloneFlags::CLONE_PARENT);
    let spawner = loop {
        match lease() {
            Lease::Idle(s) if s.alive() => break s,
            Lease::Idle(s) => {
                tracing::warn!(
                    spawner = s.pid,
                    "holder spawner exited while idle; starting a new one"
                );
                let pid = s.pid;
                s.kill();
                give_back(pid, None);
            }
            Lease::Start => break start_leased(parent)?,
        }
    };
    let pid = spawner.pid;
    match spawner.ask(&request) {
        Ok(outcome) => {
            give_back(pid, Some(spawner));
            outcome
        }
        // The spawner itself failed: it is gone (or killed), not put back.
        Err(e) => {
            spawner.kill();
            give_back(pid, None);
            Err(e)
        }
    }
}

impl Spawner {
    /// Fork a spawner (see the module docs for why a fork is safe here).
    fn start(parent: bool) -> io::Result<Self> {
        let mut pair = [0 as RawFd; 2];
        // SAFETY: socketpair writes two FDs into `pair`.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        } != 0
        {
            return Err(os_error("socketpair for a holder spawner"));
        }
        // SAFETY: both FDs were just created and are owned here alone.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        let stacks = Mapping::new(SPAWNER_STACK_BYTES + HOLDER_STACK_BYTES)?;
        let args = SpawnerArgs {
            socket: theirs.as_raw_fd(),
            die_with_parent: parent,
            holder_stack_top: stacks.at(HOLDER_STACK_BYTES),
        };
        let mut pidfd: libc::c_int = -1;
        let mut flags = libc::CLONE_PIDFD | libc::SIGCHLD;
        if parent {
            flags |= libc::CLONE_PARENT;
        }
        // SAFETY: a fork-style clone (no CLONE_VM): the child gets its own
        // copy of this address space, runs `spawner_main` on its copy of
        // `stacks` with its copy of `args`, and never returns into code
        // that allocates or locks (module docs). The kernel writes the
        // pidfd into `pidfd`.
        let pid = unsafe {
            libc::clone(
                spawner_main,
                stacks.at(SPAWNER_STACK_BYTES + HOLDER_STACK_BYTES),
                flags,
                (&raw const args).cast_mut().cast(),
                &raw mut pidfd,
            )
        };
        if pid < 0 {
            return Err(os_error("clone of a holder spawner"));
        }
        // The child has its copies; ours are not needed.
        drop(stacks);
        drop(theirs);
        // SAFETY: CLONE_PIDFD gave us this FD.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let timeout = libc::timeval {
            tv_sec: ANSWER_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: a timeval of the size passed.
        if unsafe {
            libc::setsockopt(
                ours.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        } != 0
        {
            let e = os_error("SO_RCVTIMEO on the holder spawner's socket");
            let spawner = Self {
                pid,
                pidfd,
                socket: ours,
            };
            spawner.kill();
            return Err(e);
        }
        tracing::debug!(spawner = pid, "holder spawner started");
        Ok(Self {
            pid,
            pidfd,
            socket: ours,
        })
    }

    /// Whether it still runs (its pidfd is not readable yet).
    fn alive(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(0)
        )
    }

    /// Kill it and, when it is this process's child (no `CLONE_PARENT`),
    /// reap it; the keeper reaps its own.
    fn kill(self) {
        let _ = nodeinit_sys::pidfd::kill(self.pidfd.as_fd());
        let _ = nodeinit_sys::pidfd::reap(self.pidfd.as_fd());
    }

    /// Send `request`, read the answer. `Err`: the spawner failed (dead,
    /// silent, or it broke the wire format); `Ok(Err)`: it answered that
    /// the clone failed.
    fn ask(&self, request: &Request) -> io::Result<io::Result<SpawnedHolder>> {
        let dead = |what: &str| {
            io::Error::other(format!(
                "the holder spawner (pid {}) {what}; a new one is started for the next request",
                self.pid
            ))
        };
        // SAFETY: `request` is a plain struct of the size passed.
        let sent = unsafe {
            libc::send(
                self.socket.as_raw_fd(),
                (request as *const Request).cast(),
                std::mem::size_of::<Request>(),
                libc::MSG_NOSIGNAL,
            )
        };
        if sent != std::mem::size_of::<Request>() as isize {
            return Err(dead(&format!(
                "cannot be asked ({})",
                io::Error::last_os_error()
            )));
        }
        let mut answer = Answer::default();
        let (n, fds) = loop {
            match recv_with_fds(self.socket.as_fd(), &mut answer) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        }
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EAGAIN) => dead(&format!(
                "did not answer within {ANSWER_TIMEOUT_SECS} s and was killed"
            )),
            // A peer that died with the request unread resets the connection.
            Some(libc::ECONNRESET) => dead("exited before answering (was it killed?)"),
            _ => dead(&format!("could not be read from ({e})")),
        })?;
        if n == 0 {
            return Err(dead("exited before answering (was it killed?)"));
        }
        if n != std::mem::size_of::<Answer>() {
            return Err(dead(&format!("sent a {n}-byte answer")));
        }
        if answer.step != Step::Done as u32 {
            let reason = nix::errno::Errno::from_raw(answer.errno);
            let what = Step::describe(answer.step);
            return Ok(Err(io::Error::other(format!(
                "holder spawner (pid {}): {what}: {reason}",
                self.pid
            ))));
        }
        let mut fds = fds.into_iter();
        match (fds.next(), fds.next(), fds.next(), fds.next()) {
            (Some(pidfd), Some(commit), Some(ready), None) => Ok(Ok(SpawnedHolder {
                pid: Pid::from_raw(answer.pid),
                pidfd,
                commit: HolderCommit {
                    pid: Pid::from_raw(answer.pid),
                    fd: Mutex::new(Some(commit)),
                },
                ready: Some(ready),
            })),
            _ => Err(dead(
                "answered without the holder's pidfd, commit and ready pipes",
            )),
        }
    }
}

/// `recvmsg` of one answer and its FDs (close-on-exec).
fn recv_with_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    answer: &mut Answer,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: (answer as *mut Answer).cast(),
        iov_len: std::mem::size_of::<Answer>(),
    };
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; the pointers set point at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` describes live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control buffer the kernel filled, with libc's
    // CMSG macros; every FD found is new and owned here alone.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("answer's FDs were truncated"));
    }
    Ok((n as usize, fds))
}

fn os_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    base: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping at an address the kernel picks.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error("mapping a holder spawner's stacks"));
        }
        Ok(Self { base, len })
    }

    /// The address `offset` bytes into it (a stack top when `offset` is a
    /// region's end: 16-byte aligned, as the mapping is page-aligned).
    fn at(&self, offset: usize) -> *mut libc::c_void {
        debug_assert!(offset <= self.len);
        // SAFETY: within, or one past the end of, the mapping.
        unsafe { self.base.cast::<u8>().add(offset).cast() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; in this process nothing runs on
        // it (the spawner runs on its own copy).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// What the spawner is given (copied into it by the fork).
#[repr(C)]
struct SpawnerArgs {
    socket: RawFd,
    /// Die with the parent (the keeper): only with CLONE_PARENT. Without,
    /// the parent is the *thread* that forked it, which may end any time;
    /// the socket's EOF ends the spawner with its process.
    die_with_parent: bool,
    holder_stack_top: *mut libc::c_void,
}

/// What a holder is given (copied into it by the fork).
#[repr(C)]
struct HolderArgs {
    ready: RawFd,
    ready_read: RawFd,
    commit_read: RawFd,
    commit_write: RawFd,
    socket: RawFd,
    remount: libc::c_ulong,
}

fn errno() -> i32 {
    // SAFETY: this thread's errno location.
    unsafe { *libc::__errno_location() }
}

/// The spawner: one thread, a copy of the worker's memory it never
/// allocates from. Serves requests until its socket closes.
extern "C" fn spawner_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the SpawnerArgs copied into this process.
    let args = unsafe { &*arg.cast::<SpawnerArgs>() };
    let socket = args.socket;
    // SAFETY: plain syscalls on integers and static C strings.
    unsafe {
        if args.die_with_parent {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        }
        libc::prctl(libc::PR_SET_NAME, c"nodeinit-spawn".as_ptr(), 0, 0, 0);
        // Every inherited FD but the socket goes.
        if socket > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (socket - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (socket + 1) as u32, u32::MAX, 0u32);
    }
    loop {
        // Holders of a spawner without CLONE_PARENT are its children.
        // SAFETY: waitpid with a null status pointer.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        let mut request = Request::default();
        // SAFETY: `request` is a plain struct of the size passed.
        let n = unsafe {
            libc::recv(
                socket,
                (&raw mut request).cast(),
                std::mem::size_of::<Request>(),
                0,
            )
        };
        if n == 0 {
            // SAFETY: exit without running anything of the worker's.
            unsafe { libc::_exit(0) };
        }
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            // SAFETY: as above.
            unsafe { libc::_exit(1) };
        }
        let mut answer = Answer::default();
        let mut handover = [-1 as RawFd; 3];
        let served = if n as usize == std::mem::size_of::<Request>() {
            serve(socket, &request, args.holder_stack_top)
        } else {
            Err((Step::BadRequest, libc::EINVAL))
        };
        match served {
            Ok((pid, fds)) => {
                answer.pid = pid;
                handover = fds;
            }
            Err((step, e)) => {
                answer.step = step as u32;
                answer.errno = e;
            }
        }
        send_answer(socket, &answer, &handover);
        for fd in handover {
            if fd >= 0 {
                // SAFETY: FDs made by `serve`, sent (or not) already.
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// Clone one holder: its pid, and its pidfd, the commit pipe's write end
/// and the ready pipe's read end to hand over; or the failed step and errno.
fn serve(
    socket: RawFd,
    request: &Request,
    holder_stack_top: *mut libc::c_void,
) -> Result<(i32, [RawFd; 3]), (Step, i32)> {
    let mut ready = [-1 as RawFd; 2];
    let mut commit = [-1 as RawFd; 2];
    // SAFETY: pipe2 writes two FDs into each array.
    unsafe {
        if libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err((Step::Pipe, errno()));
        }
        if libc::pipe2(commit.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            let e = errno();
            libc::close(ready[0]);
            libc::close(ready[1]);
            return Err((Step::Pipe, e));
        }
    }
    let args = HolderArgs {
        ready: ready[1],
        ready_read: ready[0],
        commit_read: commit[0],
        commit_write: commit[1],
        socket,
        remount: request.remount as libc::c_ulong,
    };
    // Only namespace flags and CLONE_PARENT are taken from the request.
    let allowed = libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWNS | libc::CLONE_PARENT;
    let flags = (request.flags as libc::c_int & allowed) | libc::CLONE_PIDFD | libc::SIGCHLD;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: a fork-style clone of this single-threaded process: the
    // holder runs `holder_main` on its copy of the holder stack with its
    // copy of `args`; the kernel writes the pidfd.
    let pid = unsafe {
        libc::clone(
            holder_main,
            holder_stack_top,
            flags,
            (&raw const args).cast_mut().cast(),
            &raw mut pidfd,
        )
    };
    let clone_errno = errno();
    // SAFETY: closing our copies of the holder's ends.
    unsafe {
        libc::close(ready[1]);
        libc::close(commit[0]);
    }
    if pid < 0 {
        // SAFETY: the remaining pipe ends are ours.
        unsafe {
            libc::close(ready[0]);
            libc::close(commit[1]);
        }
        return Err((Step::Clone, clone_errno));
    }
    // The worker waits for the ready report itself (and opens the
    // namespaces meanwhile): one wake-up less per holder here.
    Ok((pid, [pidfd, commit[1], ready[0]]))
}

/// Send `answer`, with the `handover` FDs when the clone succeeded.
fn send_answer(socket: RawFd, answer: &Answer, handover: &[RawFd; 3]) {
    let mut iov = libc::iovec {
        iov_base: (answer as *const Answer).cast_mut().cast(),
        iov_len: std::mem::size_of::<Answer>(),
    };
    let mut control = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; pointers set below point at live
    // buffers; the CMSG macros stay within `control` (room for three FDs).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        if handover[0] >= 0 {
            let payload = std::mem::size_of::<[RawFd; 3]>() as u32;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(payload) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            libc::CMSG_DATA(cmsg)
                .cast::<[RawFd; 3]>()
                .write_unaligned(*handover);
        }
        while libc::sendmsg(socket, &raw const msg, libc::MSG_NOSIGNAL) < 0
            && errno() == libc::EINTR
        {}
    }
}

/// A persistent holder: drop what it inherited, die with its parent,
/// prepare its mount namespace's propagation, report ready, wait to be
/// committed (exit if never), then reap its PID namespace for ever.
extern "C" fn holder_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the HolderArgs copied into this process.
    let args = unsafe { &*arg.cast::<HolderArgs>() };
    // SAFETY: plain syscalls on integers, static C strings and a local.
    unsafe {
        // Its copy of the commit write end would keep the pipe open.
        libc::close(args.commit_write);
        libc::close(args.ready_read);
        libc::close(args.socket);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"nodeinit-holder".as_ptr(), 0, 0, 0);
        let mut status: i32 = 0;
        if args.remount != 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                args.remount,
                std::ptr::null(),
            ) != 0
        {
            status = errno();
        }
        libc::write(args.ready, (&raw const status).cast(), 4);
        libc::close(args.ready);
        if status != 0 {
            libc::_exit(1);
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(args.commit_read, (&raw mut byte).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            // Nobody recorded it: it must not live on.
            libc::_exit(0);
        }
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        // As the PID namespace's init it adopts the allocation's orphans and
        // must reap them, also when it had no child before: an init ignores
        // signals it has no handler for, so `SIGCHLD` is blocked (a blocked
        // signal stays pending) and taken with sigwaitinfo.
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut chld);
        libc::sigaddset(&raw mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &raw const chld, std::ptr::null_mut());
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::sigwaitinfo(&raw const chld, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use nodeinit_tests::wait_until;
    use std::time::Duration;

    /// These tests kill and stop the spawners of this process: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn net_and_mount() -> CloneFlags {
        CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS
    }

    fn stat_field(pid: i32, index_after_comm: usize) -> String {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split_whitespace()
            .nth(index_after_comm)
            .unwrap()
            .to_owned()
    }

    fn ppid(pid: i32) -> i32 {
        stat_field(pid, 1).parse().unwrap()
    }

    fn comm(pid: i32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim_end()
            .to_owned()
    }

    fn fds_of(pid: i32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    }

    /// Wait (10 s at most) until `pidfd`'s process has exited.
    fn exits(pidfd: &OwnedFd) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)),
            Ok(1)
        )
    }

    fn kill_and_reap(pid: i32) {
        let pid = Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }

    /// Both spawners running (sequential requests take the slots in turn).
    fn both_spawners() -> Vec<i32> {
        for _ in 0..SPAWNERS {
            let h = clone_persistent_holder(CloneFlags::CLONE_NEWNET, None).unwrap();
            nodeinit_sys::pidfd::kill(h.pidfd.as_fd()).unwrap();
        }
        let pids = spawner_pids();
        assert_eq!(pids.len(), SPAWNERS, "{pids:?}");
        pids
    }

    /// A holder comes from a spawner, not from this (multi-threaded)
    /// process: it is the spawner's child here (no CLONE_PARENT), in new
    /// namespaces, holds only the commit pipe until committed and nothing
    /// after; the spawner keeps nothing of this process's FDs but its
    /// socket.
    #[test]
    fn a_holder_is_cloned_by_a_spawner_and_holds_nothing_once_committed() {
        let _serial = serial();
        let many: Vec<std::fs::File> = (0..200)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let mut holder =
            clone_persistent_holder(net_and_mount(), Some(Propagation::Slave)).unwrap();
        holder.wait_ready().unwrap();
        holder.wait_ready().unwrap();
        let pid = holder.pid.as_raw();
        let spawner = ppid(pid);
        assert!(
            spawner_pids().contains(&spawner),
            "{spawner} {:?}",
            spawner_pids()
        );
        assert_eq!(comm(spawner), SPAWNER_NAME);
        assert_eq!(ppid(spawner), std::process::id() as i32);
        // Its socket only, once it closed its copies of what it sent.
        wait_until("the spawner keeps its socket only", || fds_of(spawner) == 1);
        assert_eq!(comm(pid), "nodeinit-holder");
        for ns in ["net", "mnt"] {
            assert_ne!(
                std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap(),
                std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
                "{ns}"
            );
        }
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
            std::fs::read_link("/proc/self/ns/pid").unwrap(),
        );
        // The commit pipe only, before the commit (it closes the ready
        // pipe right after its report).
        wait_until("the holder kept only its commit pipe", || fds_of(pid) == 1);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            fds_of(pid),
            1,
            "an uncommitted holder waits, holding one FD"
        );
        holder.commit.commit().unwrap();
        holder.commit.commit().unwrap();
        wait_until("the committed holder closed every FD", || fds_of(pid) == 0);
        assert!(!exits_now(&holder.pidfd), "a committed holder lives on");
        nodeinit_sys::pidfd::kill(holder.pidfd.as_fd()).unwrap();
        assert!(exits(&holder.pidfd));
        drop(many);
    }

    fn exits_now(pidfd: &OwnedFd) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(1)
        )
    }

    /// A committed persistent holder reaps the orphans of its PID namespace.
    #[test]
    fn a_persistent_holder_reaps_the_orphans_of_its_pid_namespace() {
        let _serial = serial();
        let mut holder = clone_persistent_holder(CloneFlags::CLONE_NEWPID, None).unwrap();
        holder.wait_ready().unwrap();
        holder.commit.commit().unwrap();
        let pid = holder.pid.as_raw();
        wait_until("the committed holder closed every FD", || fds_of(pid) == 0);
        crate::holder::tests::assert_reaps_orphans(pid);
        nodeinit_sys::pidfd::kill(holder.pidfd.as_fd()).unwrap();
        assert!(exits(&holder.pidfd));
    }

    /// A holder whose handover fails (its commit pipe closes unwritten,
    /// as when the worker dies before recording it) exits by itself.
    #[test]
    fn an_uncommitted_holder_exits_by_itself() {
        let _serial = serial();
        let mut holder = clone_persistent_holder(CloneFlags::CLONE_NEWNET, None).unwrap();
        holder.wait_ready().unwrap();
        let SpawnedHolder {
            pid, pidfd, commit, ..
        } = holder;
        assert_eq!(comm(pid.as_raw()), "nodeinit-holder");
        drop(commit);
        assert!(exits(&pidfd), "holder {pid} still runs uncommitted");
    }

    /// A spawner killed while idle is replaced at the next request, which
    /// succeeds.
    #[test]
    fn a_spawner_that_died_idle_is_replaced() {
        let _serial = serial();
        let before = both_spawners();
        for pid in &before {
            kill_and_reap(*pid);
        }
        let holder = clone_persistent_holder(CloneFlags::CLONE_NEWNET, None).unwrap();
        let spawner = ppid(holder.pid.as_raw());
        assert!(!before.contains(&spawner), "{spawner} in {before:?}");
        assert_eq!(comm(spawner), SPAWNER_NAME);
        nodeinit_sys::pidfd::kill(holder.pidfd.as_fd()).unwrap();
    }

    /// A spawner killed while a request waits for it: that request fails
    /// naming the spawner, and the next one gets a new spawner and works.
    /// Without the EOF check the request hung for the 15 s timeout; with a
    /// wedged lock every later request would.
    #[test]
    fn a_spawner_killed_mid_request_fails_that_request_only() {
        let _serial = serial();
        let spawners = both_spawners();
        for pid in &spawners {
            nix::sys::signal::kill(Pid::from_raw(*pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
        }
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let asking = std::thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            clone_persistent_holder(CloneFlags::CLONE_NEWNET, None)
        });
        let tid = tid_rx.recv().unwrap();
        // Asked, and waiting for the answer on the spawner's socket.
        wait_until("the request waits for a stopped spawner", || {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan"))
                .is_ok_and(|w| w == "__skb_wait_for_more_packets")
        });
        for pid in &spawners {
            kill_and_reap(*pid);
        }
        let err = asking.join().unwrap().unwrap_err().to_string();
        assert!(
            spawners
                .iter()
                .any(|pid| err == format!("the holder spawner (pid {pid}) exited before answering (was it killed?); a new one is started for the next request")),
            "{err}"
        );
        let holder = clone_persistent_holder(CloneFlags::CLONE_NEWNET, None).unwrap();
        let spawner = ppid(holder.pid.as_raw());
        assert!(!spawners.contains(&spawner), "{spawner} in {spawners:?}");
        nodeinit_sys::pidfd::kill(holder.pidfd.as_fd()).unwrap();
        assert!(exits(&holder.pidfd));
    }

    /// A spawner that stops answering (stopped, or stuck) never wedges
    /// the server: after [`ANSWER_TIMEOUT_SECS`] the request fails naming
    /// it, it is killed, and the next request gets a new one.
    #[test]
    fn a_silent_spawner_is_killed_after_the_timeout() {
        let _serial = serial();
        let spawners = both_spawners();
        for pid in &spawners {
            nix::sys::signal::kill(Pid::from_raw(*pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
        }
        let err = clone_persistent_holder(CloneFlags::CLONE_NEWNET, None)
            .unwrap_err()
            .to_string();
        let silent = spawners
            .iter()
            .copied()
            .find(|pid| {
                err == format!(
                    "the holder spawner (pid {pid}) did not answer within {ANSWER_TIMEOUT_SECS} s and was killed; a new one is started for the next request"
                )
            })
            .unwrap_or_else(|| panic!("{err}"));
        // Killed and reaped (it was this process's child).
        assert!(std::fs::metadata(format!("/proc/{silent}")).is_err());
        assert!(!spawner_pids().contains(&silent));
        for pid in spawners.iter().filter(|p| **p != silent) {
            kill_and_reap(*pid);
        }
        let mut holder = clone_persistent_holder(CloneFlags::CLONE_NEWNET, None).unwrap();
        holder.wait_ready().unwrap();
        assert!(!spawners.contains(&ppid(holder.pid.as_raw())));
        nodeinit_sys::pidfd::kill(holder.pidfd.as_fd()).unwrap();
        assert!(exits(&holder.pidfd));
    }

    /// A holder that fails to start is reported with the kernel's reason
    /// and killed; the spawner stays (it answered).
    #[test]
    fn a_holder_that_fails_to_start_is_reported_and_killed() {
        let _serial = serial();
        let spawners = both_spawners();
        // Two propagation types at once: mount(2) in the holder's new
        // mount namespace fails with EINVAL.
        let request = Request {
            flags: CloneFlags::CLONE_NEWNS.bits() as u64,
            remount: libc::MS_REC | libc::MS_SLAVE | libc::MS_PRIVATE,
        };
        let Lease::Idle(spawner) = lease() else {
            panic!("both spawners exist: {:?}", spawner_pids());
        };
        let mut holder = spawner.ask(&request).unwrap().unwrap();
        let answer = holder.wait_ready().unwrap_err().to_string();
        assert_eq!(
            answer,
            format!(
                "holder {}: changing the propagation of / in the new mount namespace: EINVAL: Invalid argument",
                holder.pid
            )
        );
        assert!(
            exits(&holder.pidfd),
            "a holder that failed to start is gone"
        );
        assert!(spawners.contains(&spawner.pid));
        assert!(spawner.alive());
        give_back(spawner.pid, Some(spawner));
    }
}
