//! The whole boot, end to end, as the keeper runs it: prepare (keeper
//! phases and one watched worker), apply `on_failure` when a required phase
//! failed, then hand the node to its agent — exec (the worker has exited:
//! nothing of a plugin is mapped in the agent) or supervise (the worker
//! keeps serving) — or, with no agent configured, keep serving until a
//! shutdown signal.
//!
//! As PID 1 nothing here returns on the shutdown paths: they end in
//! reboot(2). Not as PID 1 (tests, the sandbox) they return an exit code.

use std::time::Duration;

use crate::agent::{
    exec_agent, preflight, AgentCommand, AgentSupervision, RestartBackoff, RestartPolicy,
    SuperviseError, SuperviseOptions, SuperviseOutcome, DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY,
};
use crate::config::{HandoffMode, OnFailure};
use crate::keeper::{KeeperLoop, LoopEnd};
use crate::pid1::{
    decide_failure_outcome, finish_shutdown, perform_failure_outcome, reap_children,
    rescue_shell_at, FailureContext, ShutdownAction, SignalPipe,
};
use crate::placement::Placement;

use super::phases::PhaseResult;
use super::sequence::{prepare, BootEnv, Prepared};

/// How long an agent must run before its restart delay resets.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Runs the boot; returns the process exit code (never, as PID 1 on a real
/// node, on the shutdown paths).
pub fn boot(env: &BootEnv) -> i32 {
    let mut prepared = prepare(env);
    if let Some(action) = prepared.shutdown_requested {
        prepared.write_report(env);
        prepared.release();
        shut_down(env, action);
        return 0;
    }
    if let Some(reason) = prepared.phases.first_failure() {
        if let Some(code) = fail(env, &mut prepared, &reason) {
            return code;
        }
    }
    let handoff = prepared
        .config
        .as_ref()
        .and_then(|c| c.config.handoff.clone());
    let Some(handoff) = handoff else {
        prepared.phases.run("handoff", || {
            PhaseResult::NotApplicable("no [handoff] agent configured".into())
        });
        prepared.write_report(env);
        return serve_until_shutdown(env, &mut prepared);
    };
    let node_id = prepared.node_id.clone();
    let mut verdict: Result<AgentCommand, String> = Err(String::new());
    prepared.phases.run("handoff", || {
        match preflight(&handoff, node_id.as_ref(), env.placement.is_pid1()) {
            Ok(ok) => {
                for warning in &ok.warnings {
                    tracing::warn!("{warning}");
                }
                verdict = Ok(ok.command);
                PhaseResult::Ok
            }
            Err(e) => {
                verdict = Err(e.to_string());
                PhaseResult::Failed {
                    reason: e.to_string(),
                    required: true,
                }
            }
        }
    });
    prepared.write_report(env);
    let command = match verdict {
        Ok(command) => command,
        Err(reason) => {
            return fail(
                env,
                &mut prepared,
                &format!("phase handoff failed: {reason}"),
            )
            .unwrap_or(1)
        }
    };
    match handoff.mode {
        HandoffMode::Exec => {
            // The worker has exited; the keeper holds no plugin, no socket.
            prepared.release();
            tracing::info!(agent = %command.program.display(), "exec");
            let err = exec_agent(&command);
            fail(
                env,
                &mut prepared,
                &format!("exec of the agent failed: {err}"),
            )
            .unwrap_or(1)
        }
        HandoffMode::Supervise => {
            let Some(signals) = prepared.signals else {
                return fail(env, &mut prepared, "signal handlers not installed").unwrap_or(1);
            };
            let mut options = SuperviseOptions {
                stop_signal: handoff.effective_stop_signal(),
                grace: Duration::from_secs(handoff.grace_secs),
                backoff: RestartBackoff::new(
                    DEFAULT_INITIAL_DELAY,
                    DEFAULT_MAX_DELAY,
                    STABLE_AFTER,
                ),
                restart: if env.placement == Placement::Sandbox {
                    RestartPolicy::Never
                } else {
                    RestartPolicy::Always
                },
            };
            // One loop: the agent, the worker, the control socket; it reaps every child.
            prepared.keep_worker(env, true);
            let mut observe = |event: &crate::agent::SuperviseEvent| {
                tracing::info!(?event, "supervise");
            };
            let mut agent = AgentSupervision::new(&command, &mut options, &mut observe);
            let end = KeeperLoop {
                signals,
                reap_all: true,
                boot: None,
                workers: prepared.supervisor.as_mut(),
                agent: Some(&mut agent),
                stop: None,
            }
            .run();
            let outcome = match end {
                LoopEnd::Agent(outcome) => Ok(outcome),
                LoopEnd::Shutdown { signal, action } => {
                    Ok(SuperviseOutcome::Shutdown { signal, action })
                }
                LoopEnd::PollFailed(e) => Err(SuperviseError::Poll(e)),
                LoopEnd::Stopped | LoopEnd::Boot => {
                    Err(SuperviseError::Poll(nix::errno::Errno::EINTR))
                }
            };
            prepared.release();
            match outcome {
                Ok(SuperviseOutcome::Shutdown { action, .. }) => {
                    shut_down(env, action);
                    0
                }
                Ok(SuperviseOutcome::AgentFinished { code }) => code,
                Err(e) => fail(env, &mut prepared, &e.to_string()).unwrap_or(1),
            }
        }
    }
}

/// Applies `on_failure`; returns the exit code when the process should exit,
/// `None` when boot goes on (`continue`).
fn fail(env: &BootEnv, prepared: &mut Prepared, reason: &str) -> Option<i32> {
    prepared.write_report(env);
    let on_failure = prepared
        .config
        .as_ref()
        .map_or_else(super::on_failure, |c| c.config.host.on_failure);
    let outcome = decide_failure_outcome(on_failure, &failure_context(env.placement));
    if on_failure != OnFailure::Continue {
        prepared.release();
    }
    perform_failure_outcome(&outcome, reason)
}

/// The context `on_failure` is decided in.
pub fn failure_context(placement: Placement) -> FailureContext {
    FailureContext {
        is_pid1: placement.is_pid1(),
        sandbox: placement == Placement::Sandbox,
        shell: rescue_shell_at(std::path::Path::new("/bin/sh")),
    }
}

/// No agent: the worker serves; reap orphans until a shutdown signal.
fn serve_until_shutdown(env: &BootEnv, prepared: &mut Prepared) -> i32 {
    let Some(signals) = prepared.signals else {
        return fail(env, prepared, "signal handlers not installed").unwrap_or(1);
    };
    tracing::info!("no agent configured; serving until a shutdown signal");
    let reap_all = env.placement.reaps_orphans();
    prepared.keep_worker(env, reap_all);
    let action = wait_for_shutdown(signals, reap_all, prepared.supervisor.as_mut());
    prepared.release();
    shut_down(env, action);
    0
}

/// The keeper's loop with no agent: reaps (when `reap_all`) and serves the
/// worker until a shutdown signal; returns what the signal asks.
fn wait_for_shutdown(
    signals: &SignalPipe,
    reap_all: bool,
    workers: Option<&mut crate::keeper::WorkerSupervisor>,
) -> ShutdownAction {
    let mut keeper = KeeperLoop {
        signals,
        reap_all,
        boot: None,
        workers,
        agent: None,
        stop: None,
    };
    loop {
        match keeper.run() {
            LoopEnd::Shutdown { action, .. } => return action,
            LoopEnd::PollFailed(e) => {
                tracing::error!("keeper: poll failed: {e}; waiting on");
                std::thread::sleep(Duration::from_secs(1));
            }
            LoopEnd::Agent(_) | LoopEnd::Stopped | LoopEnd::Boot => {}
        }
    }
}

/// The last resort of a real PID 1 whose boot ended without a handoff:
/// never exit (that panics the kernel); reap, and obey shutdown signals.
pub fn idle_as_pid1() -> ! {
    loop {
        match SignalPipe::install() {
            Ok(signals) => finish_shutdown(wait_for_shutdown(signals, true, None), true),
            Err(e) => {
                tracing::error!("signal handlers: {e}; reaping only");
                reap_children();
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn shut_down(env: &BootEnv, action: ShutdownAction) {
    if !env.placement.owns_the_machine() {
        tracing::info!(
            action = action.as_str(),
            placement = env.placement.as_str(),
            "not carrying out the shutdown action"
        );
        nix::unistd::sync();
        return;
    }
    finish_shutdown(action, true);
}
