//! Log output: `tracing` events to stderr (the console, as PID 1) as
//! `time level target: message key=value...`, filtered by `NODEINIT_LOG`
//! (`info` by default; any `tracing` filter such as `debug` or
//! `nodeinit::plugin=trace`). Lines are written by [`console_output`]:
//! blocking in the keeper, never blocking in the worker.

mod console_output;

pub use console_output::{flush, never_block};

use console_output::ConsoleOutput;

use tracing_subscriber::EnvFilter;

/// Environment variable holding the log filter.
pub const LOG_ENV: &str = "NODEINIT_LOG";

/// Installs the subscriber (once).
pub fn init() {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ConsoleOutput)
        .with_ansi(false)
        .try_init();
}
