//! One allocation's resources — the holder process that keeps its
//! namespaces alive and the uenv image reference mounted into them — and the
//! order they are given back in: kill and reap the holder first (the
//! namespaces, and with them the uenv bind, die once the last descriptor
//! closes), then release the image reference, so the image can unmount.
//! Both are attempted whatever the first one does.
//!
//! Used by the unshare backend and the handoff client's fallback alike.
//! Dropping an allocation releases it too, so no path — an error, a panic,
//! an orphaned slot — leaks a holder or a mount reference. Owns nothing
//! else: which allocation exists is its users' business.

use std::fmt;
use std::io;

use hpc_node::{MountError, MountHandle};

use crate::holder::NamespaceHolder;

/// A process that holds an allocation's namespaces.
pub trait Holder {
    /// Kill it and wait until it has exited.
    ///
    /// # Errors
    ///
    /// It could not be signalled or reaped.
    fn terminate(self) -> io::Result<()>;
}

impl Holder for NamespaceHolder {
    fn terminate(self) -> io::Result<()> {
        NamespaceHolder::terminate(self)
    }
}

/// How a uenv reference is given back (to the mount manager it came from).
type GiveBack = Box<dyn FnOnce(&MountHandle) -> Result<(), MountError> + Send + Sync>;

/// A uenv image reference held for an allocation.
pub struct UenvReference {
    handle: MountHandle,
    give_back: GiveBack,
}

impl UenvReference {
    /// The reference `handle`, given back by `give_back` on release.
    ///
    /// ```
    /// use hpc_node::MountHandle;
    /// use nodeinit_namespaces::allocation::UenvReference;
    /// let handle = MountHandle { image_path: "/images/base.sqfs".into(),
    ///     mount_point: "/run/pact/uenv/base".into() };
    /// let r = UenvReference::new(handle, |_| Ok(()));
    /// assert_eq!(r.handle().image_path, "/images/base.sqfs");
    /// ```
    pub fn new(
        handle: MountHandle,
        give_back: impl FnOnce(&MountHandle) -> Result<(), MountError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            handle,
            give_back: Box::new(give_back),
        }
    }

    /// The handle the mount manager gave out.
    pub fn handle(&self) -> &MountHandle {
        &self.handle
    }
}

impl fmt::Debug for UenvReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UenvReference").field(&self.handle).finish()
    }
}

/// Why a release was not complete: the first failure, holder before uenv
/// (both were attempted).
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The holder could not be killed or reaped.
    #[error("holder: {0}")]
    Holder(io::Error),
    /// The mount manager refused the uenv reference back.
    #[error("uenv {image_path}: {source}")]
    Uenv {
        /// The image.
        image_path: String,
        /// The mount manager's error.
        source: MountError,
    },
}

/// An allocation's holder and uenv reference, released in order.
pub struct Allocation<H: Holder> {
    label: String,
    holder: Option<H>,
    uenv: Option<UenvReference>,
}

impl<H: Holder> Allocation<H> {
    /// Resources of the allocation `label` (its id, in logs): none yet.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            holder: None,
            uenv: None,
        }
    }

    /// With `uenv` held (acquired before the holder exists: a failed spawn
    /// then still gives it back).
    #[must_use]
    pub fn with_uenv(mut self, uenv: Option<UenvReference>) -> Self {
        self.uenv = uenv;
        self
    }

    /// With `holder`.
    #[must_use]
    pub fn with_holder(mut self, holder: H) -> Self {
        self.holder = Some(holder);
        self
    }

    /// Sets the holder (once it is spawned).
    pub fn set_holder(&mut self, holder: H) {
        self.holder = Some(holder);
    }

    /// The holder, while alive.
    pub fn holder(&self) -> Option<&H> {
        self.holder.as_ref()
    }

    /// The uenv reference, while held.
    pub fn uenv(&self) -> Option<&UenvReference> {
        self.uenv.as_ref()
    }

    /// Kill the holder, then give the uenv reference back. Both are attempted.
    ///
    /// # Errors
    ///
    /// The first failure ([`ReleaseError`]).
    pub fn release(mut self) -> Result<(), ReleaseError> {
        self.release_resources()
    }

    fn release_resources(&mut self) -> Result<(), ReleaseError> {
        let killed = match self.holder.take() {
            Some(holder) => holder.terminate().map_err(ReleaseError::Holder),
            None => Ok(()),
        };
        let released = match self.uenv.take() {
            Some(uenv) => (uenv.give_back)(&uenv.handle).map_err(|source| ReleaseError::Uenv {
                image_path: uenv.handle.image_path.clone(),
                source,
            }),
            None => Ok(()),
        };
        killed.and(released)
    }
}

impl<H: Holder> Drop for Allocation<H> {
    fn drop(&mut self) {
        if let Err(e) = self.release_resources() {
            tracing::error!(allocation = %self.label, error = %e, "allocation not fully released");
        }
    }
}

impl<H: Holder + fmt::Debug> fmt::Debug for Allocation<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocation")
            .field("label", &self.label)
            .field("holder", &self.holder)
            .field("uenv", &self.uenv)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<String>>>;

    struct FakeHolder(Log, bool);

    impl Holder for FakeHolder {
        fn terminate(self) -> io::Result<()> {
            self.0.lock().unwrap().push("holder killed".into());
            if self.1 {
                Err(io::Error::other("stuck in D state"))
            } else {
                Ok(())
            }
        }
    }

    fn uenv(log: &Log, fail: bool) -> UenvReference {
        let log = Arc::clone(log);
        let handle = MountHandle {
            image_path: "/images/base.sqfs".into(),
            mount_point: "/run/pact/uenv/base".into(),
        };
        UenvReference::new(handle, move |h| {
            log.lock()
                .unwrap()
                .push(format!("released {}", h.image_path));
            if fail {
                Err(MountError::RefcountInconsistency {
                    image_path: h.image_path.clone(),
                    detail: "no reference held".into(),
                })
            } else {
                Ok(())
            }
        })
    }

    #[test]
    fn the_holder_goes_before_the_uenv_reference() {
        let log = Log::default();
        let a = Allocation::new("job-1")
            .with_uenv(Some(uenv(&log, false)))
            .with_holder(FakeHolder(Arc::clone(&log), false));
        a.release().unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            ["holder killed", "released /images/base.sqfs"]
        );
    }

    #[test]
    fn both_are_attempted_and_the_holders_failure_is_reported_first() {
        let log = Log::default();
        let a = Allocation::new("job-1")
            .with_uenv(Some(uenv(&log, true)))
            .with_holder(FakeHolder(Arc::clone(&log), true));
        let err = a.release().unwrap_err();
        assert_eq!(err.to_string(), "holder: stuck in D state");
        assert_eq!(log.lock().unwrap().len(), 2);

        let log = Log::default();
        let a: Allocation<FakeHolder> = Allocation::new("job-2").with_uenv(Some(uenv(&log, true)));
        let err = a.release().unwrap_err();
        assert!(
            matches!(&err, ReleaseError::Uenv { image_path, .. } if image_path == "/images/base.sqfs"),
            "{err}"
        );
    }

    #[test]
    fn dropping_releases_too_once() {
        let log = Log::default();
        {
            let mut a = Allocation::new("job-3").with_uenv(Some(uenv(&log, false)));
            a.set_holder(FakeHolder(Arc::clone(&log), false));
            assert!(a.holder().is_some() && a.uenv().is_some());
        }
        assert_eq!(
            *log.lock().unwrap(),
            ["holder killed", "released /images/base.sqfs"]
        );
    }
}
