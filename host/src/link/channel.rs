//! Framing: one JSON message per `SOCK_SEQPACKET` packet, so a message is
//! never split or merged, and a dead peer is end-of-file. A message may
//! carry descriptors (`SCM_RIGHTS`: the handoff connections a reload hands
//! over), at most [`MAX_FDS`] each.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recv, recvmsg, send, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest message (a plugin list with long paths fits many times over).
const MAX_MESSAGE: usize = 256 * 1024;

/// Most descriptors one message carries (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS: usize = 250;

/// One end of the link.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// What a receive returned.
#[derive(Debug)]
pub enum Receive<T> {
    /// A message.
    Message(T),
    /// The peer closed its end (or died).
    Closed,
}

impl Channel {
    /// A connected pair (both close-on-exec): keeper end, worker end.
    ///
    /// # Errors
    ///
    /// `socketpair(2)` failing.
    pub fn pair() -> io::Result<(Self, OwnedFd)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| io::Error::other(format!("socketpair for the worker link: {e}")))?;
        Ok((Self { fd: a }, b))
    }

    /// Wrap an inherited end.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The descriptor, to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Send one message.
    ///
    /// # Errors
    ///
    /// Encoding or `send(2)` failing (`EPIPE`: the peer is gone).
    pub fn send<T: Serialize>(&self, message: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec(message)
            .map_err(|e| io::Error::other(format!("encode link message: {e}")))?;
        if bytes.len() > MAX_MESSAGE {
            return Err(io::Error::other(format!(
                "link message of {} bytes exceeds {MAX_MESSAGE}",
                bytes.len()
            )));
        }
        loop {
            match send(self.fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }

    /// Send one message with `fds` attached (at most [`MAX_FDS`]); the
    /// peer gets its own duplicates, ours stay open until dropped.
    ///
    /// # Errors
    ///
    /// Too many descriptors, encoding or `sendmsg(2)` failing.
    pub fn send_with_fds<T: Serialize>(&self, message: &T, fds: &[OwnedFd]) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::other(format!(
                "{} descriptors in one link message exceed {MAX_FDS}",
                fds.len()
            )));
        }
        let bytes = serde_json::to_vec(message)
            .map_err(|e| io::Error::other(format!("encode link message: {e}")))?;
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsgs = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
        let iov = [IoSlice::new(&bytes)];
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }

    /// Receive one message and the descriptors it carried (blocks). Every
    /// descriptor is owned (close-on-exec) at once, so none can leak.
    ///
    /// # Errors
    ///
    /// `recvmsg(2)` failing, a truncated message or control data, or a
    /// message that does not decode.
    pub fn receive_with_fds<T: DeserializeOwned>(&self) -> io::Result<(Receive<T>, Vec<OwnedFd>)> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let (n, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                        if let ControlMessageOwned::ScmRights(raw) = cmsg {
                            // SAFETY: SCM_RIGHTS installed these descriptors
                            // in this process just now; nothing else owns them.
                            fds.extend(
                                raw.into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                    if msg
                        .flags
                        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
                    {
                        return Err(io::Error::other(
                            "link message or its descriptors truncated (more than the link carries)",
                        ));
                    }
                    break (msg.bytes, fds);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ECONNRESET) => return Ok((Receive::Closed, Vec::new())),
                Err(e) => return Err(io::Error::from(e)),
            }
        };
        if n == 0 {
            return Ok((Receive::Closed, fds));
        }
        serde_json::from_slice(&buf[..n])
            .map(|m| (Receive::Message(m), fds))
            .map_err(|e| io::Error::other(format!("undecodable link message: {e}")))
    }

    /// Receive one message (blocks).
    ///
    /// # Errors
    ///
    /// `recv(2)` failing, or a message that does not decode (the peer is
    /// not a nodeinit of this version).
    pub fn receive<T: DeserializeOwned>(&self) -> io::Result<Receive<T>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(n) => break n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ECONNRESET) => return Ok(Receive::Closed),
                Err(e) => return Err(io::Error::from(e)),
            }
        };
        if n == 0 {
            return Ok(Receive::Closed);
        }
        serde_json::from_slice(&buf[..n])
            .map(Receive::Message)
            .map_err(|e| io::Error::other(format!("undecodable link message: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{FromWorker, StepReport};

    #[test]
    fn messages_cross_whole_and_a_closed_peer_is_end_of_file() {
        let (keeper, worker) = Channel::pair().unwrap();
        let worker = Channel::from_fd(worker);
        let step = StepReport {
            phase: "readiness".into(),
            kind: Some("readiness".into()),
            plugin: Some("faulty".into()),
            method: "signal_ready".into(),
            timeout_secs: 60,
        };
        worker.send(&FromWorker::Step(step.clone())).unwrap();
        worker.send(&FromWorker::Serving).unwrap();
        match keeper.receive::<FromWorker>().unwrap() {
            Receive::Message(FromWorker::Step(s)) => assert_eq!(s, step),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            keeper.receive::<FromWorker>().unwrap(),
            Receive::Message(FromWorker::Serving)
        ));
        drop(worker);
        assert!(matches!(
            keeper.receive::<FromWorker>().unwrap(),
            Receive::Closed
        ));
    }

    #[test]
    fn descriptors_cross_with_their_message() {
        let (keeper, worker) = Channel::pair().unwrap();
        let worker = Channel::from_fd(worker);
        let (read, write) = nix::unistd::pipe().unwrap();
        worker
            .send_with_fds(&FromWorker::Serving, &[write])
            .unwrap();
        let (message, mut fds) = keeper.receive_with_fds::<FromWorker>().unwrap();
        assert!(matches!(message, Receive::Message(FromWorker::Serving)));
        assert_eq!(fds.len(), 1);
        // The received end is the same pipe.
        nix::unistd::write(fds.remove(0), b"x").unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(read.as_raw_fd(), &mut byte).unwrap(), 1);
        let too_many: Vec<OwnedFd> = (0..=MAX_FDS)
            .map(|_| nix::unistd::pipe().unwrap().0)
            .collect();
        assert_eq!(
            worker
                .send_with_fds(&FromWorker::Serving, &too_many)
                .unwrap_err()
                .to_string(),
            format!(
                "{} descriptors in one link message exceed {MAX_FDS}",
                MAX_FDS + 1
            )
        );
    }
}
