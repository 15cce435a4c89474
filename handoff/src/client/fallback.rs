//! Self-service namespaces when no handoff server is reachable (WI4): the
//! same holder, the same mount-namespace preparation and uenv path as the
//! unshare backend, run in the consumer's own process.
//!
//! Owns the local resources of a fallback grant and their release. It must
//! never be used when a server answered.

use std::sync::Arc;

use hpc_node::{MountHandle, MountManager, NamespaceError, NamespaceRequest, NamespaceResponse};

use super::{ClientConfig, GrantSource, GrantedNamespaces};
use crate::holder::NamespaceHolder;
use crate::mount_namespace::UenvBind;

/// A fallback grant's holder and uenv mount.
pub(super) struct LocalNamespaces {
    holder: Option<NamespaceHolder>,
    mount: Option<(Arc<dyn MountManager>, MountHandle)>,
}

impl std::fmt::Debug for LocalNamespaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNamespaces")
            .field("holder", &self.holder)
            .field("uenv", &self.mount.as_ref().map(|(_, h)| h))
            .finish()
    }
}

impl LocalNamespaces {
    pub(super) fn holder_pid(&self) -> i32 {
        self.holder.as_ref().map_or(0, |h| h.pid().as_raw())
    }

    /// Kill the holder, then release the uenv reference.
    pub(super) fn release(mut self) -> Result<(), NamespaceError> {
        self.release_all()
    }

    fn release_all(&mut self) -> Result<(), NamespaceError> {
        let killed = self
            .holder
            .take()
            .map_or(Ok(()), NamespaceHolder::terminate);
        let released = match self.mount.take() {
            Some((mounts, handle)) => {
                mounts
                    .release_mount(&handle)
                    .map_err(|e| NamespaceError::CreationFailed {
                        reason: format!("releasing uenv {}: {e}", handle.image_path),
                    })
            }
            None => Ok(()),
        };
        killed.map_err(NamespaceError::FdPassing)?;
        released
    }
}

impl Drop for LocalNamespaces {
    fn drop(&mut self) {
        if let Err(e) = self.release_all() {
            tracing::error!(error = %e, "fallback namespaces not fully released");
        }
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
    let mut local = LocalNamespaces {
        holder: None,
        mount: None,
    };
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
        local.mount = Some((mounts.clone(), handle));
    }
    let holder =
        NamespaceHolder::spawn_prepared(&request.namespaces, config.propagation, bind.as_ref())
            .map_err(|e| failed(e.to_string()))?;
    let fds = holder.duplicate_fds().map_err(NamespaceError::FdPassing)?;
    local.holder = Some(holder);
    let response = NamespaceResponse {
        allocation_id: request.allocation_id.clone(),
        fd_types: request.namespaces.clone(),
        uenv_mount_path: bind.map(|b| b.target.display().to_string()),
    };
    Ok(GrantedNamespaces {
        response,
        fds,
        source: GrantSource::Fallback { reason },
        local: Some(local),
    })
}
