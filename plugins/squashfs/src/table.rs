//! The reference table: who holds which mounted image, and which hold timers run.
//!
//! Owns the counting rules (WI2/WI3): a reference is anonymous or belongs to
//! an allocation; releasing what is not held is an inconsistency that leaves
//! the count unchanged (never negative); reaching zero arms a hold deadline;
//! a new reference disarms it. Pure data: this module must never make a
//! syscall, which is why it is tested without a kernel.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::state_file::{PersistedMount, PersistedState, STATE_VERSION};
use nodeinit_contracts::AllocationId;

/// On whose behalf a reference is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Plain `MountManager::acquire_mount`: not attributable after a restart.
    Anonymous,
    /// `AllocationMounts::acquire_for`.
    Allocation(AllocationId),
}

/// One mounted image.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where the image is mounted.
    pub mount_point: PathBuf,
    /// The mount's own descriptor (from `fsmount`), when this process made
    /// it: unmounting through it hits that mount wherever it is, not what a
    /// path names now. Not persisted; a recovered mount has none.
    pub mount_fd: Option<Arc<OwnedFd>>,
    anonymous: u32,
    holders: BTreeMap<AllocationId, u32>,
    hold_until: Option<Instant>,
}

impl Entry {
    /// A mounted image nobody holds yet.
    #[must_use]
    pub fn new(mount_point: PathBuf) -> Self {
        Self {
            mount_point,
            mount_fd: None,
            anonymous: 0,
            holders: BTreeMap::new(),
            hold_until: None,
        }
    }

    /// Total references.
    #[must_use]
    pub fn refcount(&self) -> u64 {
        u64::from(self.anonymous) + self.holders.values().map(|&n| u64::from(n)).sum::<u64>()
    }

    /// When the hold timer expires, if it runs.
    #[must_use]
    pub fn hold_until(&self) -> Option<Instant> {
        self.hold_until
    }

    /// References held by `allocation`.
    #[must_use]
    pub fn held_by(&self, allocation: &AllocationId) -> u32 {
        self.holders.get(allocation).copied().unwrap_or(0)
    }
}

/// Why a release was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseRefused {
    /// The image is not mounted by this manager.
    UnknownImage,
    /// The holder has no reference (count stays as it is, zero for anonymous).
    NotHeld {
        /// The current total.
        refcount: u64,
    },
}

/// The in-memory reference table, keyed by canonical image path.
#[derive(Debug, Default)]
pub struct Table {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Table {
    /// The entry of `image`.
    #[must_use]
    pub fn get(&self, image: &Path) -> Option<&Entry> {
        self.entries.get(image)
    }

    /// Whether `image` is in the table.
    #[must_use]
    pub fn contains(&self, image: &Path) -> bool {
        self.entries.contains_key(image)
    }

    /// The image mounted at `mount_point`, if any.
    #[must_use]
    pub fn image_at(&self, mount_point: &Path) -> Option<&Path> {
        self.entries
            .iter()
            .find(|(_, e)| e.mount_point == mount_point)
            .map(|(image, _)| image.as_path())
    }

    /// Record a freshly mounted (or adopted) image with no references.
    pub fn insert(&mut self, image: PathBuf, entry: Entry) {
        self.entries.insert(image, entry);
    }

    /// Forget `image` (after it was unmounted).
    pub fn remove(&mut self, image: &Path) -> Option<Entry> {
        self.entries.remove(image)
    }

    /// Add one reference to a mounted `image`, cancelling its hold timer.
    /// Returns `false` when the image is not in the table.
    pub fn add_reference(&mut self, image: &Path, holder: &Holder) -> bool {
        let Some(entry) = self.entries.get_mut(image) else {
            return false;
        };
        match holder {
            Holder::Anonymous => entry.anonymous = entry.anonymous.saturating_add(1),
            Holder::Allocation(id) => {
                let n = entry.holders.entry(id.clone()).or_insert(0);
                *n = n.saturating_add(1);
            }
        }
        entry.hold_until = None;
        true
    }

    /// Drop one reference of `holder`; at zero arm the hold timer to `hold_until`.
    /// Returns the remaining total.
    ///
    /// # Errors
    ///
    /// [`ReleaseRefused`] when the image is unknown or `holder` holds nothing;
    /// the table is unchanged then.
    pub fn remove_reference(
        &mut self,
        image: &Path,
        holder: &Holder,
        hold_until: Instant,
    ) -> Result<u64, ReleaseRefused> {
        let entry = self
            .entries
            .get_mut(image)
            .ok_or(ReleaseRefused::UnknownImage)?;
        let refcount = entry.refcount();
        match holder {
            Holder::Anonymous if entry.anonymous > 0 => entry.anonymous -= 1,
            Holder::Allocation(id) => match entry.holders.get_mut(id) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    entry.holders.remove(id);
                }
                None => return Err(ReleaseRefused::NotHeld { refcount }),
            },
            Holder::Anonymous => return Err(ReleaseRefused::NotHeld { refcount }),
        }
        let left = entry.refcount();
        if left == 0 {
            entry.hold_until = Some(hold_until);
        }
        Ok(left)
    }

    /// Images whose hold timer expired at `now` (and that nobody holds).
    #[must_use]
    pub fn expired(&self, now: Instant) -> Vec<PathBuf> {
        self.entries
            .iter()
            .filter(|(_, e)| e.refcount() == 0 && e.hold_until.is_some_and(|t| t <= now))
            .map(|(image, _)| image.clone())
            .collect()
    }

    /// Re-arm the hold timer of `image` (used to retry a failed unmount).
    pub fn rearm(&mut self, image: &Path, hold_until: Instant) {
        if let Some(entry) = self.entries.get_mut(image) {
            if entry.refcount() == 0 {
                entry.hold_until = Some(hold_until);
            }
        }
    }

    /// The earliest running hold deadline.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.hold_until).min()
    }

    /// Every `(image, entry)`, sorted by image.
    pub fn iter(&self) -> impl Iterator<Item = (&PathBuf, &Entry)> {
        self.entries.iter()
    }

    /// Rebuild an entry from recovered data: `holders` as given, no anonymous
    /// references, a hold timer when nobody holds it.
    #[must_use]
    pub fn recovered_entry(
        mount_point: PathBuf,
        holders: BTreeMap<AllocationId, u32>,
        hold_until: Instant,
    ) -> Entry {
        let mut entry = Entry::new(mount_point);
        entry.holders = holders.into_iter().filter(|&(_, n)| n > 0).collect();
        if entry.refcount() == 0 {
            entry.hold_until = Some(hold_until);
        }
        entry
    }

    /// What the state file records of this table.
    #[must_use]
    pub fn persisted(&self) -> PersistedState {
        PersistedState {
            version: STATE_VERSION,
            mounts: self
                .entries
                .iter()
                .map(|(image, e)| PersistedMount {
                    image: image.display().to_string(),
                    mount_point: e.mount_point.display().to_string(),
                    holders: e
                        .holders
                        .iter()
                        .map(|(id, &n)| (id.as_str().to_owned(), n))
                        .collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn alloc(id: &str) -> Holder {
        Holder::Allocation(AllocationId::parse(id).unwrap())
    }

    fn table_with(image: &str) -> Table {
        let mut t = Table::default();
        t.insert(PathBuf::from(image), Entry::new(PathBuf::from("/m/x")));
        t
    }

    #[test]
    fn counts_anonymous_and_allocation_references() {
        let img = Path::new("/i/x.sqfs");
        let mut t = table_with("/i/x.sqfs");
        assert!(t.add_reference(img, &Holder::Anonymous));
        assert!(t.add_reference(img, &alloc("a")));
        assert!(t.add_reference(img, &alloc("a")));
        assert_eq!(t.get(img).unwrap().refcount(), 3);
        assert_eq!(
            t.get(img)
                .unwrap()
                .held_by(&AllocationId::parse("a").unwrap()),
            2
        );
        let persisted = t.persisted();
        assert_eq!(
            persisted.mounts[0].holders,
            BTreeMap::from([("a".to_owned(), 2)])
        );
    }

    #[test]
    fn release_to_zero_arms_and_acquire_disarms_the_hold() {
        let img = Path::new("/i/x.sqfs");
        let mut t = table_with("/i/x.sqfs");
        let now = Instant::now();
        t.add_reference(img, &Holder::Anonymous);
        assert_eq!(t.remove_reference(img, &Holder::Anonymous, now), Ok(0));
        assert_eq!(t.next_deadline(), Some(now));
        assert_eq!(t.expired(now), vec![PathBuf::from(img)]);
        t.add_reference(img, &Holder::Anonymous);
        assert_eq!(t.next_deadline(), None);
        assert!(t.expired(now + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn release_below_zero_is_refused_and_count_stays_zero() {
        let img = Path::new("/i/x.sqfs");
        let mut t = table_with("/i/x.sqfs");
        let now = Instant::now();
        assert_eq!(
            t.remove_reference(img, &Holder::Anonymous, now),
            Err(ReleaseRefused::NotHeld { refcount: 0 })
        );
        t.add_reference(img, &alloc("a"));
        assert_eq!(
            t.remove_reference(img, &alloc("b"), now),
            Err(ReleaseRefused::NotHeld { refcount: 1 })
        );
        assert_eq!(
            t.remove_reference(img, &Holder::Anonymous, now),
            Err(ReleaseRefused::NotHeld { refcount: 1 })
        );
        assert_eq!(t.get(img).unwrap().refcount(), 1);
        assert_eq!(
            t.remove_reference(Path::new("/nope"), &Holder::Anonymous, now),
            Err(ReleaseRefused::UnknownImage)
        );
    }

    #[test]
    fn recovered_entry_without_holders_gets_a_hold_timer() {
        let now = Instant::now();
        let e = Table::recovered_entry(PathBuf::from("/m/x"), BTreeMap::new(), now);
        assert_eq!((e.refcount(), e.hold_until()), (0, Some(now)));
        let held = BTreeMap::from([(AllocationId::parse("a").unwrap(), 1)]);
        let e = Table::recovered_entry(PathBuf::from("/m/x"), held, now);
        assert_eq!((e.refcount(), e.hold_until()), (1, None));
    }
}
