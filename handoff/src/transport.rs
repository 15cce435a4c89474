//! Moving one protocol message (and its FDs) over an `AF_UNIX` `SOCK_SEQPACKET` socket.
//!
//! Owns framing at the kernel level: one `sendmsg` = one message, FDs as
//! `SCM_RIGHTS`, truncation detection for oversized messages, `MSG_NOSIGNAL`
//! so a vanished peer is an `EPIPE` error and never a `SIGPIPE`. Every FD it
//! receives becomes an [`OwnedFd`] at once (and `MSG_CMSG_CLOEXEC`), so none
//! can leak. It must never interpret the bytes.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::protocol::{MAX_FDS_PER_MESSAGE, MAX_MESSAGE_BYTES};

/// One message as received.
#[derive(Debug)]
pub enum Received {
    /// The peer closed the connection (a zero-length read).
    Closed,
    /// A message of at most `MAX_MESSAGE_BYTES`, with the FDs it carried.
    Message {
        /// The payload.
        bytes: Vec<u8>,
        /// FDs that rode along, in order. Owned: dropping closes them.
        fds: Vec<OwnedFd>,
    },
    /// A message larger than `MAX_MESSAGE_BYTES`; the kernel discarded the rest.
    TooLarge {
        /// Its full size in bytes (as reported with `MSG_TRUNC`).
        len: usize,
    },
}

/// Send `bytes` as one message with `fds` attached (`SCM_RIGHTS`, in order).
///
/// # Errors
///
/// The `sendmsg` error (`EPIPE` when the peer is gone, `EMSGSIZE` when
/// `bytes` exceeds the socket's send buffer).
pub fn send_message(socket: impl AsFd, bytes: &[u8], fds: &[impl AsRawFd]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        socket.as_fd().as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes of a message", bytes.len()),
        ));
    }
    Ok(())
}

/// Receive one message.
///
/// Oversized messages are reported as [`Received::TooLarge`] (their FDs, if
/// any, are closed); FDs beyond [`MAX_FDS_PER_MESSAGE`] are closed by the kernel.
///
/// # Errors
///
/// The `recvmsg` error (`EAGAIN` on a receive timeout).
pub fn receive_message(socket: impl AsFd) -> io::Result<Received> {
    let mut buffer = vec![0u8; MAX_MESSAGE_BYTES + 1];
    let mut cmsg_buffer = cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let (len, truncated, fds) = {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let message = recvmsg::<()>(
            socket.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buffer),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC,
        )?;
        let mut fds = Vec::new();
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these descriptors in this
                // process for us (SCM_RIGHTS); nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let truncated = message.flags.contains(MsgFlags::MSG_TRUNC);
        (message.bytes, truncated, fds)
    };
    if truncated || len > MAX_MESSAGE_BYTES {
        return Ok(Received::TooLarge { len });
    }
    if len == 0 && fds.is_empty() {
        return Ok(Received::Closed);
    }
    buffer.truncate(len);
    Ok(Received::Message { bytes: buffer, fds })
}
