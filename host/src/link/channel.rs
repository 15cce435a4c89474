//! Framing: one JSON message per `SOCK_SEQPACKET` packet, so a message is
//! never split or merged, and a dead peer is end-of-file.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest message (a plugin list with long paths fits many times over).
const MAX_MESSAGE: usize = 256 * 1024;

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
}
