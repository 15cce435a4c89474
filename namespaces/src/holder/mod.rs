//! Namespace holders: one small process per allocation that keeps its
//! namespaces alive and is PID 1 (the reaper) of its PID namespace.
//!
//! Owns the holder's lifecycle — fork in the requested `CLONE_NEW*`
//! namespaces, open `/proc/<holder>/ns/*`, kill and reap — and the FDs. Both
//! the unshare backend and the consumer client's fallback use it, so both
//! create namespaces the same way (WI4). It never mounts anything itself:
//! [`NamespaceHolder::spawn_prepared`] hands the new mount namespace to
//! [`crate::mount_namespace`].

mod pidfd;
mod spawner;

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use hpc_node::NamespaceType;
use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::Pid;

/// A live holder process and the FDs of its namespaces.
///
/// Dropping it kills and reaps the holder and closes the FDs; call
/// [`NamespaceHolder::terminate`] to see errors.
#[derive(Debug)]
pub struct NamespaceHolder {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    namespaces: Vec<(NamespaceType, OwnedFd)>,
}

/// The `CLONE_NEW*` flag of a namespace type.
pub fn clone_flag(ns: NamespaceType) -> CloneFlags {
    match ns {
        NamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        NamespaceType::Net => CloneFlags::CLONE_NEWNET,
        NamespaceType::Mount => CloneFlags::CLONE_NEWNS,
    }
}

/// The `/proc/<pid>/ns/` entry of a namespace type.
pub fn proc_ns_name(ns: NamespaceType) -> &'static str {
    match ns {
        NamespaceType::Pid => "pid",
        NamespaceType::Net => "net",
        NamespaceType::Mount => "mnt",
    }
}

impl NamespaceHolder {
    /// Fork a holder in new namespaces of each type in `namespaces` (in that
    /// order, without duplicates) and open their FDs.
    ///
    /// # Errors
    ///
    /// The failing step (`clone`, `pidfd_open`, opening `/proc/<pid>/ns/<x>`)
    /// and the kernel's reason; the holder is gone when this returns an error.
    pub fn spawn(namespaces: &[NamespaceType]) -> io::Result<Self> {
        let flags = namespaces
            .iter()
            .fold(CloneFlags::empty(), |acc, ns| acc | clone_flag(*ns));
        let (pid, pidfd) = spawner::spawn_holder(flags)?;
        let mut holder = Self {
            pid,
            pidfd: Some(pidfd),
            namespaces: Vec::with_capacity(namespaces.len()),
        };
        for ns in namespaces {
            let path = format!("/proc/{pid}/ns/{}", proc_ns_name(*ns));
            let fd = open(
                path.as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io::Error::other(format!("cannot open {path}: {e}")))?;
            // SAFETY: open returned a new descriptor that nothing else owns.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            holder.namespaces.push((*ns, fd));
        }
        Ok(holder)
    }

    /// [`NamespaceHolder::spawn`], then, when a mount namespace is among
    /// `namespaces`, cut its propagation and mount the uenv `bind` in it —
    /// before anyone else can see the namespace.
    ///
    /// # Errors
    ///
    /// As `spawn` and [`crate::mount_namespace::prepare`]; the holder is gone
    /// when this returns an error.
    pub fn spawn_prepared(
        namespaces: &[NamespaceType],
        propagation: crate::mount_namespace::Propagation,
        bind: Option<&crate::mount_namespace::UenvBind>,
    ) -> io::Result<Self> {
        let holder = Self::spawn(namespaces)?;
        match holder.fd(NamespaceType::Mount) {
            Some(mnt) => crate::mount_namespace::prepare(mnt, propagation, bind)?,
            None if bind.is_some() => {
                return Err(io::Error::other("a uenv bind needs a Mount namespace"));
            }
            None => {}
        }
        Ok(holder)
    }

    /// The holder's pid (in the caller's PID namespace).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The namespace types held, in spawn order.
    pub fn types(&self) -> Vec<NamespaceType> {
        self.namespaces.iter().map(|(ns, _)| *ns).collect()
    }

    /// The FD of namespace `ns`, if held.
    pub fn fd(&self, ns: NamespaceType) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.namespaces
            .iter()
            .find(|(t, _)| *t == ns)
            .map(|(_, fd)| fd.as_fd())
    }

    /// Fresh duplicates of all namespace FDs, in spawn order.
    ///
    /// # Errors
    ///
    /// `dup` failing (`EMFILE`: the process is out of FDs).
    pub fn duplicate_fds(&self) -> io::Result<Vec<OwnedFd>> {
        self.namespaces
            .iter()
            .map(|(_, fd)| fd.try_clone())
            .collect()
    }

    /// Kill the holder (and with it every process of its PID namespace), reap
    /// it, and close the namespace FDs.
    ///
    /// # Errors
    ///
    /// `pidfd_send_signal` or `waitid` failing; the FDs are closed anyway.
    pub fn terminate(mut self) -> io::Result<()> {
        self.kill_and_reap()
    }

    fn kill_and_reap(&mut self) -> io::Result<()> {
        self.namespaces.clear();
        let Some(pidfd) = self.pidfd.take() else {
            return Ok(());
        };
        pidfd::kill(pidfd.as_fd())
            .map_err(|e| io::Error::other(format!("cannot kill holder {}: {e}", self.pid)))?;
        pidfd::reap(pidfd.as_fd())
            .map_err(|e| io::Error::other(format!("cannot reap holder {}: {e}", self.pid)))
    }
}

impl Drop for NamespaceHolder {
    fn drop(&mut self) {
        if let Err(e) = self.kill_and_reap() {
            tracing::error!(holder = %self.pid, error = %e, "namespace holder not cleaned up");
        }
    }
}
