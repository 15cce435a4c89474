//! A minimal consumer of handoff protocol v1 (`handoff/PROTOCOL.md`).
//!
//! Owns one request/response exchange on `HANDOFF_SOCKET_PATH`: a
//! `SOCK_SEQPACKET` message `{"v":1,"type":"namespace_request", ...}` and the
//! `namespace_response` (or `error`) with its `SCM_RIGHTS` FDs. Written from
//! the protocol text rather than with `nodeinit_handoff`'s client on purpose
//! where that client is missing: an independent reading of the wire format.
//! Must never fall back to creating namespaces itself: the test wants the
//! provider's.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use hpc_node::namespace::HANDOFF_SOCKET_PATH;
use hpc_node::{NamespaceRequest, NamespaceResponse};
use nix::sys::socket::{
    connect, recvmsg, sendmsg, socket, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};

const MAX_MESSAGE: usize = 64 * 1024;
const MAX_FDS: usize = 8;

#[derive(serde::Serialize)]
struct Envelope<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    request: &'a NamespaceRequest,
}

/// Sends `request` and returns the response with its namespace FDs, in `fd_types` order.
pub fn request_namespaces(
    request: &NamespaceRequest,
) -> Result<(NamespaceResponse, Vec<OwnedFd>), String> {
    let socket = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket(AF_UNIX, SOCK_SEQPACKET) failed: {e}"))?;
    let address =
        UnixAddr::new(HANDOFF_SOCKET_PATH).map_err(|e| format!("bad socket path: {e}"))?;
    connect(socket.as_raw_fd(), &address)
        .map_err(|e| format!("connect({HANDOFF_SOCKET_PATH}) failed: {e}"))?;
    let message = serde_json::to_vec(&Envelope {
        v: 1,
        kind: "namespace_request",
        request,
    })
    .map_err(|e| format!("encoding the request failed: {e}"))?;
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(&message)],
        &[],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("sending namespace_request failed: {e}"))?;

    let mut buffer = vec![0u8; MAX_MESSAGE];
    let mut control = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buffer)];
    let received = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receiving the response failed: {e}"))?;
    let mut fds = Vec::new();
    for cmsg in received
        .cmsgs()
        .map_err(|e| format!("reading SCM_RIGHTS failed: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in this process for us
                // (SCM_RIGHTS); nothing else owns it, so OwnedFd may close it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let length = received.bytes;
    let reply: serde_json::Value = serde_json::from_slice(&buffer[..length]).map_err(|e| {
        format!(
            "response is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&buffer[..length])
        )
    })?;
    match reply.get("type").and_then(|t| t.as_str()) {
        Some("namespace_response") => {
            let response: NamespaceResponse = serde_json::from_value(reply.clone())
                .map_err(|e| format!("namespace_response does not decode ({e}): {reply}"))?;
            Ok((response, fds))
        }
        _ => Err(format!("provider answered {reply} with {} FDs", fds.len())),
    }
}
