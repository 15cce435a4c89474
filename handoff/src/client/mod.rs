//! The consumer side: what a node agent (lattice) embeds to get an
//! allocation's namespaces — from the handoff server when one is reachable,
//! else by creating them itself with the same conventions (WI4).
//!
//! Owns connecting (1 s timeout), the request/reply exchange and the
//! decision to fall back. It must never fall back after a server *answered*:
//! an `error` reply is the provider's decision and is returned as is.
//!
//! # Example
//!
//! ```no_run
//! use hpc_node::{NamespaceRequest, NamespaceType};
//! use nodeinit_handoff::{GrantSource, HandoffClient};
//!
//! let client = HandoffClient::new(Default::default());
//! let granted = client.request(&NamespaceRequest {
//!     allocation_id: "job-42".into(),
//!     namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
//!     uenv_image: None,
//! })?;
//! if let GrantSource::Fallback { reason } = &granted.source {
//!     eprintln!("no handoff provider ({reason}); created namespaces locally");
//! }
//! let net_fd = granted.fd(NamespaceType::Net); // setns() into it in a child
//! # Ok::<(), hpc_node::NamespaceError>(())
//! ```

mod exchange;
mod fallback;

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hpc_node::{
    MountManager, NamespaceConsumer, NamespaceError, NamespaceRequest, NamespaceResponse,
    NamespaceType,
};

use crate::mount_namespace::{Propagation, UenvMountPath};

/// Default path of the uenv inside an allocation's mount namespace.
pub use crate::mount_namespace::DEFAULT_UENV_MOUNT_PATH;

/// How the client reaches the server and how it falls back.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Socket path (default `hpc_node::namespace::HANDOFF_SOCKET_PATH`).
    pub socket_path: PathBuf,
    /// Connect timeout (default 1 s).
    pub connect_timeout: Duration,
    /// How long to wait for a reply; covers the server's readiness queue (default 180 s).
    pub reply_timeout: Duration,
    /// Create namespaces locally when the socket is unreachable (default true).
    pub fallback: bool,
    /// Fallback: where the uenv appears inside the mount namespace.
    pub uenv_mount_path: UenvMountPath,
    /// Fallback: propagation of the new mount namespace.
    pub propagation: Propagation,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(hpc_node::namespace::HANDOFF_SOCKET_PATH),
            connect_timeout: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(180),
            fallback: true,
            uenv_mount_path: UenvMountPath::default(),
            propagation: Propagation::Slave,
        }
    }
}

/// Where granted namespaces came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSource {
    /// The handoff server (pact or nodeinit) created them.
    Provider,
    /// The server was unreachable; this process created them (WI4).
    Fallback {
        /// Why the server was unreachable.
        reason: String,
    },
}

/// An allocation's namespaces as the consumer holds them.
#[derive(Debug)]
pub struct GrantedNamespaces {
    /// The metadata (as `hpc_node` defines it).
    pub response: NamespaceResponse,
    /// The namespace FDs, in `response.fd_types` order.
    pub fds: Vec<OwnedFd>,
    /// Provider or fallback.
    pub source: GrantSource,
    /// Fallback only: the local holder and uenv mount, released on drop.
    local: Option<fallback::LocalNamespaces>,
}

impl GrantedNamespaces {
    /// The FD of namespace `ns`, if granted.
    pub fn fd(&self, ns: NamespaceType) -> Option<BorrowedFd<'_>> {
        self.response
            .fd_types
            .iter()
            .position(|t| *t == ns)
            .and_then(|i| self.fds.get(i))
            .map(AsFd::as_fd)
    }

    /// Fallback only: the pid of the local holder process.
    pub fn local_holder_pid(&self) -> Option<i32> {
        self.local
            .as_ref()
            .map(fallback::LocalNamespaces::holder_pid)
    }
}

/// The consumer client. Implements [`NamespaceConsumer`]; the FDs of
/// requests made through the trait are kept and reachable via
/// [`HandoffClient::take_granted`].
pub struct HandoffClient {
    config: ClientConfig,
    fallback_mounts: Option<Arc<dyn MountManager>>,
    granted: Mutex<HashMap<String, GrantedNamespaces>>,
}

impl std::fmt::Debug for HandoffClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HandoffClient {
    /// A client with `config`; fallback requests with a `uenv_image` fail
    /// unless [`HandoffClient::with_fallback_mounts`] is used.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            fallback_mounts: None,
            granted: Mutex::new(HashMap::new()),
        }
    }

    /// Use `mounts` (the agent's own mount manager) for uenv images in fallback mode.
    pub fn with_fallback_mounts(mut self, mounts: Arc<dyn MountManager>) -> Self {
        self.fallback_mounts = Some(mounts);
        self
    }

    /// Request namespaces; the caller owns the result.
    ///
    /// # Errors
    ///
    /// - [`NamespaceError::SocketUnavailable`]: unreachable and fallback disabled,
    ///   or the server answered `not_ready`/`busy` (retry later);
    /// - [`NamespaceError::CreationFailed`]: the server answered
    ///   `creation_failed`, `invalid_request`, `unauthorized` or `internal`
    ///   (the reason starts with `[kind]`), or the fallback failed;
    /// - [`NamespaceError::FdPassing`]: the exchange broke (reply not
    ///   matching, FDs missing, timeout).
    pub fn request(&self, request: &NamespaceRequest) -> Result<GrantedNamespaces, NamespaceError> {
        let conn = match exchange::connect(&self.config) {
            Ok(conn) => conn,
            Err(e) if self.config.fallback => {
                let reason = format!("{}: {e}", self.config.socket_path.display());
                tracing::warn!(allocation = %request.allocation_id, %reason,
                    "handoff socket unreachable; creating namespaces locally (fallback, WI4)");
                return fallback::create(
                    request,
                    &self.config,
                    self.fallback_mounts.as_ref(),
                    reason,
                );
            }
            Err(e) => {
                return Err(NamespaceError::SocketUnavailable {
                    reason: format!(
                        "{}: {e} (fallback disabled)",
                        self.config.socket_path.display()
                    ),
                })
            }
        };
        let (response, fds) = exchange::request(&conn, request)?;
        Ok(GrantedNamespaces {
            response,
            fds,
            source: GrantSource::Provider,
            local: None,
        })
    }

    /// Tell the server an allocation ended (`allocation_ended` → `ack`).
    ///
    /// # Errors
    ///
    /// [`NamespaceError::SocketUnavailable`] when unreachable,
    /// [`NamespaceError::AllocationNotFound`] when the server does not know it,
    /// others as [`HandoffClient::request`].
    pub fn end_allocation(&self, allocation_id: &str) -> Result<(), NamespaceError> {
        let conn =
            exchange::connect(&self.config).map_err(|e| NamespaceError::SocketUnavailable {
                reason: format!("{}: {e}", self.config.socket_path.display()),
            })?;
        exchange::end(&conn, allocation_id)
    }

    /// Release `granted`: `allocation_ended` for provider grants, kill the
    /// local holder and release the uenv for fallback grants.
    ///
    /// # Errors
    ///
    /// As [`HandoffClient::end_allocation`]; for fallback grants, the holder
    /// or mount release failing.
    pub fn release(&self, granted: GrantedNamespaces) -> Result<(), NamespaceError> {
        let GrantedNamespaces {
            response,
            fds,
            local,
            ..
        } = granted;
        drop(fds);
        match local {
            Some(local) => local.release(),
            None => self.end_allocation(&response.allocation_id),
        }
    }

    /// The namespaces granted through [`NamespaceConsumer::request_namespaces`]
    /// for `allocation_id`, removed from the client.
    pub fn take_granted(&self, allocation_id: &str) -> Option<GrantedNamespaces> {
        self.granted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(allocation_id)
    }
}

impl NamespaceConsumer for HandoffClient {
    fn request_namespaces(
        &self,
        request: &NamespaceRequest,
    ) -> Result<NamespaceResponse, NamespaceError> {
        let granted = self.request(request)?;
        let response = granted.response.clone();
        self.granted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(response.allocation_id.clone(), granted);
        Ok(response)
    }
}
