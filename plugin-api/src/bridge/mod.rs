//! The bridge between plain Rust backends and their ABI objects, both halves
//! side by side: [`to_abi`] (a plugin's `hpc_node` backend → ABI trait
//! object, [`to_abi::Guarded`]) and [`from_abi`] (an ABI object → the
//! host's `hpc_node`-trait adapter), plus [`kinds`] (each backend kind as
//! data) and [`shared_mounts`] (the host's mount backend, offered once to
//! namespace plugins).
//!
//! Depends only on [`crate::abi`] and the Rust traits; the plugin and host
//! sides build on it, never the reverse.

pub mod from_abi;
pub mod kinds;
pub(crate) mod shared_mounts;
pub mod to_abi;
