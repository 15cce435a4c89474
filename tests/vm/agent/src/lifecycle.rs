//! What the agent does about its own life: run counting, crashing on
//! purpose, asking nodeinit to shut down, powering off when it is PID 1.
//!
//! Owns the run counter file (on `/run`, a tmpfs that outlives agent
//! restarts but not the VM) and every call that ends the agent. Must never
//! exit while PID 1 (the kernel would panic): it powers off instead.

use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

const RUN_COUNTER: &str = "/run/nodeinit-vm-agent.runs";

/// How many times the agent started before this run (0 on the first run).
pub fn previous_runs() -> Result<u32, String> {
    let previous = match std::fs::read_to_string(RUN_COUNTER) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .map_err(|e| format!("{RUN_COUNTER} holds {text:?}: {e}"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("cannot read {RUN_COUNTER}: {e}")),
    };
    std::fs::write(RUN_COUNTER, (previous + 1).to_string())
        .map_err(|e| format!("cannot write {RUN_COUNTER}: {e}"))?;
    Ok(previous)
}

/// Dies of SIGABRT, as a crashing agent would.
pub fn crash() -> ! {
    std::process::abort()
}

/// As PID 1 (exec mode): sync and power the VM off. Never returns.
pub fn power_off_as_pid1() -> ! {
    nix::unistd::sync();
    let error = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // reboot() only returns on failure; PID 1 must not exit, so park here
    // and let the harness timeout report it.
    eprintln!("VMTEST FAIL poweroff: reboot(RB_POWER_OFF) failed: {error:?}");
    loop {
        nix::unistd::pause();
    }
}

/// Asks PID 1 (nodeinit, supervise mode) to shut down with `signal`, then
/// waits for nodeinit's SIGTERM to the agent and returns to exit cleanly.
pub fn request_shutdown(signal: Signal) -> Result<(), String> {
    let mut wait_for = SigSet::empty();
    wait_for.add(Signal::SIGTERM);
    // Block first so the SIGTERM cannot arrive between kill() and wait().
    wait_for
        .thread_block()
        .map_err(|e| format!("blocking SIGTERM failed: {e}"))?;
    kill(Pid::from_raw(1), signal).map_err(|e| format!("kill(1, {signal}) failed: {e}"))?;
    wait_for
        .wait()
        .map(|_| ())
        .map_err(|e| format!("sigwait for SIGTERM failed: {e}"))
}
