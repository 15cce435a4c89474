//! Test support: re-run a test of this very test binary in a child process
//! (optionally under a wrapper such as `unshare -m`) where it plays a helper
//! role instead of its own body. Signals, reaping and mounts are
//! process-wide; doing them inside the multi-threaded test harness would
//! disturb the other tests.
//!
//! The child runs the *same* test (no `#[ignore]`d helper tests that would
//! show as skipped): the test's first line is
//! `if runs_as_helper(HELPER, helper_fn) { return; }`.

use std::process::{Command, Stdio};

/// Environment variable naming the helper role the child plays.
const HELPER_ENV: &str = "NODEINIT_TEST_HELPER";

/// Build the command re-running test `test` (its full path, e.g.
/// `agent::exec::tests::exec_leaks_no_descriptor`) in the helper role
/// `role`, under `wrapper`.
pub(crate) fn helper_command(test: &str, role: &str, wrapper: &[&str]) -> Command {
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
        .args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(HELPER_ENV, role)
        .stdin(Stdio::null());
    command
}

/// In a child started by [`helper_command`] for `role`: run `helper` and
/// return true (the test then returns). Everywhere else: false.
pub(crate) fn runs_as_helper(role: &str, helper: impl FnOnce()) -> bool {
    if std::env::var(HELPER_ENV).ok().as_deref() == Some(role) {
        helper();
        true
    } else {
        false
    }
}
