//! Test support: run one `#[ignore]`d helper test of this very test binary
//! in a child process, optionally under a wrapper such as `unshare -m`.
//! Signals, reaping and mounts are process-wide; doing them inside the
//! multi-threaded test harness would disturb the other tests.

use std::process::{Command, Stdio};

/// Environment variable naming the helper that is allowed to run.
pub(crate) const HELPER_ENV: &str = "NODEINIT_TEST_HELPER";

/// Build the command running helper test `name` (its full path, e.g.
/// `pid1::early_mounts::kernel_tests::helper`) under `wrapper`.
pub(crate) fn helper_command(name: &str, wrapper: &[&str]) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    command
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(HELPER_ENV, name)
        .stdin(Stdio::null());
    command
}

/// Called first by every helper: fail loudly when run by hand.
pub(crate) fn assert_launched_as_helper(name: &str) {
    assert_eq!(
        std::env::var(HELPER_ENV).ok().as_deref(),
        Some(name),
        "{name} is a helper process started by another test; it cannot run on its own"
    );
}
