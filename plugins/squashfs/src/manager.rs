//! [`SquashfsManager`]: the `hpc_node::MountManager` of uenv squashfs images.
//!
//! Owns the lock that serialises every change to the reference table, the
//! decisions *when* to mount (first reference) and unmount (hold expiry,
//! force), and keeping the state file in step with the table. Mounting under
//! the one lock is deliberate: it is what makes concurrent first acquires of
//! an image mount it exactly once, and mounting a squashfs takes milliseconds,
//! so serialising mounts of different images costs nothing that matters at
//! boot. It must never validate images or speak ioctl itself (see
//! [`crate::image`], [`crate::mounting`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hpc_node::{MountError, MountHandle, MountManager};
use nodeinit_plugin_api::AllocationMounts;

use crate::beneath::{CheckedDir, DirError};
use crate::escape;
use crate::image::{ImageLocator, MountName};
use crate::loop_device::AttachMethod;
use crate::mountinfo;
use crate::mounting;
use crate::options::{ManagerConfig, MAX_HOLD_TIME_SECS};
use crate::state_file::StateFile;
use crate::table::{Entry, Holder, ReleaseRefused, Table};
use nodeinit_contracts::AllocationId;
use nodeinit_sys::deadline::{self, Deadline};

/// Delay before retrying an unmount the kernel refused.
const UNMOUNT_RETRY: Duration = Duration::from_secs(5);

/// Refcounted loop+squashfs mounts below `mount_base`, surviving a restart
/// through the state file and [`MountManager::reconstruct_state`].
///
/// Dropping the manager stops its hold timer but leaves mounts in place: they
/// belong to allocations that outlive this process.
pub struct SquashfsManager {
    shared: Arc<Shared>,
    timer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SquashfsManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SquashfsManager")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: ManagerConfig,
    locator: ImageLocator,
    state_file: StateFile,
    attach_method: AttachMethod,
    inner: Mutex<Inner>,
    /// Wakes the hold timer thread: a deadline was armed, or shutdown.
    timer_wakeup: Condvar,
    /// Signalled after every unmount, for [`SquashfsManager::wait_unmounted`].
    unmounted: Condvar,
}

#[derive(Default)]
struct Inner {
    table: Table,
    /// `mount_base`, opened and checked at the first mount.
    base: Option<Arc<CheckedDir>>,
    /// Bytes of the last successful state write, to skip identical rewrites.
    last_written: Option<Vec<u8>>,
    shutting_down: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the table half-changed:
        // every mutation is a single call on `Table`. Keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn persist(&self, inner: &mut Inner) -> std::io::Result<()> {
        let bytes = StateFile::encode(&inner.table.persisted())?;
        if inner.last_written.as_deref() == Some(bytes.as_slice()) {
            return Ok(());
        }
        self.state_file.write_bytes(&bytes)?;
        inner.last_written = Some(bytes);
        Ok(())
    }

    fn hold_deadline(&self) -> Instant {
        let now = Instant::now();
        // `ManagerConfig` built by hand may skip the option cap: clamp, never panic.
        now.checked_add(self.config.hold_time)
            .or_else(|| now.checked_add(Duration::from_secs(MAX_HOLD_TIME_SECS)))
            .unwrap_or(now)
    }

    fn mount_base(&self, inner: &Inner) -> PathBuf {
        if let Some(base) = &inner.base {
            return base.canonical.clone();
        }
        // mountinfo shows canonical paths; the base may not exist yet at startup.
        self.config
            .mount_base
            .canonicalize()
            .unwrap_or_else(|_| self.config.mount_base.clone())
    }

    /// `mount_base` as a checked descriptor, created (0755) and opened once.
    fn base_dir(&self, inner: &mut Inner) -> Result<Arc<CheckedDir>, DirError> {
        if let Some(base) = &inner.base {
            // Still linked into the tree? An operator may have removed and
            // recreated it; mkdirat in a deleted directory would fail forever.
            let alive = rustix::fs::fstat(base.fd()).is_ok_and(|st| st.st_nlink > 0);
            if alive {
                return Ok(Arc::clone(base));
            }
        }
        let base = Arc::new(CheckedDir::open(
            "mount_base",
            &self.config.mount_base,
            true,
        )?);
        inner.base = Some(Arc::clone(&base));
        Ok(base)
    }

    /// The table key for a path given back by a caller: exact, else resolved.
    fn key_for(&self, inner: &Inner, requested: &str) -> PathBuf {
        let exact = Path::new(requested);
        if inner.table.contains(exact) {
            return exact.to_path_buf();
        }
        self.locator
            .locate(requested)
            .unwrap_or_else(|_| exact.to_path_buf())
    }
}

impl SquashfsManager {
    /// A manager for `config`. Touches nothing on the system (no directory is
    /// created before the first mount), so `nodeinit check` may construct it.
    ///
    /// # Errors
    ///
    /// The hold timer thread could not be started.
    pub fn new(config: ManagerConfig) -> Result<Self, MountError> {
        Self::with_attach_method(config, AttachMethod::Configure)
    }

    /// As [`SquashfsManager::new`], binding loop devices with `method`
    /// (tests use it to exercise the pre-5.8 fallback on a new kernel).
    ///
    /// # Errors
    ///
    /// The hold timer thread could not be started.
    pub fn with_attach_method(
        config: ManagerConfig,
        attach_method: AttachMethod,
    ) -> Result<Self, MountError> {
        let shared = Arc::new(Shared {
            locator: ImageLocator::new(config.image_dirs.clone()),
            state_file: StateFile::in_dir(&config.state_dir),
            config,
            attach_method,
            inner: Mutex::new(Inner::default()),
            timer_wakeup: Condvar::new(),
            unmounted: Condvar::new(),
        });
        let timer_shared = Arc::clone(&shared);
        let timer = std::thread::Builder::new()
            .name("squashfs-hold".to_owned())
            .spawn(move || run_hold_timer(&timer_shared))
            .map_err(|e| {
                MountError::Io(std::io::Error::new(
                    e.kind(),
                    format!("starting the squashfs hold timer thread failed: {e}"),
                ))
            })?;
        Ok(Self {
            shared,
            timer: Some(timer),
        })
    }

    /// The validated configuration.
    #[must_use]
    pub fn config(&self) -> &ManagerConfig {
        &self.shared.config
    }

    /// Path of the state file.
    #[must_use]
    pub fn state_file_path(&self) -> &Path {
        self.shared.state_file.path()
    }

    /// Current total references to `image_path` (as given to acquire, or the
    /// canonical path of a handle); `None` when it is not mounted by this manager.
    #[must_use]
    pub fn refcount(&self, image_path: &str) -> Option<u64> {
        let inner = self.shared.lock();
        let key = self.shared.key_for(&inner, image_path);
        inner.table.get(&key).map(Entry::refcount)
    }

    /// Whether a hold timer runs for `image_path`.
    #[must_use]
    pub fn hold_pending(&self, image_path: &str) -> bool {
        let inner = self.shared.lock();
        let key = self.shared.key_for(&inner, image_path);
        inner
            .table
            .get(&key)
            .is_some_and(|e| e.hold_until().is_some())
    }

    /// Block until `image_path` is no longer mounted by this manager (hold
    /// expiry or force), at most `timeout`. Returns whether it was unmounted.
    #[must_use]
    pub fn wait_unmounted(&self, image_path: &str, timeout: Duration) -> bool {
        let inner = self.shared.lock();
        let key = self.shared.key_for(&inner, image_path);
        let (_inner, unmounted) = deadline::wait_until(
            &self.shared.unmounted,
            inner,
            Some(Deadline::after(timeout)),
            |inner| !inner.table.contains(&key),
        );
        unmounted
    }

    fn acquire(&self, holder: &Holder, requested: &str) -> Result<MountHandle, MountError> {
        // Fast path: a caller handing back the canonical path of a mounted image
        // needs no file access; the mount already uses the file validated first.
        {
            let mut inner = self.shared.lock();
            let exact = Path::new(requested);
            if inner.table.contains(exact) {
                return self.add_reference(&mut inner, exact, holder, requested);
            }
        }
        let image =
            self.shared
                .locator
                .validate(requested)
                .map_err(|e| MountError::MountFailed {
                    image_path: escape::text(requested),
                    reason: e.to_string(),
                })?;
        let mut inner = self.shared.lock();
        if !inner.table.contains(&image.path) {
            let base = self
                .shared
                .base_dir(&mut inner)
                .map_err(|e| MountError::MountFailed {
                    image_path: escape::text(requested),
                    reason: e.to_string(),
                })?;
            self.mount_new(&mut inner, &image, &base, requested)?;
        }
        self.add_reference(&mut inner, &image.path, holder, requested)
    }

    fn mount_new(
        &self,
        inner: &mut Inner,
        image: &crate::image::ValidatedImage,
        base: &CheckedDir,
        requested: &str,
    ) -> Result<(), MountError> {
        let mount_point = &base.canonical.join(image.mount_name.as_str());
        let failed = |reason: String| MountError::MountFailed {
            image_path: escape::text(requested),
            reason,
        };
        if let Some(other) = inner.table.image_at(mount_point) {
            return Err(failed(format!(
                "mount point {} already holds {} (same mount name); rename one of the images",
                escape::path(mount_point),
                escape::path(other)
            )));
        }
        let existing = mounting::kernel_mount_at(mount_point).map_err(|e| failed(e.to_string()))?;
        let mount_fd = match existing {
            Some((entry, Some(backing)))
                if entry.fs_type == "squashfs" && backing == image.path =>
            {
                tracing::info!(image = %escape::path(&image.path), mount_point = %escape::path(mount_point),
                    "adopting the existing mount of this image (left by an earlier run)");
                None
            }
            Some((entry, _)) => {
                return Err(failed(format!(
                    "mount point {} is already in use by a {} mount of {}; unmount it or rename the image",
                    escape::path(mount_point),
                    entry.fs_type,
                    escape::text(&entry.source)
                )));
            }
            None => {
                let mounted = mounting::mount_image(
                    image,
                    base,
                    &image.mount_name,
                    self.shared.attach_method,
                )
                .map_err(failed)?;
                tracing::info!(image = %escape::path(&image.path), mount_point = %escape::path(mount_point),
                    device = %escape::path(&mounted.device), "mounted uenv image");
                mounted.mount_fd.map(Arc::new)
            }
        };
        let mut entry = Entry::new(mount_point.to_path_buf());
        entry.mount_fd = mount_fd;
        inner.table.insert(image.path.clone(), entry);
        Ok(())
    }

    fn add_reference(
        &self,
        inner: &mut Inner,
        image: &Path,
        holder: &Holder,
        requested: &str,
    ) -> Result<MountHandle, MountError> {
        inner.table.add_reference(image, holder);
        if let Err(e) = self.shared.persist(inner) {
            // Without a record the reference could not be recounted after a
            // crash: refuse it rather than hand out an unattributable mount.
            let _ = inner
                .table
                .remove_reference(image, holder, self.shared.hold_deadline());
            self.shared.timer_wakeup.notify_all();
            return Err(MountError::MountFailed {
                image_path: escape::text(requested),
                reason: format!("recording the reference failed: {e}"),
            });
        }
        let mount_point = inner
            .table
            .get(image)
            .map(|e| e.mount_point.display().to_string())
            .unwrap_or_default();
        Ok(MountHandle {
            image_path: image.display().to_string(),
            mount_point,
        })
    }

    fn release(&self, holder: &Holder, image_path: &str) -> Result<(), MountError> {
        let mut inner = self.shared.lock();
        let key = self.shared.key_for(&inner, image_path);
        let inconsistency = |detail: String| MountError::RefcountInconsistency {
            image_path: escape::text(image_path),
            detail,
        };
        let left = inner
            .table
            .remove_reference(&key, holder, self.shared.hold_deadline())
            .map_err(|refused| match refused {
                ReleaseRefused::UnknownImage => inconsistency(match holder {
                    Holder::Anonymous => {
                        "release of an image this manager has not mounted: no reference is held, the count stays 0"
                            .to_owned()
                    }
                    Holder::Allocation(id) => format!(
                        "allocation {id} holds no reference to this image: this manager has not mounted it (the count stays 0)"
                    ),
                }),
                ReleaseRefused::NotHeld { refcount } => inconsistency(match holder {
                    Holder::Anonymous => format!(
                        "release without an anonymous reference held (refcount {refcount}, unchanged)"
                    ),
                    Holder::Allocation(id) => format!(
                        "allocation {id} holds no reference to this image (refcount {refcount}, unchanged)"
                    ),
                }),
            })?;
        if left == 0 {
            self.shared.timer_wakeup.notify_all();
        }
        if let Err(e) = self.shared.persist(&mut inner) {
            // The release itself happened; the next successful write catches up.
            tracing::error!(error = %e, "squashfs state file not updated after release");
        }
        Ok(())
    }
}

impl Drop for SquashfsManager {
    fn drop(&mut self) {
        self.shared.lock().shutting_down = true;
        self.shared.timer_wakeup.notify_all();
        if let Some(timer) = self.timer.take() {
            let _ = timer.join();
        }
    }
}

fn run_hold_timer(shared: &Shared) {
    let mut inner = shared.lock();
    loop {
        if inner.shutting_down {
            return;
        }
        let now = Instant::now();
        let expired = inner.table.expired(now);
        if !expired.is_empty() {
            for image in expired {
                let Some((mount_point, mount_fd)) = inner
                    .table
                    .get(&image)
                    .map(|e| (e.mount_point.clone(), e.mount_fd.clone()))
                else {
                    continue;
                };
                match mounting::unmount_detached(&mount_point, mount_fd.as_deref()) {
                    Ok(()) => {
                        inner.table.remove(&image);
                        tracing::info!(image = %escape::path(&image), mount_point = %escape::path(&mount_point),
                            "hold time over, unmounted");
                    }
                    Err(reason) => {
                        tracing::error!(image = %escape::path(&image), %reason, "unmount after hold failed; retrying");
                        inner.table.rearm(&image, now + UNMOUNT_RETRY);
                    }
                }
            }
            if let Err(e) = shared.persist(&mut inner) {
                tracing::error!(error = %e, "squashfs state file not updated after unmount");
            }
            shared.unmounted.notify_all();
        }
        inner = match inner.table.next_deadline() {
            None => shared
                .timer_wakeup
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner),
            Some(deadline) => {
                shared
                    .timer_wakeup
                    .wait_timeout(inner, deadline.saturating_duration_since(now))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
    }
}

impl MountManager for SquashfsManager {
    fn acquire_mount(&self, image_path: &str) -> Result<MountHandle, MountError> {
        self.acquire(&Holder::Anonymous, image_path)
    }

    fn release_mount(&self, handle: &MountHandle) -> Result<(), MountError> {
        self.release(&Holder::Anonymous, &handle.image_path)
    }

    fn force_unmount(&self, image_path: &str) -> Result<(), MountError> {
        let mut inner = self.shared.lock();
        let key = self.shared.key_for(&inner, image_path);
        let mount_point = match inner.table.get(&key) {
            Some(entry) => Some((entry.mount_point.clone(), entry.mount_fd.clone())),
            None => self
                .untracked_kernel_mount(&inner, &key)
                .map(|mount_point| (mount_point, None)),
        };
        let Some((mount_point, mount_fd)) = mount_point else {
            tracing::debug!(image = %escape::text(image_path), "force_unmount: nothing mounted");
            return Ok(());
        };
        mounting::unmount_detached(&mount_point, mount_fd.as_deref()).map_err(|reason| {
            MountError::UnmountFailed {
                mount_point: escape::path(&mount_point),
                reason,
            }
        })?;
        inner.table.remove(&key);
        tracing::warn!(image = %escape::path(&key), mount_point = %escape::path(&mount_point),
            "force-unmounted; references dropped");
        if let Err(e) = self.shared.persist(&mut inner) {
            tracing::error!(error = %e, "squashfs state file not updated after force unmount");
        }
        self.shared.unmounted.notify_all();
        Ok(())
    }

    fn reconstruct_state(&self, active_allocations: &[String]) -> Result<(), MountError> {
        let active: BTreeSet<AllocationId> = active_allocations
            .iter()
            .filter_map(|id| match AllocationId::parse(id) {
                Ok(id) => Some(id),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring invalid active allocation id");
                    None
                }
            })
            .collect();
        let mut inner = self.shared.lock();
        let persisted = self.shared.state_file.load()?;
        let kernel = mountinfo::read()?;
        let hold_until = self.shared.hold_deadline();
        let mut table = Table::default();
        let mount_base = self.shared.mount_base(&inner);
        for mount in mountinfo::squashfs_mounts_below(&kernel, &mount_base) {
            let Some(backing) = mounting::backing_of(&mount.source)? else {
                tracing::warn!(mount_point = %escape::path(&mount.mount_point), source = %escape::text(&mount.source),
                    "squashfs mount below mount_base is not on a bound loop device; not managed");
                continue;
            };
            let image = strip_deleted(&backing);
            if table.contains(&image) {
                tracing::warn!(image = %escape::path(&image), mount_point = %escape::path(&mount.mount_point),
                    "image mounted twice below mount_base; managing the first mount only");
                continue;
            }
            let recorded = persisted
                .mounts
                .iter()
                .find(|m| Path::new(&m.image) == image);
            let holders: BTreeMap<AllocationId, u32> = recorded
                .map(|m| {
                    m.holders
                        .iter()
                        .filter_map(|(id, &n)| AllocationId::parse(id).ok().map(|id| (id, n)))
                        .filter(|(id, _)| active.contains(id))
                        .collect()
                })
                .unwrap_or_default();
            let entry = Table::recovered_entry(mount.mount_point.clone(), holders, hold_until);
            tracing::info!(image = %escape::path(&image), mount_point = %escape::path(&mount.mount_point),
                refcount = entry.refcount(), "recovered mount");
            table.insert(image, entry);
        }
        for lost in persisted
            .mounts
            .iter()
            .filter(|m| !table.contains(Path::new(&m.image)))
        {
            tracing::warn!(image = %escape::text(&lost.image), mount_point = %escape::text(&lost.mount_point), holders = ?lost.holders,
                "recorded as mounted but the kernel has no such mount; its references are dropped");
        }
        inner.table = table;
        inner.last_written = None;
        self.shared.persist(&mut inner)?;
        self.shared.timer_wakeup.notify_all();
        self.shared.unmounted.notify_all();
        Ok(())
    }
}

impl SquashfsManager {
    /// The mount point of an image this manager does not track, if the
    /// kernel has it mounted there from that very image (a previous run).
    fn untracked_kernel_mount(&self, inner: &Inner, image: &Path) -> Option<PathBuf> {
        let name =
            MountName::for_image(image, self.shared.locator.primary_dir().as_deref()).ok()?;
        let mount_point = self.shared.mount_base(inner).join(name.as_str());
        match mounting::kernel_mount_at(&mount_point) {
            Ok(Some((entry, Some(backing))))
                if entry.fs_type == "squashfs" && strip_deleted(&backing) == image =>
            {
                Some(mount_point)
            }
            _ => None,
        }
    }
}

/// sysfs appends ` (deleted)` to a backing file that was unlinked.
fn strip_deleted(backing: &Path) -> PathBuf {
    match backing.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => backing.to_path_buf(),
    }
}

impl AllocationMounts for SquashfsManager {
    fn acquire_for(
        &self,
        allocation_id: &str,
        image_path: &str,
    ) -> Result<MountHandle, MountError> {
        let id = AllocationId::parse(allocation_id).map_err(|e| MountError::MountFailed {
            image_path: escape::text(image_path),
            reason: e.to_string(),
        })?;
        self.acquire(&Holder::Allocation(id), image_path)
    }

    fn release_for(&self, allocation_id: &str, handle: &MountHandle) -> Result<(), MountError> {
        let id =
            AllocationId::parse(allocation_id).map_err(|e| MountError::RefcountInconsistency {
                image_path: escape::text(&handle.image_path),
                detail: format!("{e}; such an allocation cannot hold a reference"),
            })?;
        self.release(&Holder::Allocation(id), &handle.image_path)
    }
}
