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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::decode;
    use hpc_node::NamespaceType;

    fn round_trip(message: &Message) -> (Value, Message) {
        let bytes = encode(message);
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        (json, decode(&bytes).unwrap())
    }

    #[test]
    fn every_message_carries_v_and_type_and_decodes_back() {
        let request = Message::NamespaceRequest(WireRequest {
            request: NamespaceRequest {
                allocation_id: "job-1".into(),
                namespaces: vec![NamespaceType::Pid, NamespaceType::Mount],
                uenv_image: Some("base.sqfs".into()),
            },
            cgroup_scope: Some(CgroupScope::parse("workload.slice/job-1.scope").unwrap()),
        });
        let (json, back) = round_trip(&request);
        assert_eq!(json["v"], 1);
        assert_eq!(json["type"], "namespace_request");
        assert_eq!(json["cgroup_scope"], "workload.slice/job-1.scope");
        match back {
            Message::NamespaceRequest(r) => {
                assert_eq!(r.request.allocation_id, "job-1");
                assert_eq!(
                    r.request.namespaces,
                    [NamespaceType::Pid, NamespaceType::Mount]
                );
                assert_eq!(r.request.uenv_image.as_deref(), Some("base.sqfs"));
                assert_eq!(
                    r.cgroup_scope.unwrap().as_str(),
                    "workload.slice/job-1.scope"
                );
            }
            other => panic!("{other:?}"),
        }

        let (json, back) = round_trip(&Message::AllocationEnded {
            allocation_id: "job-1".into(),
        });
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "type": "allocation_ended", "allocation_id": "job-1"})
        );
        assert!(
            matches!(back, Message::AllocationEnded { allocation_id } if allocation_id == "job-1")
        );

        let (json, back) = round_trip(&Message::Ack {
            allocation_id: "job-1".into(),
        });
        assert_eq!(json["type"], "ack");
        assert!(matches!(back, Message::Ack { allocation_id } if allocation_id == "job-1"));
    }

    #[test]
    fn an_error_names_its_kind_and_echoes_the_id_only_when_known() {
        let (json, back) = round_trip(&Message::error(
            ErrorKind::Busy,
            "too many connections; retry later",
            Some("job-9"),
        ));
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "type": "error", "kind": "busy",
                "message": "too many connections; retry later", "allocation_id": "job-9"})
        );
        assert!(matches!(back, Message::Error(e) if e.kind == ErrorKind::Busy));
        let (json, _) = round_trip(&Message::error(ErrorKind::InvalidRequest, "bad", None));
        assert!(json.get("allocation_id").is_none(), "{json}");
    }

    #[test]
    fn a_request_without_scope_sends_no_scope_field() {
        let bytes = encode(&Message::NamespaceRequest(WireRequest::from(
            NamespaceRequest {
                allocation_id: "a".into(),
                namespaces: vec![NamespaceType::Net],
                uenv_image: None,
            },
        )));
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(json.get("cgroup_scope").is_none(), "{json}");
    }
}
