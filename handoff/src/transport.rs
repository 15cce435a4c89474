//! Moving one protocol message (and its FDs) over an `AF_UNIX` `SOCK_SEQPACKET` socket.
//!
//! Owns framing at the kernel level: one `sendmsg` = one message, FDs as
//! `SCM_RIGHTS`, truncation detection for oversized messages (and a control
//! buffer large enough for any number of FDs a peer may attach), `MSG_NOSIGNAL`
//! so a vanished peer is an `EPIPE` error and never a `SIGPIPE`. Every FD it
//! receives becomes an [`OwnedFd`] at once (and `MSG_CMSG_CLOEXEC`), so none
//! can leak. It must never interpret the bytes.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};

use crate::protocol::MAX_MESSAGE_BYTES;

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
    send_with(socket, bytes, fds, MsgFlags::MSG_NOSIGNAL)
}

/// [`send_message`] that never blocks: `WouldBlock` when the socket's send
/// buffer is full (a peer that does not read its replies).
///
/// # Errors
///
/// As [`send_message`], plus `WouldBlock`.
pub fn try_send_message(socket: impl AsFd, bytes: &[u8], fds: &[impl AsRawFd]) -> io::Result<()> {
    send_with(
        socket,
        bytes,
        fds,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    )
}

fn send_with(
    socket: impl AsFd,
    bytes: &[u8],
    fds: &[impl AsRawFd],
    flags: MsgFlags,
) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(socket.as_fd().as_raw_fd(), &iov, cmsgs, flags, None)?;
    if sent != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes of a message", bytes.len()),
        ));
    }
    Ok(())
}

/// The most FDs Linux passes in one message (`SCM_MAX_FD`). The receive
/// buffer has room for all of them, so the kernel never truncates the
/// control data: every FD a peer sends is installed, owned here, and closed.
pub const KERNEL_MAX_FDS_PER_MESSAGE: usize = 253;

/// Receive one message.
///
/// Oversized messages are reported as [`Received::TooLarge`] (their FDs, if
/// any, are closed). Every FD that rode along becomes an [`OwnedFd`] in
/// [`Received::Message::fds`] (at most [`KERNEL_MAX_FDS_PER_MESSAGE`]), even
/// when the control data was truncated, so none stays open unowned.
///
/// # Errors
///
/// The `recvmsg` error (`EAGAIN` on a receive timeout).
pub fn receive_message(socket: impl AsFd) -> io::Result<Received> {
    receive_with(socket, RecvFlags::empty())
}

/// [`receive_message`] without blocking: `EAGAIN`/`WouldBlock` when no
/// message is queued.
///
/// # Errors
///
/// As [`receive_message`].
pub fn try_receive_message(socket: impl AsFd) -> io::Result<Received> {
    receive_with(socket, RecvFlags::DONTWAIT)
}

fn receive_with(socket: impl AsFd, extra: RecvFlags) -> io::Result<Received> {
    let mut buffer = vec![0u8; MAX_MESSAGE_BYTES + 1];
    let mut space = vec![
        MaybeUninit::<u8>::uninit();
        rustix::cmsg_space!(ScmRights(KERNEL_MAX_FDS_PER_MESSAGE))
    ];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        rustix::net::recvmsg(
            socket.as_fd(),
            &mut iov,
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::TRUNC | extra,
        )
        .map_err(io::Error::from)?
    };
    // Take ownership of every descriptor before looking at anything else:
    // whatever happens next, dropping `fds` closes them.
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let len = received.bytes;
    if received.flags.contains(ReturnFlags::TRUNC) || len > MAX_MESSAGE_BYTES {
        return Ok(Received::TooLarge { len });
    }
    if len == 0 && fds.is_empty() {
        return Ok(Received::Closed);
    }
    buffer.truncate(len);
    Ok(Received::Message { bytes: buffer, fds })
}
