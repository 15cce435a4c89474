//! Catching panics so PID 1 never unwinds out of `main` (which would panic
//! the kernel): the panic is reported with its location and handed back as a
//! value for the caller to turn into `on_failure`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};

/// A caught panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanicReport {
    /// The panic message.
    pub message: String,
    /// `file:line:column`, when the hook saw it.
    pub location: Option<String>,
}

impl std::fmt::Display for PanicReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(location) => write!(f, "panic at {location}: {}", self.message),
            None => write!(f, "panic: {}", self.message),
        }
    }
}

static LAST_LOCATION: Mutex<Option<String>> = Mutex::new(None);

/// Replace the default hook (which prints to a possibly detached stderr)
/// with one that logs the panic and remembers where it happened.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        tracing::error!(
            location = location.as_deref().unwrap_or("?"),
            "{}",
            payload_message(info.payload())
        );
        *LAST_LOCATION.lock().unwrap_or_else(PoisonError::into_inner) = location;
    }));
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Run `f`, turning a panic into a [`PanicReport`].
///
/// # Errors
///
/// The report of the panic.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, PanicReport> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| PanicReport {
        message: payload_message(payload.as_ref()),
        location: LAST_LOCATION
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_reports() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        let report = catch_panic(|| -> u8 { panic!("plugin table corrupt: {}", 3) }).unwrap_err();
        assert_eq!(report.message, "plugin table corrupt: 3");
        assert!(report.to_string().contains("plugin table corrupt: 3"));
        let report = catch_panic(|| std::panic::panic_any(5u32)).unwrap_err();
        assert_eq!(report.message, "non-string panic payload");
    }
}
