//! Holders that share the server's memory (`CLONE_VM`) instead of getting a
//! copy-on-write copy of it.
//!
//! Why: a fork-style clone of the multi-threaded server write-protects every
//! private page of it; each page a server thread writes afterwards then
//! takes a copy-on-write fault plus a TLB shootdown across the server's
//! CPUs, and the page tables are copied and torn down per holder. Profiled
//! under the load bench, that was about a third of the server's CPU per
//! allocation (`do_wp_page`, `flush_tlb_mm_range`, `dup_mmap`). Sharing the
//! memory costs nothing of that.
//!
//! Owns the holder's own stack (mapped here, unmapped only once the holder
//! is dead) and the code the holder runs, which must touch no memory but
//! that stack: it shares every byte of the server and the TLS of the thread
//! that cloned it. So it makes raw syscalls only, through `rustix`'s
//! linux_raw backend, which never writes `errno` (libc's wrappers would
//! write the cloning thread's `errno`), and hand-written `close_range`,
//! `rt_sigprocmask` and `rt_sigtimedwait` (rustix has none outside its
//! unstable runtime module). Its arguments travel in the clone argument's bits,
//! not in memory.
//!
//! Signal handlers are copied, not shared (no `CLONE_SIGHAND`). The holder
//! blocks `SIGCHLD`, the one signal it expects (an orphan of the allocation
//! exited), and takes it with `rt_sigtimedwait`, so a handler the process
//! installed for it never runs in the holder; any other handler would run
//! on the holder's stack and is async-signal-safe by necessity.
//!
//! The stack is unmapped only once the holder is known dead: a holder
//! running on an unmapped stack would fault, and before Linux 5.16 a core
//! dump kills every process sharing the memory — this one too.
//!
//! Used only for holders tied to this process: a holder that must outlive
//! its creator (the unshare backend's persistent holders) would keep a dead
//! worker's whole address space alive, and a core dump (before 5.16) or
//! the OOM killer picking the worker would take every such holder with it,
//! so those are still copies, cloned by a single-threaded spawner process
//! ([`super::clone_persistent_holder`]).

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use crate::mount_namespace::Propagation;

/// The holder's stack: it makes a handful of syscalls in one frame.
const STACK_BYTES: usize = 64 * 1024;
/// An inaccessible guard below the stack: an overflow faults instead of
/// writing into whatever server memory lies below (the memory is shared).
pub(crate) const GUARD_BYTES: usize = 8 * 1024;
const MAPPING_BYTES: usize = STACK_BYTES + GUARD_BYTES;

/// A mapped stack for one holder. Unmapped on drop: drop it only once the
/// holder is dead (reaped, or its pidfd reported the exit); [`Self::leak`]
/// it when that cannot be known.
#[derive(Debug)]
pub(crate) struct HolderStack {
    base: std::ptr::NonNull<libc::c_void>,
}

// SAFETY: the mapping is owned by this value alone; nothing in this process
// reads or writes through `base` (only the holder uses the memory).
unsafe impl Send for HolderStack {}
// SAFETY: as above: no access through shared references.
unsafe impl Sync for HolderStack {}

impl HolderStack {
    /// Map a fresh stack.
    pub(crate) fn map() -> io::Result<Self> {
        // SAFETY: an anonymous private mapping at an address the kernel
        // picks; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAPPING_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mapping a holder stack: {e}"),
            ));
        }
        let stack = std::ptr::NonNull::new(base)
            .map(|base| Self { base })
            .ok_or_else(|| io::Error::other("mmap returned a null holder stack"))?;
        // SAFETY: the first GUARD_BYTES of the mapping just made, which
        // nothing uses.
        if unsafe { libc::mprotect(stack.base.as_ptr(), GUARD_BYTES, libc::PROT_NONE) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("guarding a holder stack: {e}"),
            ));
        }
        Ok(stack)
    }

    /// The initial stack pointer (stacks grow down; 16-byte aligned).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, the usual stack top.
        unsafe { self.base.as_ptr().cast::<u8>().add(MAPPING_BYTES).cast() }
    }

    /// Keep the mapping for ever: the holder may still run on it.
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for HolderStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of that length; its holder is
        // dead (the owner's contract), so nothing uses it any more.
        unsafe {
            libc::munmap(self.base.as_ptr(), MAPPING_BYTES);
        }
    }
}

/// The clone argument: the pipe FD in the low 32 bits, the propagation
/// (0 none, 1 slave, 2 private) above.
fn pack(ready_fd: RawFd, propagation: Option<Propagation>) -> usize {
    let code: usize = match propagation {
        None => 0,
        Some(Propagation::Slave) => 1,
        Some(Propagation::Private) => 2,
    };
    (ready_fd as u32 as usize) | (code << 32)
}

/// `clone(2)` a holder with `flags` (`CLONE_NEW*`, plus `CLONE_VM`,
/// `CLONE_FILES` added here) on `stack`; it reports on `ready_fd` as the
/// spawner module describes. Returns its pid.
///
/// # Safety
///
/// `stack` must stay mapped until the holder is dead, and `ready_fd` open
/// until the holder's report has been read.
pub(crate) unsafe fn clone_sharing_memory(
    flags: nix::sched::CloneFlags,
    propagation: Option<Propagation>,
    ready_fd: RawFd,
    stack: &HolderStack,
) -> io::Result<nix::unistd::Pid> {
    let flags = flags | nix::sched::CloneFlags::CLONE_VM | nix::sched::CloneFlags::CLONE_FILES;
    // SAFETY: glibc's clone runs `holder_entry` on `stack` in the child and
    // touches nothing else there; the caller keeps the stack mapped and the
    // FD open (this function's contract); the argument is a plain integer.
    let pid = unsafe {
        libc::clone(
            holder_entry,
            stack.top(),
            flags.bits() | libc::SIGCHLD,
            pack(ready_fd, propagation) as *mut libc::c_void,
        )
    };
    if pid < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("clone({flags:?}): {e}")));
    }
    Ok(nix::unistd::Pid::from_raw(pid))
}

/// A system call with up to four integer arguments, made without libc:
/// the raw result (the value, or a negated errno). libc's `syscall` would
/// write the cloning thread's `errno` on failure.
fn raw_syscall(number: libc::c_long, args: [usize; 4]) -> isize {
    let ret: isize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the callers pass integers, or pointers into the holder's own
    // stack that the call only reads; `syscall` clobbers rcx and r11 only.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") number as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above; `svc 0` takes the number in x8, arguments in x0-x3.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") number as usize,
            inlateout("x0") args[0] => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            options(nostack),
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: as above. Elsewhere libc's wrapper is used: on failure it
    // writes the cloning thread's errno (an int; the failure path only).
    unsafe {
        ret = libc::syscall(number, args[0], args[1], args[2], args[3]) as isize;
    }
    ret
}

/// `close_range` (rustix has none): 0, or a negated errno.
fn raw_close_range(first: u32, last: u32, flags: u32) -> isize {
    raw_syscall(
        libc::SYS_close_range,
        [first as usize, last as usize, flags as usize, 0],
    )
}

/// The kernel's signal set of `SIGCHLD` alone (`sigset_t` is 8 bytes to the
/// kernel on every 64-bit Linux).
const SIGCHLD_SET: u64 = 1 << (libc::SIGCHLD - 1);

/// Block `SIGCHLD` in this task (rustix offers signal masks only in its
/// unstable runtime module).
fn block_sigchld(set: &u64) -> isize {
    raw_syscall(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_BLOCK as usize,
            std::ptr::from_ref(set) as usize,
            0,
            8,
        ],
    )
}

/// Wait until `SIGCHLD` is pending, and take it.
fn take_sigchld(set: &u64) -> isize {
    raw_syscall(
        libc::SYS_rt_sigtimedwait,
        [std::ptr::from_ref(set) as usize, 0, 0, 8],
    )
}

/// What a memory-sharing holder does for its whole life (see the module
/// docs for what it must not do): die with its creator, cut its mount
/// namespace's propagation, report 0 or the errno on the pipe, give up the
/// shared FD table, and reap its PID namespace.
extern "C" fn holder_entry(arg: *mut libc::c_void) -> libc::c_int {
    use rustix::mount::MountPropagationFlags as P;
    let arg = arg as usize;
    let ready_fd = (arg & 0xffff_ffff) as u32 as RawFd;
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // `ps` tells it from the server.
    let _ = rustix::thread::set_name(c"nodeinit-holder");
    let propagation = match arg >> 32 {
        1 => Some(P::DOWNSTREAM | P::REC),
        2 => Some(P::PRIVATE | P::REC),
        _ => None,
    };
    let status: i32 = match propagation.map(|p| rustix::mount::mount_change(c"/", p)) {
        Some(Err(e)) => e.raw_os_error(),
        _ => 0,
    };
    // SAFETY: the pipe's write end, open in the (still shared) FD table
    // until the creator has read this report.
    let ready = unsafe { BorrowedFd::borrow_raw(ready_fd) };
    let _ = rustix::io::write(ready, &status.to_ne_bytes());
    // An empty FD table of its own (CLOSE_RANGE_UNSHARE keeps nothing);
    // kernels before 5.9: a private copy, then close all of it.
    if raw_close_range(0, u32::MAX, libc::CLOSE_RANGE_UNSHARE) != 0 {
        // SAFETY: this process has one thread and uses no FD afterwards.
        let _ = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FILES) };
        raw_close_range(0, u32::MAX, 0);
    }
    // As the PID namespace's init it adopts the allocation's orphans and
    // must reap them, also when it had no child before. An init ignores
    // signals it has no handler for, so `SIGCHLD` is blocked (a blocked
    // signal stays pending) and taken with sigtimedwait.
    let chld = SIGCHLD_SET;
    block_sigchld(&chld);
    loop {
        while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
        take_sigchld(&chld);
    }
}
