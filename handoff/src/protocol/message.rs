//! The five v1 message types and their encoding.

use hpc_node::{NamespaceRequest, NamespaceResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CgroupScope, ErrorKind, PROTOCOL_VERSION};

/// A `namespace_request` as it travels: the fields of
/// `hpc_node::NamespaceRequest` plus the optional v1 additions.
#[derive(Debug, Clone)]
pub struct WireRequest {
    /// `allocation_id`, `namespaces`, `uenv_image`.
    pub request: NamespaceRequest,
    /// `cgroup_scope` (WI5): the allocation's cgroup, relative to the
    /// server's cgroup2 root; when it goes from populated to empty, the
    /// server releases the allocation. `None`: `workload.slice/<id>.scope`
    /// if that exists when the request is served.
    pub cgroup_scope: Option<CgroupScope>,
}

impl From<NamespaceRequest> for WireRequest {
    fn from(request: NamespaceRequest) -> Self {
        Self {
            request,
            cgroup_scope: None,
        }
    }
}

/// The body of an `error` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Machine-readable reason.
    pub kind: ErrorKind,
    /// Human-readable reason: what failed, on which key or path, what to do.
    pub message: String,
    /// The allocation the failed request named, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_id: Option<String>,
}

/// One protocol v1 message.
#[derive(Debug, Clone)]
pub enum Message {
    /// client → server: create (or return the live) namespaces of an allocation.
    NamespaceRequest(WireRequest),
    /// server → client: the namespaces; their FDs ride along as `SCM_RIGHTS` in `fd_types` order.
    NamespaceResponse(NamespaceResponse),
    /// client → server: release an allocation's namespaces. Also server →
    /// client, unsolicited, when the allocation's cgroup scope emptied (WI5).
    AllocationEnded {
        /// The allocation to release.
        allocation_id: String,
    },
    /// server → client: `allocation_ended` done.
    Ack {
        /// The allocation released.
        allocation_id: String,
    },
    /// server → client: the request failed.
    Error(ErrorReply),
}

impl Message {
    /// The `"type"` of this message on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::NamespaceRequest(_) => "namespace_request",
            Self::NamespaceResponse(_) => "namespace_response",
            Self::AllocationEnded { .. } => "allocation_ended",
            Self::Ack { .. } => "ack",
            Self::Error(_) => "error",
        }
    }

    /// An `error` message.
    pub fn error(kind: ErrorKind, message: impl Into<String>, allocation_id: Option<&str>) -> Self {
        Self::Error(ErrorReply {
            kind,
            message: message.into(),
            allocation_id: allocation_id.map(str::to_owned),
        })
    }
}

/// Encode `message` as one wire message (UTF-8 JSON with `"v"` and `"type"`).
///
/// Encoding cannot fail for these types; the result of a server-built message
/// stays far below `MAX_MESSAGE_BYTES` because every string in it is bounded.
pub fn encode(message: &Message) -> Vec<u8> {
    let body = match message {
        Message::NamespaceRequest(r) => serde_json::to_value(&r.request).map(|mut v| {
            if let (Some(scope), Value::Object(fields)) = (&r.cgroup_scope, &mut v) {
                fields.insert("cgroup_scope".into(), Value::from(scope.as_str()));
            }
            v
        }),
        Message::NamespaceResponse(r) => serde_json::to_value(r),
        Message::AllocationEnded { allocation_id } | Message::Ack { allocation_id } => {
            Ok(serde_json::json!({ "allocation_id": allocation_id }))
        }
        Message::Error(e) => serde_json::to_value(e),
    };
    let mut object = match body {
        Ok(Value::Object(fields)) => fields,
        // These are plain structs of strings and enums: serde_json cannot fail
        // on them, and they always serialize to objects.
        _ => Map::new(),
    };
    object.insert("v".into(), Value::from(PROTOCOL_VERSION));
    object.insert("type".into(), Value::from(message.type_name()));
    Value::Object(object).to_string().into_bytes()
}
