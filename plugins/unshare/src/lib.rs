//! nodeinit's namespace backend (`libnodeinit_unshare.so`, and an rlib).
//!
//! Per allocation it forks a small holder process in new PID, network and
//! mount namespaces (the holder is PID 1 of the new PID namespace and reaps
//! there), keeps `/proc/<holder>/ns/*` open, and — with a `uenv_image` —
//! acquires the image through the host's mount backend and binds it
//! read-only at `/user-environment` (configurable) inside the new mount
//! namespace, which is made `rslave` (or private) before anything is mounted
//! in it. The holder and mount-namespace code is shared with the consumer
//! client's fallback in `nodeinit-handoff`.
//!
//! Options (`[plugins.namespace.options]`): see [`UnshareOptions`].

mod allocation;
mod backend;
mod options;
pub mod persist;
mod spares;

pub use backend::UnshareBackend;
pub use options::{InvalidOption, UnshareConfig, UnshareOptions};
pub use spares::MAX_SPARE_HOLDERS;

nodeinit_plugin_api::export_plugin! {
    name: "unshare",
    version: env!("CARGO_PKG_VERSION"),
    namespace: UnshareBackend::from_plugin,
}
