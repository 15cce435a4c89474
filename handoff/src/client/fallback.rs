//! Self-service namespaces when no handoff server is reachable (WI4): the
//! same holder, the same mount-namespace preparation and uenv path as the
//! unshare backend, run in the consumer's own process.
//!
//! Owns the local resources of a fallback grant (one
//! `nodeinit_namespaces::allocation::Allocation`: holder, uenv reference,
//! release order). It must never be used when a server answered.

use std::sync::Arc;

use hpc_node::{MountManager, NamespaceError, NamespaceRequest, NamespaceResponse};
use nodeinit_namespaces::allocation::{Allocation, ReleaseError, UenvReference};

use super::{ClientConfig, GrantSource, GrantedNamespaces};
use crate::holder::NamespaceHolder;
use crate::mount_namespace::UenvBind;

/// A fallback grant's holder and uenv mount: one
/// `nodeinit_namespaces::allocation::Allocation`, as the unshare backend's.
pub(super) struct LocalNamespaces(Allocation<NamespaceHolder>);

impl std::fmt::Debug for LocalNamespaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LocalNamespaces").field(&self.0).finish()
    }
}

impl LocalNamespaces {
    pub(super) fn holder_pid(&self) -> i32 {
        self.0.holder().map_or(0, |h| h.pid().as_raw())
    }

    /// Kill the holder, then release the uenv reference.
    pub(super) fn release(self) -> Result<(), NamespaceError> {
        self.0.release().map_err(|e| match e {
            ReleaseError::Holder(e) => NamespaceError::FdPassing(e),
            ReleaseError::Uenv { image_path, source } => NamespaceError::CreationFailed {
                reason: format!("releasing uenv {image_path}: {source}"),
            },
        })
    }
}

pub(super) fn create(
    request: &NamespaceRequest,
    config: &ClientConfig,
    mounts: Option<&Arc<dyn MountManager>>,
    reason: String,
) -> Result<GrantedNamespaces, NamespaceError> {
    crate::protocol::validate(request).map_err(|e| NamespaceError::CreationFailed {
        reason: e.to_string(),
    })?;
    let failed = |what: String| NamespaceError::CreationFailed {
        reason: format!("fallback (handoff socket unreachable: {reason}): {what}"),
    };
    let mut local = Allocation::new(request.allocation_id.clone());
    let mut bind = None;
    if let Some(image) = &request.uenv_image {
        let mounts = mounts.ok_or_else(|| {
            failed(format!(
                "uenv_image {image:?} needs a mount manager; construct the client with_fallback_mounts"
            ))
        })?;
        let handle = mounts
            .acquire_mount(image)
            .map_err(|e| failed(format!("acquiring uenv {image:?}: {e}")))?;
        bind = Some(UenvBind {
            source: handle.mount_point.clone().into(),
            target: config.uenv_mount_path.as_path().to_path_buf(),
        });
        let manager = Arc::clone(mounts);
        local = local.with_uenv(Some(UenvReference::new(handle, move |h| {
            manager.release_mount(h)
        })));
    }
    let holder =
        NamespaceHolder::spawn_prepared(&request.namespaces, config.propagation, bind.as_ref())
            .map_err(|e| failed(e.to_string()))?;
    let fds = holder.duplicate_fds().map_err(NamespaceError::FdPassing)?;
    local.set_holder(holder);
    let response = NamespaceResponse {
        allocation_id: request.allocation_id.clone(),
        fd_types: request.namespaces.clone(),
        uenv_mount_path: bind.map(|b| b.target.display().to_string()),
    };
    Ok(GrantedNamespaces {
        response,
        fds,
        source: GrantSource::Fallback { reason },
        local: Some(LocalNamespaces(local)),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hpc_node::NamespaceType;

    fn request(uenv: Option<&str>) -> NamespaceRequest {
        NamespaceRequest {
            allocation_id: "local-1".into(),
            namespaces: vec![NamespaceType::Net, NamespaceType::Mount],
            uenv_image: uenv.map(str::to_owned),
        }
    }

    #[test]
    fn a_fallback_grant_holds_real_namespaces_until_released() {
        let grant = create(
            &request(None),
            &ClientConfig::default(),
            None,
            "test".into(),
        )
        .unwrap();
        assert_eq!(
            grant.response.fd_types,
            [NamespaceType::Net, NamespaceType::Mount]
        );
        let link = |fd: &std::os::fd::OwnedFd| {
            std::fs::read_link(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(fd)
            ))
            .unwrap()
            .display()
            .to_string()
        };
        assert!(link(&grant.fds[0]).starts_with("net:["));
        assert!(link(&grant.fds[1]).starts_with("mnt:["));
        assert_eq!(
            grant.source,
            GrantSource::Fallback {
                reason: "test".into()
            }
        );
        let local = grant.local.unwrap();
        let pid = local.holder_pid();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        local.release().unwrap();
        // Killed and reaped: the pid is no longer a process of ours.
        let still = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!still.contains("nodeinit-holder"), "{still}");
    }

    #[test]
    fn a_uenv_without_a_mount_manager_is_refused_saying_how_to_fix_it() {
        let err = create(
            &request(Some("base.sqfs")),
            &ClientConfig::default(),
            None,
            "no socket".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("fallback (handoff socket unreachable: no socket)")
                && err.contains("needs a mount manager; construct the client with_fallback_mounts"),
            "{err}"
        );
    }
}
