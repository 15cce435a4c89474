//! The namespace descriptors a holder keeps open, in the order they were
//! asked for: what every grant duplicates and sends. One type for the tied
//! holders here and the persistent ones of the unshare backend.
//!
//! Owns opening `/proc/<holder>/ns/*` and the descriptors; never signals
//! or waits for the holder itself.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use hpc_node::NamespaceType;
use rustix::fs::{Mode, OFlags};

use super::proc_ns_name;

/// A holder's namespace FDs, in request order.
#[derive(Debug, Default)]
pub struct HeldNamespaces(Vec<(NamespaceType, OwnedFd)>);

impl HeldNamespaces {
    /// Opens `/proc/<pid>/ns/<type>` for each of `namespaces`.
    ///
    /// # Errors
    ///
    /// An `open` failed; the error names the path.
    pub fn open(pid: i32, namespaces: &[NamespaceType]) -> io::Result<Self> {
        let mut held = Vec::with_capacity(namespaces.len());
        for ns in namespaces {
            let path = format!("/proc/{pid}/ns/{}", proc_ns_name(*ns));
            let fd = rustix::fs::open(
                path.as_str(),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io::Error::other(format!("cannot open {path}: {e}")))?;
            held.push((*ns, fd));
        }
        Ok(Self(held))
    }

    /// The namespace types held, in request order.
    pub fn types(&self) -> Vec<NamespaceType> {
        self.0.iter().map(|(ns, _)| *ns).collect()
    }

    /// The FD of namespace `ns`, if held.
    pub fn fd(&self, ns: NamespaceType) -> Option<BorrowedFd<'_>> {
        self.0
            .iter()
            .find(|(t, _)| *t == ns)
            .map(|(_, fd)| fd.as_fd())
    }

    /// Fresh duplicates of all namespace FDs, in request order.
    ///
    /// # Errors
    ///
    /// `dup` failing (`EMFILE`: the process is out of FDs).
    pub fn duplicate_fds(&self) -> io::Result<Vec<OwnedFd>> {
        self.0.iter().map(|(_, fd)| fd.try_clone()).collect()
    }

    /// Closes them all.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Close them once the holder has exited, off the caller's path: the
    /// last close tears the namespaces down, which is kernel work the
    /// caller need not wait for (the teardown thread, or inline when its
    /// queue is full). Only for a holder that has exited: a live one's
    /// namespaces would be held open a moment longer.
    pub fn close_after_exit(self) {
        super::teardown::close_after_exit(self);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn opens_this_process_namespaces_in_request_order() {
        let me = std::process::id() as i32;
        let mut held = HeldNamespaces::open(me, &[NamespaceType::Net, NamespaceType::Pid]).unwrap();
        assert_eq!(held.types(), [NamespaceType::Net, NamespaceType::Pid]);
        let link = |fd: BorrowedFd<'_>| {
            std::fs::read_link(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            ))
            .unwrap()
            .display()
            .to_string()
        };
        assert!(link(held.fd(NamespaceType::Net).unwrap()).starts_with("net:["));
        assert!(held.fd(NamespaceType::Mount).is_none());
        let dups = held.duplicate_fds().unwrap();
        assert!(link(dups[1].as_fd()).starts_with("pid:["));
        held.clear();
        assert!(held.types().is_empty());
        let err = HeldNamespaces::open(i32::MAX, &[NamespaceType::Net]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot open /proc/{}/ns/net", i32::MAX)),
            "{err}"
        );
    }
}
