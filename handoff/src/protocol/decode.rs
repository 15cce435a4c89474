//! Bytes → [`Message`], with an error that says exactly which rule a message broke.
//!
//! The decoder is the trust boundary of the server: every byte a peer sends
//! goes through here first. It never panics (a property test feeds it
//! arbitrary bytes) and validates ids and request shape, so nothing invalid
//! reaches a provider.

use std::collections::HashSet;

use hpc_node::{NamespaceRequest, NamespaceResponse, NamespaceType};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{
    CgroupScope, ErrorReply, InvalidCgroupScope, Message, WireRequest, MAX_MESSAGE_BYTES,
    MAX_UENV_IMAGE_LEN, PROTOCOL_VERSION,
};
use crate::allocation_id::{AllocationId, InvalidAllocationId};

/// Why bytes are not a valid v1 message. Every variant is answered with an
/// `error` of kind `invalid_request` carrying this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message is {len} bytes; the limit is {MAX_MESSAGE_BYTES} bytes")]
    TooLarge {
        /// Size received (at least `MAX_MESSAGE_BYTES + 1`).
        len: usize,
    },
    /// Empty message.
    #[error("message is empty; send one JSON object")]
    Empty,
    /// Not UTF-8.
    #[error("message is not UTF-8 (invalid byte at offset {offset}); send one UTF-8 JSON object")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Not JSON.
    #[error("message is not valid JSON: {reason}")]
    InvalidJson {
        /// serde_json's reason, with line and column.
        reason: String,
    },
    /// JSON, but not an object.
    #[error("message must be a JSON object with \"v\" and \"type\", got {found}")]
    NotAnObject {
        /// What it was (`array`, `string`, ...).
        found: &'static str,
    },
    /// No `"v"`.
    #[error("message has no \"v\" field; this server speaks protocol v{PROTOCOL_VERSION}: add \"v\": {PROTOCOL_VERSION}")]
    MissingVersion,
    /// A `"v"` other than 1.
    #[error(
        "protocol version {found} is not supported; this server speaks v{PROTOCOL_VERSION} only"
    )]
    UnsupportedVersion {
        /// The `"v"` received, as JSON text.
        found: String,
    },
    /// No `"type"` or not a string.
    #[error("message has no string \"type\"; expected one of namespace_request, allocation_ended")]
    MissingType,
    /// A `"type"` v1 does not define.
    #[error("unknown message type {found:?}; v1 defines namespace_request, namespace_response, allocation_ended, ack, error")]
    UnknownType {
        /// The type received.
        found: String,
    },
    /// Fields missing or of the wrong JSON type.
    #[error("{type_name}: {reason}")]
    BadFields {
        /// The message type.
        type_name: &'static str,
        /// serde's reason (names the field).
        reason: String,
    },
    /// `allocation_id` breaks the id rule.
    #[error("{0}")]
    BadAllocationId(#[from] InvalidAllocationId),
    /// `namespaces` is empty.
    #[error("namespace_request: \"namespaces\" is empty; list at least one of \"Pid\", \"Net\", \"Mount\"")]
    NoNamespaces,
    /// A namespace type listed twice.
    #[error("namespace_request: \"namespaces\" lists {0:?} twice")]
    DuplicateNamespace(NamespaceType),
    /// `uenv_image` without a mount namespace to mount it in.
    #[error("namespace_request: \"uenv_image\" needs \"Mount\" in \"namespaces\" (the image is mounted inside the allocation's mount namespace)")]
    UenvWithoutMount,
    /// `cgroup_scope` not a string or breaking the scope rule.
    #[error("{0}")]
    BadCgroupScope(#[from] InvalidCgroupScope),
    /// `cgroup_scope` present but not a string.
    #[error("namespace_request: \"cgroup_scope\" must be a string (a cgroup path relative to the cgroup root) or null")]
    CgroupScopeNotAString,
    /// `uenv_image` empty, too long or containing NUL.
    #[error("namespace_request: \"uenv_image\" {reason}")]
    BadUenvImage {
        /// What is wrong with it.
        reason: String,
    },
}

/// Decode one wire message. Never panics, whatever `bytes` holds.
///
/// # Errors
///
/// [`DecodeError`] naming the broken rule; [`allocation_id_hint`] recovers the
/// allocation id (if any) to echo in the `error` reply.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let object = parse_envelope(bytes)?;
    let type_name = match object.get("type") {
        Some(Value::String(t)) => t.as_str(),
        _ => return Err(DecodeError::MissingType),
    };
    match type_name {
        "namespace_request" => {
            let request: NamespaceRequest = fields("namespace_request", &object)?;
            validate_request(&request)?;
            let cgroup_scope = match object.get("cgroup_scope") {
                None | Some(Value::Null) => None,
                Some(Value::String(scope)) => Some(CgroupScope::parse(scope)?),
                Some(_) => return Err(DecodeError::CgroupScopeNotAString),
            };
            Ok(Message::NamespaceRequest(WireRequest {
                request,
                cgroup_scope,
            }))
        }
        "namespace_response" => {
            let response: NamespaceResponse = fields("namespace_response", &object)?;
            AllocationId::parse(&response.allocation_id)?;
            Ok(Message::NamespaceResponse(response))
        }
        "allocation_ended" => {
            let ended: hpc_node::namespace::AllocationEnded = fields("allocation_ended", &object)?;
            AllocationId::parse(&ended.allocation_id)?;
            Ok(Message::AllocationEnded {
                allocation_id: ended.allocation_id,
            })
        }
        "ack" => {
            let ack: hpc_node::namespace::AllocationEnded = fields("ack", &object)?;
            Ok(Message::Ack {
                allocation_id: ack.allocation_id,
            })
        }
        "error" => Ok(Message::Error(fields::<ErrorReply>("error", &object)?)),
        other => Err(DecodeError::UnknownType {
            found: other.chars().take(64).collect(),
        }),
    }
}

/// The `allocation_id` string of a message that failed to decode, if it has
/// one, so the `error` reply can name it. Bounded: longer ids are not echoed.
pub(crate) fn allocation_id_hint(bytes: &[u8]) -> Option<String> {
    let object = parse_envelope(bytes).ok()?;
    match object.get("allocation_id") {
        Some(Value::String(id)) if id.len() <= crate::allocation_id::MAX_ALLOCATION_ID_LEN => {
            Some(id.clone())
        }
        _ => None,
    }
}

fn parse_envelope(bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge { len: bytes.len() });
    }
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson {
        reason: e.to_string(),
    })?;
    let object = match value {
        Value::Object(object) => object,
        other => {
            return Err(DecodeError::NotAnObject {
                found: json_kind(&other),
            })
        }
    };
    match object.get("v") {
        None => Err(DecodeError::MissingVersion),
        Some(v) if v.as_u64() == Some(PROTOCOL_VERSION) => Ok(object),
        Some(v) => Err(DecodeError::UnsupportedVersion {
            found: v.to_string().chars().take(32).collect(),
        }),
    }
}

fn fields<T: DeserializeOwned>(
    type_name: &'static str,
    object: &Map<String, Value>,
) -> Result<T, DecodeError> {
    serde_json::from_value(Value::Object(object.clone())).map_err(|e| DecodeError::BadFields {
        type_name,
        reason: e.to_string(),
    })
}

fn validate_request(request: &NamespaceRequest) -> Result<(), DecodeError> {
    AllocationId::parse(&request.allocation_id)?;
    if request.namespaces.is_empty() {
        return Err(DecodeError::NoNamespaces);
    }
    let mut seen = HashSet::new();
    for ns in &request.namespaces {
        if !seen.insert(*ns) {
            return Err(DecodeError::DuplicateNamespace(*ns));
        }
    }
    if let Some(image) = &request.uenv_image {
        if !seen.contains(&NamespaceType::Mount) {
            return Err(DecodeError::UenvWithoutMount);
        }
        let reason = if image.is_empty() {
            Some("is empty; name an image or omit the field".to_owned())
        } else if image.len() > MAX_UENV_IMAGE_LEN {
            Some(format!(
                "is {} bytes; at most {MAX_UENV_IMAGE_LEN} are allowed",
                image.len()
            ))
        } else if image.contains('\0') {
            Some("contains a NUL byte".to_owned())
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(DecodeError::BadUenvImage { reason });
        }
    }
    Ok(())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Check a request that did not come through [`decode`] (a provider called
/// directly) against the same rules.
///
/// # Errors
///
/// As [`decode`] for a `namespace_request`.
pub fn validate(request: &NamespaceRequest) -> Result<AllocationId, DecodeError> {
    validate_request(request)?;
    Ok(AllocationId::parse(&request.allocation_id)?)
}
