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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    /// Open descriptors of this process on files inside `dir` (tests in
    /// other threads open their own, elsewhere).
    fn open_fds_in(dir: &std::path::Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .count()
    }

    fn inode(fd: &impl AsFd) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    #[test]
    fn one_message_with_its_fds_in_order() {
        let (a, b) = pair();
        let files = [tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap()];
        send_message(&a, b"{\"v\":1}", &files).unwrap();
        match receive_message(&b).unwrap() {
            Received::Message { bytes, fds } => {
                assert_eq!(bytes, b"{\"v\":1}");
                assert_eq!(fds.len(), 2);
                assert_eq!(inode(&fds[0]), inode(&files[0]));
                assert_eq!(inode(&fds[1]), inode(&files[1]));
                // Received close-on-exec.
                let flags = rustix::io::fcntl_getfd(&fds[0]).unwrap();
                assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_fd_a_peer_attaches_is_owned_and_closed_with_the_message() {
        let (a, b) = pair();
        let dir = tempfile::tempdir().unwrap();
        let many: Vec<std::fs::File> = (0..20)
            .map(|_| tempfile::tempfile_in(dir.path()).unwrap())
            .collect();
        send_message(&a, b"x", &many).unwrap();
        drop(many);
        assert_eq!(open_fds_in(dir.path()), 0);
        let received = receive_message(&b).unwrap();
        assert!(matches!(&received, Received::Message { fds, .. } if fds.len() == 20));
        assert_eq!(open_fds_in(dir.path()), 20);
        drop(received);
        assert_eq!(open_fds_in(dir.path()), 0);
    }

    #[test]
    fn an_oversized_message_is_reported_with_its_size_and_its_fds_closed() {
        let (a, b) = pair();
        rustix::net::sockopt::set_socket_send_buffer_size(&a, 4 * MAX_MESSAGE_BYTES).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let big = vec![b'x'; MAX_MESSAGE_BYTES + 10];
        send_message(&a, &big, &[tempfile::tempfile_in(dir.path()).unwrap()]).unwrap();
        match receive_message(&b).unwrap() {
            Received::TooLarge { len } => assert_eq!(len, MAX_MESSAGE_BYTES + 10),
            other => panic!("{other:?}"),
        }
        assert_eq!(open_fds_in(dir.path()), 0);
    }

    #[test]
    fn a_closed_peer_reads_as_closed_and_a_send_to_it_is_epipe_not_sigpipe() {
        let (a, b) = pair();
        drop(a);
        assert!(matches!(receive_message(&b).unwrap(), Received::Closed));
        let err = send_message(&b, b"x", &[] as &[OwnedFd]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let err = try_receive_message(&pair().0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
