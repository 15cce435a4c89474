//! # nodeinit-contracts
//!
//! What nodeinit's crates agree on beyond `hpc_node`: the extension traits a
//! backend implements where its kind needs more than the `hpc_node` trait
//! ([`AllocationMounts`], [`ReadinessProvider`], [`NamespaceFdProvider`]), and the validated values
//! every crate passes around ([`AllocationId`], [`NodeId`],
//! [`AbsolutePath`]) — one rule each, so an invalid one cannot reach the
//! kernel from any side — and the one rule for showing untrusted text on a
//! console ([`escape`]).
//!
//! Depends only on `hpc_node` (and the serde and thiserror it already
//! brings). Nothing here touches the ABI, the filesystem or the kernel:
//! `nodeinit-plugin-api` carries these traits across the boundary,
//! `nodeinit-handoff` serves them.
//!
//! ```
//! use nodeinit_contracts::{AllocationId, NodeId};
//! let id = AllocationId::parse("job-42").unwrap();
//! let node = NodeId::parse("nid0001").unwrap();
//! assert_eq!(format!("{node}/{id}"), "nid0001/job-42");
//! ```

pub mod absolute_path;
pub mod allocation_id;
pub mod escape;
mod extensions;
pub mod node_id;

pub use absolute_path::{AbsolutePath, InvalidAbsolutePath};
pub use allocation_id::{AllocationId, InvalidAllocationId, MAX_ALLOCATION_ID_LEN};
pub use extensions::{AllocationMounts, NamespaceFdProvider, ReadinessProvider};
pub use node_id::{InvalidNodeId, NodeId, NodeIdRule, MAX_NODE_ID_LEN};
