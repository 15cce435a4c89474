//! Fixture plugin `null`: all four backends, in memory, touching nothing on
//! the machine. Orchestration tests drive boot with it; benchmarks use it to
//! measure the cost of the plugin boundary itself.
//!
//! Option `fail` lists operations that return an error instead
//! (`"create_hierarchy"`, `"acquire_mount"`, `"create_namespaces"`,
//! `"signal_ready"`, or `"constructor"`), so tests can fail a chosen phase.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use hpc_node::{
    CgroupError, CgroupHandle, CgroupManager, CgroupMetrics, MountError, MountHandle, MountManager,
    NamespaceError, NamespaceProvider, NamespaceRequest, NamespaceResponse, NamespaceType,
    ReadinessError, ReadinessGate, ResourceLimits,
};
use nodeinit_contracts::NamespaceFdProvider;
use nodeinit_plugin_api::{AllocationMounts, HostServices, ReadinessProvider};
use nodeinit_sys::deadline::{self, Deadline};

/// Options of every `null` backend.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullOptions {
    /// Operations that fail on purpose.
    #[serde(default)]
    pub fail: Vec<String>,
}

impl NullOptions {
    fn fails(&self, op: &str) -> bool {
        self.fail.iter().any(|f| f == op)
    }
}

fn refuse_if_asked(options: &NullOptions, kind: &str) -> Result<(), String> {
    if options.fails("constructor") {
        return Err(format!("null {kind} backend asked to fail its constructor"));
    }
    tracing::info!(target: "nodeinit_null", backend = kind, "null backend ready");
    Ok(())
}

/// In-memory `CgroupManager`.
#[derive(Debug, Default)]
pub struct NullCgroups {
    options: NullOptions,
    scopes: Mutex<BTreeSet<String>>,
}

impl NullCgroups {
    /// Plugin constructor.
    ///
    /// # Errors
    ///
    /// When `fail` contains `"constructor"`.
    pub fn from_plugin(_host: &HostServices, options: NullOptions) -> Result<Self, String> {
        refuse_if_asked(&options, "cgroup")?;
        Ok(Self {
            options,
            scopes: Mutex::default(),
        })
    }
}

impl CgroupManager for NullCgroups {
    fn create_hierarchy(&self) -> Result<(), CgroupError> {
        if self.options.fails("create_hierarchy") {
            return Err(CgroupError::CreationFailed {
                reason: "null: create_hierarchy asked to fail".into(),
            });
        }
        Ok(())
    }
    fn create_scope(
        &self,
        parent_slice: &str,
        name: &str,
        _limits: &ResourceLimits,
    ) -> Result<CgroupHandle, CgroupError> {
        let path = format!("{parent_slice}/{name}.scope");
        self.scopes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.clone());
        Ok(CgroupHandle { path })
    }
    fn destroy_scope(&self, handle: &CgroupHandle) -> Result<(), CgroupError> {
        self.scopes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&handle.path);
        Ok(())
    }
    fn read_metrics(&self, path: &str) -> Result<CgroupMetrics, CgroupError> {
        if self
            .scopes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(path)
        {
            Ok(CgroupMetrics::default())
        } else {
            Err(CgroupError::NotFound {
                path: path.to_owned(),
            })
        }
    }
    fn is_scope_empty(&self, _handle: &CgroupHandle) -> Result<bool, CgroupError> {
        Ok(true)
    }
}

/// In-memory refcounted `MountManager`.
#[derive(Debug, Default)]
pub struct NullMounts {
    options: NullOptions,
    counts: Mutex<HashMap<String, u64>>,
}

impl NullMounts {
    /// Plugin constructor.
    ///
    /// # Errors
    ///
    /// When `fail` contains `"constructor"`.
    pub fn from_plugin(_host: &HostServices, options: NullOptions) -> Result<Self, String> {
        refuse_if_asked(&options, "mount")?;
        Ok(Self {
            options,
            counts: Mutex::default(),
        })
    }

    /// Current count of `image_path`.
    pub fn refcount(&self, image_path: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(image_path)
            .copied()
            .unwrap_or(0)
    }
}

impl MountManager for NullMounts {
    fn acquire_mount(&self, image_path: &str) -> Result<MountHandle, MountError> {
        if self.options.fails("acquire_mount") {
            return Err(MountError::MountFailed {
                image_path: image_path.into(),
                reason: "null: acquire_mount asked to fail".into(),
            });
        }
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(image_path.to_owned())
            .or_default() += 1;
        Ok(MountHandle {
            image_path: image_path.into(),
            mount_point: format!("/null/{image_path}"),
        })
    }
    fn release_mount(&self, handle: &MountHandle) -> Result<(), MountError> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        match counts.get_mut(&handle.image_path) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Ok(())
            }
            _ => Err(MountError::RefcountInconsistency {
                image_path: handle.image_path.clone(),
                detail: "release below zero".into(),
            }),
        }
    }
    fn force_unmount(&self, image_path: &str) -> Result<(), MountError> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(image_path);
        Ok(())
    }
    fn reconstruct_state(&self, _active: &[String]) -> Result<(), MountError> {
        Ok(())
    }
}

impl AllocationMounts for NullMounts {
    fn acquire_for(
        &self,
        _allocation_id: &str,
        image_path: &str,
    ) -> Result<MountHandle, MountError> {
        self.acquire_mount(image_path)
    }
    fn release_for(&self, _allocation_id: &str, handle: &MountHandle) -> Result<(), MountError> {
        self.release_mount(handle)
    }
}

/// Namespace provider that hands out this process's own namespaces.
#[derive(Debug, Default)]
pub struct NullNamespaces {
    options: NullOptions,
    live: Mutex<HashMap<String, Vec<NamespaceType>>>,
}

impl NullNamespaces {
    /// Plugin constructor.
    ///
    /// # Errors
    ///
    /// When `fail` contains `"constructor"`.
    pub fn from_plugin(_host: &HostServices, options: NullOptions) -> Result<Self, String> {
        refuse_if_asked(&options, "namespace")?;
        Ok(Self {
            options,
            live: Mutex::default(),
        })
    }
}

impl NamespaceProvider for NullNamespaces {
    fn create_namespaces(
        &self,
        request: &NamespaceRequest,
    ) -> Result<NamespaceResponse, NamespaceError> {
        if self.options.fails("create_namespaces") {
            return Err(NamespaceError::CreationFailed {
                reason: "null: create_namespaces asked to fail".into(),
            });
        }
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request.allocation_id.clone(), request.namespaces.clone());
        Ok(NamespaceResponse {
            allocation_id: request.allocation_id.clone(),
            fd_types: request.namespaces.clone(),
            uenv_mount_path: request
                .uenv_image
                .as_ref()
                .map(|_| "/user-environment".to_owned()),
        })
    }
    fn release_namespaces(&self, allocation_id: &str) -> Result<(), NamespaceError> {
        match self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(allocation_id)
        {
            Some(_) => Ok(()),
            None => Err(NamespaceError::AllocationNotFound {
                allocation_id: allocation_id.into(),
            }),
        }
    }
}

impl NamespaceFdProvider for NullNamespaces {
    fn namespace_fds(&self, allocation_id: &str) -> Result<Vec<OwnedFd>, NamespaceError> {
        let types = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(allocation_id)
            .cloned()
            .ok_or_else(|| NamespaceError::AllocationNotFound {
                allocation_id: allocation_id.into(),
            })?;
        types
            .iter()
            .map(|t| {
                let name = match t {
                    NamespaceType::Pid => "pid",
                    NamespaceType::Net => "net",
                    NamespaceType::Mount => "mnt",
                };
                File::open(format!("/proc/self/ns/{name}"))
                    .map(OwnedFd::from)
                    .map_err(NamespaceError::FdPassing)
            })
            .collect()
    }
}

/// In-memory readiness gate.
#[derive(Debug, Default)]
pub struct NullReadiness {
    options: NullOptions,
    state: Mutex<Option<Result<String, String>>>,
    changed: Condvar,
}

impl NullReadiness {
    /// Plugin constructor.
    ///
    /// # Errors
    ///
    /// When `fail` contains `"constructor"`.
    pub fn from_plugin(_host: &HostServices, options: NullOptions) -> Result<Self, String> {
        refuse_if_asked(&options, "readiness")?;
        Ok(Self {
            options,
            ..Self::default()
        })
    }
}

impl ReadinessGate for NullReadiness {
    fn is_ready(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            Some(Ok(_))
        )
    }
    fn wait_ready(&self) -> Result<(), ReadinessError> {
        self.wait_ready_timeout(None)
    }
}

impl ReadinessProvider for NullReadiness {
    fn signal_ready(&self, node_id: &str) -> Result<(), ReadinessError> {
        if self.options.fails("signal_ready") {
            return Err(ReadinessError::BootFailed {
                reason: "null: signal_ready asked to fail".into(),
            });
        }
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(Ok(node_id.to_owned()));
        self.changed.notify_all();
        Ok(())
    }
    fn signal_failed(&self, reason: &str) -> Result<(), ReadinessError> {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(Err(reason.to_owned()));
        self.changed.notify_all();
        Ok(())
    }
    fn wait_ready_timeout(&self, timeout: Option<Duration>) -> Result<(), ReadinessError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // The state says what happened; the "done" flag adds nothing.
        let (state, _) = deadline::wait_until(
            &self.changed,
            state,
            timeout.map(Deadline::after),
            |state| state.is_some(),
        );
        match &*state {
            Some(Ok(_)) => Ok(()),
            Some(Err(reason)) => Err(ReadinessError::BootFailed {
                reason: reason.clone(),
            }),
            None => Err(ReadinessError::Timeout),
        }
    }
}

nodeinit_plugin_api::export_plugin! {
    name: "null",
    version: env!("CARGO_PKG_VERSION"),
    cgroup: NullCgroups::from_plugin,
    mount: NullMounts::from_plugin,
    namespace: NullNamespaces::from_plugin,
    readiness: NullReadiness::from_plugin,
}
