//! Attaching stdin/stdout/stderr to the console. The kernel starts init with
//! whatever it had (often nothing usable); logs and the rescue shell need the
//! console. This module never closes the console afterwards.

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

/// Open `console` (normally `/dev/console`) and make it fds 0, 1 and 2.
///
/// # Errors
///
/// The OS error with the path, when the device cannot be opened or duplicated.
pub fn attach_stdio_to_console(console: &Path) -> std::io::Result<()> {
    let with_path = |e: nix::Error| {
        std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!(
                "attach stdio to {}: {e} (is devtmpfs mounted on /dev?)",
                console.display()
            ),
        )
    };
    let fd = open(
        console,
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(with_path)?;
    // SAFETY: `fd` was just returned by open(2) and is owned by nothing else.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    for target in 0..=2 {
        // dup2 clears FD_CLOEXEC on the copy, so 0-2 survive exec into the agent.
        nix::unistd::dup2(owned.as_raw_fd(), target).map_err(with_path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_console_names_the_path() {
        let err = attach_stdio_to_console(Path::new("/nonexistent/console")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/console"), "{err}");
    }
}
