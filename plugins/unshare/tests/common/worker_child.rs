//! A worker played by this very test binary, re-run as a child: the test
//! process stands in for nodeinit's keeper (`NODEINIT_KEEPER_PID` names it,
//! so the backend's holders are the persistent kind), the child serves the
//! handoff socket until its stdin closes.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nodeinit_handoff::HandoffServer;
use nodeinit_unshare::persist::KEEPER_PID_ENV;

/// Run `test` of this binary as a worker child with `dir_var=dir`; returns
/// once it serves. Its stdin is the stop switch: drop it (or kill the child).
pub fn start(test: &str, dir_var: &str, dir: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(dir_var, dir)
        .env(KEEPER_PID_ENV, std::process::id().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    super::await_ready_line(&mut child, "WORKER-READY", "the worker");
    child
}

/// In the child: say it serves, serve until stdin closes, exit.
pub fn serve_until_stdin_closes(server: HandoffServer) -> ! {
    println!("WORKER-READY");
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
    server.shutdown();
    std::process::exit(0);
}
