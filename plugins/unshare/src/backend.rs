//! The unshare namespace backend: per allocation, a holder process in new
//! PID/Net/Mount namespaces, its FDs, and optionally a uenv bind inside.
//!
//! Owns the allocation registry (one slot per allocation id, so requests for
//! different allocations never wait for each other and duplicates for the
//! same one wait for, then share, the first). Namespace creation itself is
//! `nodeinit_namespaces::holder` — the same code the consumer fallback runs.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};

use hpc_node::{
    NamespaceError, NamespaceProvider, NamespaceRequest, NamespaceResponse, NamespaceType,
};
use nodeinit_handoff::{AllocationId, NamespaceFdProvider};
use nodeinit_namespaces::mount_namespace::UenvBind;
use nodeinit_plugin_api::AllocationMounts;

use crate::allocation::{uenv_reference, Allocation};
use crate::options::{UnshareConfig, UnshareOptions};
use crate::persist::Holder;
use crate::spares::{SpareHolders, SpareKind};
use nodeinit_namespaces::mount_namespace::shadowed_directory;

type Slot = Arc<Mutex<Option<Allocation>>>;

/// The unshare backend (`NamespaceProvider` + `NamespaceFdProvider`).
///
/// ```no_run
/// use hpc_node::{NamespaceProvider, NamespaceRequest, NamespaceType};
/// use nodeinit_unshare::{UnshareBackend, UnshareConfig};
///
/// let backend = UnshareBackend::new(UnshareConfig::default(), None);
/// let response = backend.create_namespaces(&NamespaceRequest {
///     allocation_id: "job-1".into(),
///     namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
///     uenv_image: None,
/// })?;
/// assert_eq!(response.fd_types.len(), 3);
/// backend.release_namespaces("job-1")?;
/// # Ok::<(), hpc_node::NamespaceError>(())
/// ```
pub struct UnshareBackend {
    config: UnshareConfig,
    mounts: Option<Arc<dyn AllocationMounts>>,
    slots: Mutex<HashMap<AllocationId, Slot>>,
    /// Holders outlive the worker (only under nodeinit's keeper).
    persistence: Option<crate::persist::Persistence>,
    /// Holders made ahead of requests (`spare_holders` > 0).
    spares: Option<SpareHolders>,
}

impl std::fmt::Debug for UnshareBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnshareBackend")
            .field("config", &self.config)
            .field("has_mounts", &self.mounts.is_some())
            .finish_non_exhaustive()
    }
}

fn creation_failed(reason: String) -> NamespaceError {
    NamespaceError::CreationFailed { reason }
}

impl UnshareBackend {
    /// A backend; `mounts` is the host's mount backend, needed for `uenv_image`.
    pub fn new(config: UnshareConfig, mounts: Option<Arc<dyn AllocationMounts>>) -> Self {
        let persistence = crate::persist::Persistence::if_enabled(&config.state_dir);
        let spares = (config.spare_holders > 0)
            .then(|| {
                let (persistent, propagation) = (persistence.is_some(), config.propagation);
                SpareHolders::new(
                    config.spare_holders,
                    Box::new(move |kind: &SpareKind| {
                        let holder = Holder::spawn(persistent, &kind.namespaces, propagation)?;
                        if let Some(mount_point) = &kind.mount_point {
                            holder.prepare_mount_point(mount_point)?;
                        }
                        Ok(holder)
                    }),
                )
                .map_err(|e| {
                    tracing::warn!(error = %e, "spare_holders ignored: a spare's mount table could not be checked");
                })
                .ok()
            })
            .flatten();
        Self {
            config,
            mounts,
            slots: Mutex::new(HashMap::new()),
            persistence,
            spares,
        }
    }

    /// The plugin constructor `export_plugin!` calls: options from the
    /// config, the mount backend from the host.
    ///
    /// # Errors
    ///
    /// An invalid option, named with the rule it breaks.
    pub fn from_plugin(
        host: &nodeinit_plugin_api::HostServices,
        options: UnshareOptions,
    ) -> Result<Self, String> {
        let config = UnshareConfig::try_from(options).map_err(|e| e.to_string())?;
        Ok(Self::new(config, host.mounts()))
    }

    /// Allocations currently live.
    pub fn live_allocations(&self) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ids: Vec<String> = slots
            .iter()
            .filter(|(_, slot)| {
                slot.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some()
            })
            .map(|(id, _)| id.to_string())
            .collect();
        ids.sort();
        ids
    }

    /// The holder pid of a live allocation (for diagnostics and tests).
    pub fn holder_pid(&self, allocation_id: &str) -> Option<i32> {
        let slot = self.slot(allocation_id)?;
        let guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .and_then(Allocation::holder)
            .map(|h| h.pid().as_raw())
    }

    /// Adopt the previous worker's holders (once), when persisting.
    fn adopt(&self) {
        if let Some(p) = &self.persistence {
            p.adopt_once(&self.slots, self.mounts.as_ref());
        }
    }

    /// Record a new allocation's holder, when persisting.
    fn persist(&self, allocation: &Allocation) {
        if let Some(p) = &self.persistence {
            p.record(allocation);
        }
    }

    /// Remove an ended allocation's record, when persisting.
    fn unpersist(&self, id: &AllocationId) {
        if let Some(p) = &self.persistence {
            p.forget(id.as_str());
        }
    }

    fn slot(&self, allocation_id: &str) -> Option<Slot> {
        self.adopt();
        let id = AllocationId::parse(allocation_id).ok()?;
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Drop the slot of `id` if it is empty (a failed creation).
    fn forget_if_empty(&self, id: &AllocationId, slot: &Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = slots.get(id) {
            if Arc::ptr_eq(current, slot)
                && current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_none()
            {
                slots.remove(id);
            }
        }
    }

    fn create(
        &self,
        id: &AllocationId,
        request: &NamespaceRequest,
        owner_uid: u32,
    ) -> Result<Allocation, NamespaceError> {
        let mut uenv = None;
        let mut bind = None;
        if let Some(image) = &request.uenv_image {
            let mounts = self.mounts.clone().ok_or_else(|| {
                creation_failed(format!(
                    "allocation {id}: uenv_image {image:?} requested but no mount backend is configured; add a [plugins.mount] table"
                ))
            })?;
            let handle = mounts.acquire_for(id.as_str(), image).map_err(|e| {
                creation_failed(format!("allocation {id}: uenv image {image:?}: {e}"))
            })?;
            bind = Some(UenvBind {
                source: handle.mount_point.clone().into(),
                target: self.config.uenv_mount_path.as_path().to_path_buf(),
            });
            uenv = Some(uenv_reference(mounts, id, handle));
        }
        let response = NamespaceResponse {
            allocation_id: id.to_string(),
            fd_types: request.namespaces.clone(),
            uenv_mount_path: bind.as_ref().map(|b| b.target.display().to_string()),
        };
        // From here on, dropping `allocation` (on error) releases the uenv reference.
        let mut allocation = Allocation {
            id: id.clone(),
            owner_uid,
            namespaces: request.namespaces.clone(),
            uenv_image: request.uenv_image.clone(),
            response,
            resources: nodeinit_namespaces::allocation::Allocation::new(id.to_string())
                .with_uenv(uenv),
        };
        let holder = self
            .holder_for(&request.namespaces, bind.as_ref())
            .map_err(|e| creation_failed(format!("allocation {id}: {e}")))?;
        tracing::info!(allocation = %id, holder = %holder.pid(), namespaces = ?request.namespaces,
            uenv = ?request.uenv_image, "namespaces created");
        allocation.resources.set_holder(holder);
        Ok(allocation)
    }

    /// A holder in `namespaces` with the uenv `bind` mounted: a spare if one
    /// is ready, else a new one.
    fn holder_for(
        &self,
        namespaces: &[NamespaceType],
        bind: Option<&UenvBind>,
    ) -> io::Result<Holder> {
        if bind.is_some() && !namespaces.contains(&NamespaceType::Mount) {
            return Err(io::Error::other("a uenv bind needs a Mount namespace"));
        }
        // A uenv request whose mount path is missing takes a spare with the
        // shadow built (the bind then finds the directory); any other, a
        // plain one.
        let spare = self.spares.as_ref().and_then(|spares| {
            spares.take(&SpareKind {
                namespaces: namespaces.to_vec(),
                mount_point: bind
                    .filter(|b| matches!(shadowed_directory(&b.target), Ok(Some(_))))
                    .map(|b| b.target.clone()),
            })
        });
        let holder = match spare {
            Some(spare) => spare,
            None => Holder::spawn(
                self.persistence.is_some(),
                namespaces,
                self.config.propagation,
            )?,
        };
        let bound = bind.map_or(Ok(()), |bind| holder.attach_uenv(bind));
        if let Some(spares) = &self.spares {
            spares.refill();
        }
        bound.map(|()| holder)
    }

    /// The pids of the spare holders kept now (diagnostics and tests).
    pub fn spare_holder_pids(&self) -> Vec<i32> {
        self.spares
            .as_ref()
            .map_or_else(Vec::new, SpareHolders::pids)
    }

    /// Create (or return the live) allocation for `request`, owned by `owner_uid`.
    fn create_owned(
        &self,
        request: &NamespaceRequest,
        owner_uid: u32,
    ) -> Result<NamespaceResponse, NamespaceError> {
        let id = nodeinit_handoff::protocol::validate(request)
            .map_err(|e| creation_failed(e.to_string()))?;
        self.adopt();
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.clone())
            .or_default()
            .clone();
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = guard.as_ref() {
            if live.namespaces == request.namespaces && live.uenv_image == request.uenv_image {
                return Ok(live.response.clone());
            }
            return Err(creation_failed(format!(
                "allocation {id} is already live with namespaces {:?} and uenv_image {:?}; end it (allocation_ended) before asking for {:?} with {:?}",
                live.namespaces, live.uenv_image, request.namespaces, request.uenv_image
            )));
        }
        match self.create(&id, request, owner_uid) {
            Ok(allocation) => {
                let response = allocation.response.clone();
                self.persist(&allocation);
                *guard = Some(allocation);
                drop(guard);
                Ok(response)
            }
            Err(e) => {
                drop(guard);
                self.forget_if_empty(&id, &slot);
                Err(e)
            }
        }
    }
}

impl NamespaceProvider for UnshareBackend {
    /// Without an owner: the allocation belongs to root (the host).
    fn create_namespaces(
        &self,
        request: &NamespaceRequest,
    ) -> Result<NamespaceResponse, NamespaceError> {
        self.create_owned(request, 0)
    }

    fn release_namespaces(&self, allocation_id: &str) -> Result<(), NamespaceError> {
        let not_found = || NamespaceError::AllocationNotFound {
            allocation_id: allocation_id.to_owned(),
        };
        let id = AllocationId::parse(allocation_id).map_err(|_| not_found())?;
        self.adopt();
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
            .ok_or_else(not_found)?;
        let allocation = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        let allocation = allocation.ok_or_else(not_found)?;
        self.unpersist(&id);
        allocation.release()?;
        tracing::info!(allocation = %id, "namespaces released");
        Ok(())
    }
}

impl NamespaceFdProvider for UnshareBackend {
    fn namespace_fds(&self, allocation_id: &str) -> Result<Vec<OwnedFd>, NamespaceError> {
        let not_found = || NamespaceError::AllocationNotFound {
            allocation_id: allocation_id.to_owned(),
        };
        let slot = self.slot(allocation_id).ok_or_else(not_found)?;
        let guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let holder = guard
            .as_ref()
            .and_then(Allocation::holder)
            .ok_or_else(not_found)?;
        holder.duplicate_fds().map_err(NamespaceError::FdPassing)
    }

    fn create_namespaces_owned(
        &self,
        request: &NamespaceRequest,
        owner_uid: u32,
    ) -> Result<NamespaceResponse, NamespaceError> {
        self.create_owned(request, owner_uid)
    }

    fn allocation_owner(&self, allocation_id: &str) -> Option<u32> {
        let slot = self.slot(allocation_id)?;
        let guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map(|a| a.owner_uid)
    }
}
