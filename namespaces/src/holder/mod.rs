//! Namespace holders: one small process per allocation that keeps its
//! namespaces alive and is PID 1 (the reaper) of its PID namespace. It
//! shares its creator's memory (`CLONE_VM`, on a stack of its own) and
//! holds no FD: creating one costs the kernel's namespace work, not a copy
//! of the creator.
//!
//! Owns the holder's lifecycle — fork in the requested `CLONE_NEW*`
//! namespaces, open `/proc/<holder>/ns/*`, kill and reap — and the FDs. Both
//! the unshare backend and the consumer client's fallback use it, so both
//! create namespaces the same way (WI4). The holder itself only changes its
//! new mount namespace's propagation (before it reports ready);
//! [`NamespaceHolder::spawn_prepared`] hands the namespace to
//! [`crate::mount_namespace`] for the uenv bind.

mod held;
mod pidfd;
mod shared_memory;
mod spawner;
mod spawner_process;
mod teardown;

pub use teardown::wait_for_teardown;

pub use held::HeldNamespaces;
pub use spawner_process::{
    clone_persistent_holder, spawner_pids, HolderCommit, SpawnedHolder, ANSWER_TIMEOUT_SECS,
    SPAWNERS, SPAWNER_NAME,
};

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use hpc_node::NamespaceType;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// A live holder process and the FDs of its namespaces.
///
/// Dropping it kills and reaps the holder and closes the FDs; call
/// [`NamespaceHolder::terminate`] to see errors.
#[derive(Debug)]
pub struct NamespaceHolder {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    namespaces: HeldNamespaces,
    /// The stack the holder runs on (it shares this process's memory);
    /// unmapped once it is reaped.
    stack: Option<shared_memory::HolderStack>,
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
        Self::spawn_with(namespaces, None)
    }

    /// `spawn`, the holder first giving its new mount namespace
    /// `propagation` (when set and a mount namespace is among `namespaces`).
    fn spawn_with(
        namespaces: &[NamespaceType],
        propagation: Option<crate::mount_namespace::Propagation>,
    ) -> io::Result<Self> {
        let flags = namespaces
            .iter()
            .fold(CloneFlags::empty(), |acc, ns| acc | clone_flag(*ns));
        let propagation = propagation.filter(|_| flags.contains(CloneFlags::CLONE_NEWNS));
        let (pid, pidfd, stack) = spawner::spawn_holder(flags, propagation)?;
        let mut holder = Self {
            pid,
            pidfd: Some(pidfd),
            namespaces: HeldNamespaces::default(),
            stack: Some(stack),
        };
        holder.namespaces = HeldNamespaces::open(pid.as_raw(), namespaces)?;
        Ok(holder)
    }

    /// [`NamespaceHolder::spawn`], then, when a mount namespace is among
    /// `namespaces`, cut its propagation and mount the uenv `bind` in it —
    /// before anyone else can see the namespace.
    ///
    /// # Errors
    ///
    /// As `spawn` and [`crate::mount_namespace::attach_uenv`]; the holder is gone
    /// when this returns an error.
    pub fn spawn_prepared(
        namespaces: &[NamespaceType],
        propagation: crate::mount_namespace::Propagation,
        bind: Option<&crate::mount_namespace::UenvBind>,
    ) -> io::Result<Self> {
        if bind.is_some() && !namespaces.contains(&NamespaceType::Mount) {
            return Err(io::Error::other("a uenv bind needs a Mount namespace"));
        }
        // The holder cuts the propagation itself, before it reports ready.
        let holder = Self::spawn_with(namespaces, Some(propagation))?;
        if let (Some(mnt), Some(bind)) = (holder.fd(NamespaceType::Mount), bind) {
            crate::mount_namespace::attach_uenv(mnt, bind)?;
        }
        Ok(holder)
    }

    /// The holder's pid (in the caller's PID namespace).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The namespace types held, in spawn order.
    pub fn types(&self) -> Vec<NamespaceType> {
        self.namespaces.types()
    }

    /// The FD of namespace `ns`, if held.
    pub fn fd(&self, ns: NamespaceType) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.namespaces.fd(ns)
    }

    /// Fresh duplicates of all namespace FDs, in spawn order.
    ///
    /// # Errors
    ///
    /// `dup` failing (`EMFILE`: the process is out of FDs).
    pub fn duplicate_fds(&self) -> io::Result<Vec<OwnedFd>> {
        self.namespaces.duplicate_fds()
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
        // Closed after the exit, off this path (`HeldNamespaces::close_after_exit`):
        // then the holder's exit is not also its namespaces' teardown.
        let namespaces = std::mem::take(&mut self.namespaces);
        let Some(pidfd) = self.pidfd.take() else {
            return Ok(());
        };
        let gone = pidfd::kill(pidfd.as_fd())
            .map_err(|e| io::Error::other(format!("cannot kill holder {}: {e}", self.pid)))
            .and_then(|()| {
                pidfd::reap(pidfd.as_fd())
                    .map_err(|e| io::Error::other(format!("cannot reap holder {}: {e}", self.pid)))
            });
        match (gone.is_ok(), self.stack.take()) {
            // Dead: nothing runs on its stack any more.
            (true, stack) => {
                drop(stack);
                namespaces.close_after_exit();
            }
            // It may still run on it: never unmap that.
            (false, Some(stack)) => stack.leak(),
            (false, None) => {}
        }
        gone
    }
}

impl Drop for NamespaceHolder {
    fn drop(&mut self) {
        if let Err(e) = self.kill_and_reap() {
            tracing::error!(holder = %self.pid, error = %e, "namespace holder not cleaned up");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The holder tests count this process's mappings (a tied holder's
    /// stack is one): every test of the crate that spawns a tied holder
    /// takes this, one at a time.
    pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn holder_fds(pid: Pid) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The holder is cloned sharing its creator's FD table (cheap with
    /// thousands of FDs) and must drop it at once: it holds none of them,
    /// and FDs its creator opens afterwards never appear in it either.
    #[test]
    fn a_holder_holds_no_fd_of_its_creator() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let many: Vec<std::fs::File> = (0..500)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let holder = NamespaceHolder::spawn_prepared(
            &[NamespaceType::Mount, NamespaceType::Net],
            crate::mount_namespace::Propagation::Slave,
            None,
        )
        .unwrap();
        assert_eq!(holder_fds(holder.pid()), Vec::<String>::new());
        let later = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(holder_fds(holder.pid()), Vec::<String>::new());
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", holder.pid())).unwrap();
        assert_eq!(comm, "nodeinit-holder\n");
        // Its namespaces are new ones.
        let mnt = std::fs::read_link(format!("/proc/{}/ns/mnt", holder.pid())).unwrap();
        assert_ne!(mnt, std::fs::read_link("/proc/self/ns/mnt").unwrap());
        holder.terminate().unwrap();
        drop((many, later));
    }

    /// The holder is reaped when `terminate` returns; its namespace FDs
    /// are closed after that, off the caller's path, and none is kept.
    #[test]
    fn a_terminated_holder_is_reaped_and_its_namespace_fds_closed_after() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let holder = NamespaceHolder::spawn_prepared(
            &[NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
            crate::mount_namespace::Propagation::Slave,
            None,
        )
        .unwrap();
        let pid = holder.pid();
        let theirs: Vec<std::path::PathBuf> = ["pid", "net", "mnt"]
            .iter()
            .map(|ns| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap())
            .collect();
        let ours_to_theirs = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|link| theirs.contains(link))
                .count()
        };
        assert_eq!(ours_to_theirs(), 3, "the holder's three namespace FDs");
        holder.terminate().unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "holder {pid} not reaped when terminate returned"
        );
        assert!(
            wait_for_teardown(std::time::Duration::from_secs(20)),
            "the teardown thread did not flush in 20 s"
        );
        assert_eq!(
            ours_to_theirs(),
            0,
            "the dead holder's namespace FDs are open after the teardown flush"
        );
    }

    /// `(pid, state)` of every child of `parent`, zombies included.
    fn children_of(parent: i32) -> Vec<(i32, char)> {
        let mut children: Vec<(i32, char)> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let rest = &stat[stat.rfind(')')? + 2..];
                let mut fields = rest.split_whitespace();
                let state = fields.next()?.chars().next()?;
                let ppid: i32 = fields.next()?.parse().ok()?;
                (ppid == parent).then_some((pid, state))
            })
            .collect();
        children.sort_unstable();
        children
    }

    /// A process orphaned inside `holder`'s PID namespace (its parent, in
    /// the namespace too, exits first) is adopted by the holder — its init
    /// — and reaped once it exits: no zombie stays. Before the holder took
    /// `SIGCHLD` (blocked, then `sigtimedwait`) it slept in `pause()`, which
    /// an init's ignored `SIGCHLD` never ends: 5 of 5 runs left the zombie.
    pub(crate) fn assert_reaps_orphans(holder: i32) {
        assert!(children_of(holder).is_empty(), "{:?}", children_of(holder));
        let pid_ns = std::fs::File::open(format!("/proc/{holder}/ns/pid")).unwrap();
        // The outer sh stays outside; the inner one is the namespace's first
        // process, backgrounds `sleep` and exits: sleep is orphaned there.
        // (Its output goes to /dev/null: the script's pipes must close
        // before sleep ends.)
        nodeinit_tests::run_in_namespaces(
            &[pid_ns.into()],
            "sh -c 'sleep 3 </dev/null >/dev/null 2>&1 &'; true",
        );
        let adopted = children_of(holder);
        assert_eq!(
            adopted.len(),
            1,
            "the orphan is the holder's child: {adopted:?}"
        );
        nodeinit_tests::wait_until("the holder reaped its orphan", || {
            children_of(holder).is_empty()
        });
    }

    #[test]
    fn a_holder_reaps_the_orphans_of_its_pid_namespace() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let holder = NamespaceHolder::spawn(&[NamespaceType::Pid]).unwrap();
        assert_reaps_orphans(holder.pid().as_raw());
        // Again, now that it has reaped once.
        assert_reaps_orphans(holder.pid().as_raw());
        holder.terminate().unwrap();
    }

    /// Holder stacks: each has an 8 KiB inaccessible guard, a mapping of
    /// its own (thread stacks' guards are one page).
    fn stack_mappings() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                let Some((a, b)) = fields[0].split_once('-') else {
                    return false;
                };
                let len =
                    usize::from_str_radix(b, 16).unwrap() - usize::from_str_radix(a, 16).unwrap();
                len == shared_memory::GUARD_BYTES && fields[1] == "---p" && fields.len() == 5
            })
            .count()
    }

    /// Holders share this process's memory and run on a stack of their
    /// own: it is unmapped once the holder is reaped (none leaks), and
    /// never while it runs (the holder is alive until terminated).
    #[test]
    fn holder_stacks_live_exactly_as_long_as_their_holders() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        NamespaceHolder::spawn(&[NamespaceType::Net])
            .unwrap()
            .terminate()
            .unwrap();
        let before = stack_mappings();
        let holders: Vec<_> = (0..8)
            .map(|_| NamespaceHolder::spawn(&[NamespaceType::Net]).unwrap())
            .collect();
        assert!(
            stack_mappings() >= before + 8,
            "one stack per live holder: {before} before, {}",
            std::fs::read_to_string("/proc/self/maps").unwrap()
        );
        for h in &holders {
            let state = std::fs::read_to_string(format!("/proc/{}/stat", h.pid())).unwrap();
            assert!(!state.contains(") Z "), "holder {} died: {state}", h.pid());
        }
        for h in holders {
            h.terminate().unwrap();
        }
        assert_eq!(stack_mappings(), before);
    }
}
