//! sd_notify: one datagram to `$NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace), as systemd and other supervisors expect. Absent
//! variable means no supervisor is listening: nothing to do.

use std::os::unix::ffi::OsStrExt;

use nix::sys::socket::{sendto, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

use crate::ReadinessSetupError;

/// Send `message` (e.g. `READY=1`) to `notify_socket`.
pub(crate) fn send(
    notify_socket: &std::ffi::OsStr,
    message: &str,
) -> Result<(), ReadinessSetupError> {
    let bytes = notify_socket.as_bytes();
    let hint = "check NOTIFY_SOCKET; unset it when no supervisor listens";
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name),
        None => UnixAddr::new(bytes),
    }
    .map_err(|e| ReadinessSetupError::io("parse NOTIFY_SOCKET", notify_socket, e, hint))?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| ReadinessSetupError::io("create notify socket", notify_socket, e, hint))?;
    sendto(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        message.as_bytes(),
        &addr,
        MsgFlags::empty(),
    )
    .map_err(|e| ReadinessSetupError::io("send to NOTIFY_SOCKET", notify_socket, e, hint))?;
    Ok(())
}
