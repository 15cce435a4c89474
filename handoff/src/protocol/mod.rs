//! Protocol v1 as data: limits, message types, error kinds, and the
//! bytes ⇄ [`Message`] codec (see `PROTOCOL.md`).
//!
//! Owns the wire format only. It must never touch sockets or the kernel: the
//! transport moves bytes and FDs, the server and client decide what to do.

mod cgroup_scope;
mod decode;
mod error_kind;
mod message;

pub use cgroup_scope::{
    CgroupScope, InvalidCgroupScope, MAX_CGROUP_SCOPE_DEPTH, MAX_CGROUP_SCOPE_LEN,
};
pub(crate) use decode::allocation_id_hint;
pub use decode::{decode, validate, DecodeError};
pub use error_kind::ErrorKind;
pub use message::{encode, ErrorReply, Message, WireRequest};

/// The protocol version this crate speaks (`"v"` of every message).
pub const PROTOCOL_VERSION: u64 = 1;

/// Largest message, in bytes of UTF-8 JSON, either side may send.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Most FDs a `namespace_response` carries (one per `NamespaceType`).
pub const MAX_FDS_PER_MESSAGE: usize = 3;

/// Longest `uenv_image` accepted, in bytes (`PATH_MAX`).
pub const MAX_UENV_IMAGE_LEN: usize = 4096;
