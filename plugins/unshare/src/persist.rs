//! Holders that outlive their worker (nodeinit's keeper/worker model): when
//! the worker that created an allocation dies or is replaced, the holder —
//! and with it the allocation's namespaces and uenv bind — lives on, and the
//! next worker adopts it.
//!
//! Enabled only in a worker started by nodeinit's keeper: the keeper sets
//! `NODEINIT_KEEPER_PID` to its pid, and this module checks it is the
//! parent's. There a holder is cloned with `CLONE_PARENT` — its parent is
//! the keeper, which never dies and reaps it — and `PR_SET_PDEATHSIG`, which
//! then refers to the keeper, so holders still go when a keeper that is
//! only a test process exits. Everywhere else (tests, the client fallback)
//! holders stay tied to their creator as `nodeinit_namespaces::holder` makes
//! them.
//!
//! Which holder serves which allocation, and whose allocation it is, is
//! written atomically to one record per allocation,
//! `<state_dir>/unshare-holders/<allocation_id>.json` (an allocation id
//! cannot contain `/` or start with `.`, so it is a safe file name; temp
//! files start with `.`), with the holder's pid *and* its start time
//! (`/proc/<pid>/stat` field 22): a record whose pid now belongs to another
//! process is never adopted. The start time is checked again after
//! `pidfd_open`, so the adopted pidfd is the recorded process. One file per
//! allocation keeps a request's cost independent of the number of live
//! allocations (a single file of all of them was rewritten, and fsynced, on
//! every request: 9–11 ms per request with 1000 live). The single file
//! `<state_dir>/unshare-holders.json` of older nodeinits is still read, and
//! replaced by per-allocation records once adopted.
//!
//! The pidfd calls and the atomic record write are `nodeinit_sys`'s, the one
//! copy of each.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use hpc_node::{MountHandle, NamespaceResponse, NamespaceType};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use nodeinit_namespaces::holder::{
    clone_flag, clone_persistent_holder, HeldNamespaces, HolderCommit,
};
use nodeinit_namespaces::mount_namespace::{Propagation, UenvBind};
use serde::{Deserialize, Serialize};

/// The environment variable the keeper sets in its worker.
pub const KEEPER_PID_ENV: &str = "NODEINIT_KEEPER_PID";
/// The state file of older nodeinits (all records in one file) inside `state_dir`.
pub const STATE_FILE: &str = "unshare-holders.json";
/// The directory of per-allocation records inside `state_dir`.
pub const RECORDS_DIR: &str = "unshare-holders";

/// Whether this process is a worker of a nodeinit keeper (holders persist).
pub fn persistence_enabled() -> bool {
    std::env::var(KEEPER_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .is_some_and(|pid| pid == nix::unistd::getppid().as_raw())
}

/// One persisted allocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderRecord {
    /// The allocation.
    pub allocation_id: String,
    /// Its holder's pid.
    pub pid: i32,
    /// Its holder's start time (clock ticks after boot).
    pub start_time: u64,
    /// The namespaces, in `fd_types` order.
    pub namespaces: Vec<NamespaceType>,
    /// The requested uenv image.
    pub uenv_image: Option<String>,
    /// The uenv reference held for it.
    pub uenv: Option<MountHandle>,
    /// What the request was answered.
    pub response: NamespaceResponse,
    /// The peer uid the allocation belongs to. Absent in records written
    /// before owners were persisted: such an allocation is adopted as
    /// root's (only root may request or end it then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    holders: Vec<HolderRecord>,
}

/// The holder records of one `state_dir`.
#[derive(Debug, Clone)]
pub struct HolderStore {
    /// The single file of older nodeinits.
    path: PathBuf,
    /// One record per allocation.
    records: PathBuf,
}

/// Write `bytes` to `path` by the one atomic write (`nodeinit_sys`: a new
/// temp file beside it, `O_EXCL | O_NOFOLLOW | O_NONBLOCK`, mode 0600,
/// fsync, rename).
fn write_atomically(path: &Path, temp_name: &str, bytes: &[u8]) -> io::Result<()> {
    nodeinit_sys::write_atomically_with_temp(path, temp_name, bytes, 0o600, false)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

fn not_a_record(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!(
        "{} is not a holder state file ({e}); move it away (live allocations are then not adopted)",
        path.display()
    ))
}

impl HolderStore {
    /// The store in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(STATE_FILE),
            records: state_dir.join(RECORDS_DIR),
        }
    }

    /// The per-allocation record file of `allocation_id` (a validated id).
    fn record_path(&self, allocation_id: &str) -> PathBuf {
        self.records.join(format!("{allocation_id}.json"))
    }

    /// Every record: the older single file's and the per-allocation ones
    /// (a per-allocation record wins for the same allocation). Missing
    /// files are no records.
    ///
    /// # Errors
    ///
    /// Unreadable, or not a holder state file (named, with what to do).
    pub fn load(&self) -> io::Result<Vec<HolderRecord>> {
        let mut records = self.load_single_file()?;
        let entries = match std::fs::read_dir(&self.records) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(records),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", self.records.display()),
                ))
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                io::Error::new(e.kind(), format!("{}: {e}", self.records.display()))
            })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue; // temp files, strays
            }
            names.push(entry.path());
        }
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let record: HolderRecord =
                serde_json::from_str(&text).map_err(|e| not_a_record(&path, e))?;
            records.retain(|r| r.allocation_id != record.allocation_id);
            records.push(record);
        }
        Ok(records)
    }

    fn load_single_file(&self) -> io::Result<Vec<HolderRecord>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", self.path.display()),
                ))
            }
        };
        serde_json::from_str::<StateFile>(&text)
            .map(|s| s.holders)
            .map_err(|e| not_a_record(&self.path, e))
    }

    /// Write (or replace) the record of one allocation, atomically.
    ///
    /// # Errors
    ///
    /// The write failing, naming the file.
    pub fn save_one(&self, record: &HolderRecord) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.records)
        {
            return Err(io::Error::new(
                e.kind(),
                format!("creating {}: {e}", self.records.display()),
            ));
        }
        let text = serde_json::to_vec(record).map_err(io::Error::other)?;
        let temp = format!(".{}.{}.tmp", record.allocation_id, std::process::id());
        write_atomically(&self.record_path(&record.allocation_id), &temp, &text)
    }

    /// Remove the record of one allocation (none is fine).
    ///
    /// # Errors
    ///
    /// The unlink failing otherwise, naming the file.
    pub fn remove_one(&self, allocation_id: &str) -> io::Result<()> {
        let path = self.record_path(allocation_id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
                e.kind(),
                format!("removing {}: {e}", path.display()),
            )),
            _ => Ok(()),
        }
    }

    /// Replace every record with `holders`, in the older single-file format
    /// (what nodeinits before per-allocation records wrote; kept for
    /// downgrade tests and tooling).
    ///
    /// # Errors
    ///
    /// The write failing, naming the file.
    pub fn save(&self, holders: &[HolderRecord]) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)?;
        let text = serde_json::to_vec_pretty(&StateFile {
            holders: holders.to_vec(),
        })
        .map_err(io::Error::other)?;
        let temp = format!(".{STATE_FILE}.{}.tmp", std::process::id());
        write_atomically(&self.path, &temp, &text)
    }

    /// Move the older single file's records to per-allocation ones (after
    /// adoption: `adopted` are the records still live), then remove it.
    ///
    /// # Errors
    ///
    /// A write or the unlink failing; the single file stays then.
    fn migrate(&self, adopted: &[HolderRecord]) -> io::Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        for record in adopted {
            self.save_one(record)?;
        }
        std::fs::remove_file(&self.path)
            .map_err(|e| io::Error::new(e.kind(), format!("removing {}: {e}", self.path.display())))
    }
}

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`).
///
/// # Errors
///
/// No such process, or an unreadable stat file.
pub fn start_time(pid: i32) -> io::Result<u64> {
    let stat = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map_err(|e| io::Error::other(format!("/proc/{pid}/stat: {e}")))?;
    if stat.state == 'Z' {
        return Err(io::Error::other(format!("process {pid} is a zombie")));
    }
    Ok(stat.starttime)
}

/// A holder whose parent is the keeper: it survives its worker.
#[derive(Debug)]
pub struct PersistentHolder {
    pid: Pid,
    start_time: u64,
    pidfd: Option<OwnedFd>,
    namespaces: HeldNamespaces,
    /// A new holder until it is recorded: it exits by itself if this is
    /// dropped uncommitted (`None` once committed, or adopted).
    uncommitted: Option<HolderCommit>,
}

impl PersistentHolder {
    /// Clone a holder (child of the keeper) in new `namespaces`, open their
    /// FDs and give its mount namespace `propagation` (the uenv bind is
    /// [`Holder::attach_uenv`]'s).
    ///
    /// # Errors
    ///
    /// The failing step and the kernel's reason; the holder is gone then.
    pub fn spawn(namespaces: &[NamespaceType], propagation: Propagation) -> io::Result<Self> {
        let flags = namespaces
            .iter()
            .fold(CloneFlags::CLONE_PARENT, |acc, ns| acc | clone_flag(*ns));
        // The holder cuts its mount namespace's propagation itself, before
        // it reports ready; it is cloned by a single-threaded spawner
        // process, not copied from this multi-threaded worker.
        let propagation = namespaces
            .contains(&NamespaceType::Mount)
            .then_some(propagation);
        let mut spawned = clone_persistent_holder(flags, propagation)?;
        // Opened while the holder starts; used only once it is ready.
        let raw = spawned.pid.as_raw();
        let opened = start_time(raw)
            .and_then(|started| Ok((started, HeldNamespaces::open(raw, namespaces)?)));
        let (start_time, namespaces) = match (spawned.wait_ready(), opened) {
            (Ok(()), Ok(opened)) => opened,
            // The holder's own failure explains the others.
            (Err(e), _) | (Ok(()), Err(e)) => {
                let _ = nodeinit_sys::pidfd::kill(spawned.pidfd.as_fd());
                return Err(e);
            }
        };
        Ok(Self {
            pid: spawned.pid,
            start_time,
            pidfd: Some(spawned.pidfd),
            namespaces,
            uncommitted: Some(spawned.commit),
        })
    }

    /// Adopt the holder `record` names, if it is still that very process.
    ///
    /// # Errors
    ///
    /// It is gone, its pid belongs to another process now (start time
    /// differs), or a namespace cannot be opened.
    pub fn adopt(record: &HolderRecord) -> io::Result<Self> {
        let before = start_time(record.pid)?;
        if before != record.start_time {
            return Err(io::Error::other(format!(
                "pid {} was reused (start time {before}, recorded {})",
                record.pid, record.start_time
            )));
        }
        let pidfd = nodeinit_sys::pidfd::open(record.pid)?;
        // The pidfd now pins whatever has the pid: make sure it is still ours.
        let after = start_time(record.pid)?;
        if after != record.start_time {
            return Err(io::Error::other(format!(
                "pid {} was reused while adopting it",
                record.pid
            )));
        }
        let mut holder = Self {
            pid: Pid::from_raw(record.pid),
            start_time: record.start_time,
            pidfd: Some(pidfd),
            namespaces: HeldNamespaces::default(),
            uncommitted: None,
        };
        holder.open_namespaces(&record.namespaces)?;
        // Forget it without killing it if adoption fails from here on.
        Ok(holder)
    }

    fn open_namespaces(&mut self, namespaces: &[NamespaceType]) -> io::Result<()> {
        self.namespaces = HeldNamespaces::open(self.pid.as_raw(), namespaces)?;
        Ok(())
    }

    /// Its pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Its start time.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Let a new holder live on by itself: call once it is recorded (until
    /// then it exits by itself when this worker dies). Adopted holders
    /// were committed already.
    ///
    /// # Errors
    ///
    /// The holder is gone.
    pub fn commit(&self) -> io::Result<()> {
        self.uncommitted
            .as_ref()
            .map_or(Ok(()), HolderCommit::commit)
    }

    /// The FD of namespace `ns`.
    pub fn fd(&self, ns: NamespaceType) -> Option<BorrowedFd<'_>> {
        self.namespaces.fd(ns)
    }

    /// Fresh duplicates of all namespace FDs, in order.
    ///
    /// # Errors
    ///
    /// `dup` failing.
    pub fn duplicate_fds(&self) -> io::Result<Vec<OwnedFd>> {
        self.namespaces.duplicate_fds()
    }

    /// Kill the holder and wait (on its pidfd) until it has exited; the
    /// keeper reaps it.
    ///
    /// # Errors
    ///
    /// `pidfd_send_signal` failing.
    pub fn terminate(mut self) -> io::Result<()> {
        self.kill_and_wait()
    }

    /// Forget the process without killing it (it belongs to the next worker).
    pub fn forget(mut self) {
        self.pidfd = None;
        self.namespaces.clear();
    }

    fn kill_and_wait(&mut self) -> io::Result<()> {
        // Closed after the exit, off this path: then the holder's exit is
        // not also its namespaces' teardown.
        let namespaces = std::mem::take(&mut self.namespaces);
        let Some(pidfd) = self.pidfd.take() else {
            return Ok(());
        };
        nodeinit_sys::pidfd::kill(pidfd.as_fd())
            .map_err(|e| io::Error::other(format!("cannot kill holder {}: {e}", self.pid)))?;
        let mut fds = [nix::poll::PollFd::new(
            pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        // A SIGKILLed process exits at once unless stuck in the kernel.
        if matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)),
            Ok(1)
        ) {
            namespaces.close_after_exit();
        }
        Ok(())
    }
}

impl Drop for PersistentHolder {
    fn drop(&mut self) {
        if let Err(e) = self.kill_and_wait() {
            tracing::error!(holder = %self.pid, error = %e, "namespace holder not cleaned up");
        }
    }
}

/// A holder of either kind, as an allocation keeps it.
#[derive(Debug)]
pub enum Holder {
    /// Tied to the thread that created it (`nodeinit_namespaces::holder`).
    Tied(nodeinit_namespaces::holder::NamespaceHolder),
    /// A child of the keeper, persisted and adoptable.
    Persistent(PersistentHolder),
}

impl Holder {
    /// Its pid.
    pub fn pid(&self) -> Pid {
        match self {
            Self::Tied(h) => h.pid(),
            Self::Persistent(h) => h.pid(),
        }
    }

    /// Fresh duplicates of its namespace FDs.
    ///
    /// # Errors
    ///
    /// `dup` failing.
    pub fn duplicate_fds(&self) -> io::Result<Vec<OwnedFd>> {
        match self {
            Self::Tied(h) => h.duplicate_fds(),
            Self::Persistent(h) => h.duplicate_fds(),
        }
    }

    /// The FD of namespace `ns`, if held.
    pub fn fd(&self, ns: NamespaceType) -> Option<BorrowedFd<'_>> {
        match self {
            Self::Tied(h) => h.fd(ns),
            Self::Persistent(h) => h.fd(ns),
        }
    }

    /// Make a new holder, tied or persistent, in `namespaces`, its mount
    /// namespace (if any) given `propagation`; no uenv bind yet
    /// ([`Holder::attach_uenv`]).
    ///
    /// # Errors
    ///
    /// The failing step and the kernel's reason; the holder is gone then.
    pub fn spawn(
        persistent: bool,
        namespaces: &[NamespaceType],
        propagation: Propagation,
    ) -> io::Result<Self> {
        if persistent {
            PersistentHolder::spawn(namespaces, propagation).map(Self::Persistent)
        } else {
            nodeinit_namespaces::holder::NamespaceHolder::spawn_prepared(
                namespaces,
                propagation,
                None,
            )
            .map(Self::Tied)
        }
    }

    /// Mount the uenv `bind` in its mount namespace.
    ///
    /// # Errors
    ///
    /// It holds no mount namespace, or as
    /// [`nodeinit_namespaces::mount_namespace::attach_uenv`].
    pub fn attach_uenv(&self, bind: &UenvBind) -> io::Result<()> {
        let mnt = self
            .fd(NamespaceType::Mount)
            .ok_or_else(|| io::Error::other("a uenv bind needs a Mount namespace"))?;
        nodeinit_namespaces::mount_namespace::attach_uenv(mnt, bind)
    }

    /// Make `mount_point` a directory in its mount namespace ahead of a
    /// uenv bind there (a spare's shadow).
    ///
    /// # Errors
    ///
    /// It holds no mount namespace, or as
    /// [`nodeinit_namespaces::mount_namespace::prepare_mount_point`].
    pub fn prepare_mount_point(&self, mount_point: &Path) -> io::Result<()> {
        let mnt = self
            .fd(NamespaceType::Mount)
            .ok_or_else(|| io::Error::other("a uenv mount point needs a Mount namespace"))?;
        nodeinit_namespaces::mount_namespace::prepare_mount_point(mnt, mount_point)
    }

    /// Kill it.
    ///
    /// # Errors
    ///
    /// As the holder's own `terminate`.
    pub fn terminate(self) -> io::Result<()> {
        match self {
            Self::Tied(h) => h.terminate(),
            Self::Persistent(h) => h.terminate(),
        }
    }
}

/// Holder persistence of one backend: where, and whether its records were
/// adopted yet (lazily, at the first request: a constructor must not act —
/// `nodeinit check` constructs the backend too).
#[derive(Debug)]
pub struct Persistence {
    store: HolderStore,
    adopted: std::sync::Once,
}

type Slots = std::sync::Mutex<
    std::collections::HashMap<
        nodeinit_contracts::AllocationId,
        std::sync::Arc<std::sync::Mutex<Option<crate::allocation::Allocation>>>,
    >,
>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Persistence {
    /// Persistence in `state_dir`, when this process is a keeper's worker.
    pub fn if_enabled(state_dir: &Path) -> Option<Self> {
        persistence_enabled().then(|| Self {
            store: HolderStore::new(state_dir),
            adopted: std::sync::Once::new(),
        })
    }

    /// Adopt the holders of the previous worker into `slots` (once).
    pub(crate) fn adopt_once(
        &self,
        slots: &Slots,
        mounts: Option<&std::sync::Arc<dyn nodeinit_plugin_api::AllocationMounts>>,
    ) {
        self.adopted.call_once(|| {
            let records = match self.store.load() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "previous holders not adopted");
                    return;
                }
            };
            let mut slots = lock(slots);
            let mut adopted = Vec::new();
            for mut record in records {
                let Ok(id) = nodeinit_contracts::AllocationId::parse(&record.allocation_id) else {
                    continue;
                };
                match PersistentHolder::adopt(&record) {
                    Ok(holder) => {
                        tracing::info!(allocation = %id, holder = record.pid, "holder adopted");
                        let uenv = match (record.uenv.clone(), mounts) {
                            (Some(handle), Some(mounts)) => Some(crate::allocation::uenv_reference(
                                std::sync::Arc::clone(mounts),
                                &id,
                                handle,
                            )),
                            _ => None,
                        };
                        let owner_uid = record.owner_uid.unwrap_or_else(|| {
                            tracing::warn!(allocation = %id, holder = record.pid, "holder record has no owner (written by an older nodeinit); the allocation is adopted as root's: only root may request or end it");
                            0
                        });
                        let allocation = crate::allocation::Allocation {
                            id: id.clone(),
                            owner_uid,
                            namespaces: record.namespaces.clone(),
                            uenv_image: record.uenv_image.clone(),
                            response: record.response.clone(),
                            resources: nodeinit_namespaces::allocation::Allocation::new(id.to_string())
                                .with_uenv(uenv)
                                .with_holder(Holder::Persistent(holder)),
                        };
                        slots.insert(id, std::sync::Arc::new(std::sync::Mutex::new(Some(allocation))));
                        record.owner_uid = Some(owner_uid);
                        adopted.push(record);
                    }
                    Err(e) => {
                        tracing::warn!(allocation = %id, holder = record.pid, error = %e, "holder not adopted; the allocation is gone");
                        self.forget(id.as_str());
                    }
                }
            }
            if let Err(e) = self.store.migrate(&adopted) {
                tracing::error!(error = %e, "older holder state file not converted to per-allocation records; it is read again at the next start");
            }
        });
    }

    /// Write the record of `allocation` (one file: the cost does not grow
    /// with the number of live allocations).
    pub(crate) fn record(&self, allocation: &crate::allocation::Allocation) {
        let Some(Holder::Persistent(h)) = allocation.holder() else {
            return;
        };
        let record = HolderRecord {
            allocation_id: allocation.id.to_string(),
            pid: h.pid().as_raw(),
            start_time: h.start_time(),
            namespaces: allocation.namespaces.clone(),
            uenv_image: allocation.uenv_image.clone(),
            uenv: allocation.resources.uenv().map(|u| u.handle().clone()),
            response: allocation.response.clone(),
            owner_uid: Some(allocation.owner_uid),
        };
        if let Err(e) = self.store.save_one(&record) {
            tracing::error!(allocation = %allocation.id, error = %e, "holder record not written; a new worker will not adopt this allocation");
        }
        // Recorded (or not recordable: it serves this worker all the
        // same): the holder may now outlive the worker.
        if let Err(e) = h.commit() {
            tracing::error!(allocation = %allocation.id, holder = %h.pid(), error = %e, "new holder did not stay");
        }
    }

    /// Remove the record of an allocation that ended.
    pub(crate) fn forget(&self, allocation_id: &str) {
        if let Err(e) = self.store.remove_one(allocation_id) {
            tracing::error!(allocation = allocation_id, error = %e, "holder record not removed; a new worker will find its holder gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_of(pid: i32, start_time: u64) -> HolderRecord {
        HolderRecord {
            allocation_id: "a1".into(),
            pid,
            start_time,
            namespaces: vec![NamespaceType::Net],
            uenv_image: None,
            uenv: None,
            response: NamespaceResponse {
                allocation_id: "a1".into(),
                fd_types: vec![NamespaceType::Net],
                uenv_mount_path: None,
            },
            owner_uid: Some(1000),
        }
    }

    #[test]
    fn a_reused_pid_is_never_adopted() {
        // This very process stands for "a process that now has the pid".
        let me = i32::try_from(std::process::id()).unwrap();
        let real = start_time(me).unwrap();
        let err = PersistentHolder::adopt(&record_of(me, real + 1)).unwrap_err();
        assert!(err.to_string().contains("was reused"), "{err}");
        // With the right start time it is adopted (and forgotten, not killed).
        let adopted = PersistentHolder::adopt(&record_of(me, real)).unwrap();
        let fds = adopted.duplicate_fds().map(|f| f.len());
        adopted.forget();
        assert_eq!(fds.unwrap(), 1);
    }

    #[test]
    fn a_gone_pid_is_not_adopted() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        let err = PersistentHolder::adopt(&record_of(pid, 1)).unwrap_err();
        assert!(
            err.to_string().contains(&format!("/proc/{pid}/stat")),
            "{err}"
        );
    }

    #[test]
    fn one_record_per_allocation_and_the_older_file_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let store = HolderStore::new(dir.path());
        let mut b = record_of(43, 8);
        b.allocation_id = "b1".into();
        store.save(&[record_of(42, 7)]).unwrap();
        store.save_one(&b).unwrap();
        let ids = |store: &HolderStore| {
            let mut ids: Vec<_> = store
                .load()
                .unwrap()
                .into_iter()
                .map(|r| (r.allocation_id, r.pid))
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&store), [("a1".into(), 42), ("b1".into(), 43)]);
        let record_file = dir.path().join(RECORDS_DIR).join("b1.json");
        assert!(record_file.is_file());
        // Migration writes the adopted ones (a1) as records, drops the file.
        store.migrate(&[record_of(42, 7)]).unwrap();
        assert!(!dir.path().join(STATE_FILE).exists());
        assert_eq!(ids(&store), [("a1".into(), 42), ("b1".into(), 43)]);
        store.remove_one("b1").unwrap();
        store.remove_one("b1").unwrap();
        assert_eq!(ids(&store), [("a1".into(), 42)]);
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join(RECORDS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a1.json"]);
        std::fs::write(dir.path().join(RECORDS_DIR).join("c1.json"), "{").unwrap();
        let err = store.load().unwrap_err();
        assert!(
            err.to_string()
                .contains("c1.json is not a holder state file"),
            "{err}"
        );
    }

    #[test]
    fn the_store_round_trips_and_names_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = HolderStore::new(dir.path());
        assert!(store.load().unwrap().is_empty());
        store.save(&[record_of(42, 7)]).unwrap();
        let back = store.load().unwrap();
        assert_eq!(
            back.iter()
                .map(|r| (r.allocation_id.as_str(), r.pid, r.start_time, r.owner_uid))
                .collect::<Vec<_>>(),
            [("a1", 42, 7, Some(1000))]
        );
        // A record of the older format (no owner) still loads, ownerless.
        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"holders":[{"allocation_id":"a1","pid":42,"start_time":7,"namespaces":["Net"],
                "uenv_image":null,"uenv":null,"response":{"allocation_id":"a1","fd_types":["Net"],
                "uenv_mount_path":null}}]}"#,
        )
        .unwrap();
        let back = store.load().unwrap();
        assert_eq!(back[0].owner_uid, None, "{back:?}");
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let err = store.load().unwrap_err();
        assert!(
            err.to_string().contains("is not a holder state file"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
