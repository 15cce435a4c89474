//! Supervision against real processes and signals. nodeinit runs not as
//! PID 1 but as a child subreaper, in a helper process (this test binary
//! re-run on the same test in the helper role), because signals and reaping are
//! process-wide. The helper prints one line per event; the tests read them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

use crate::agent::{
    supervise, AgentCommand, RestartBackoff, RestartPolicy, SuperviseEvent, SuperviseOptions,
};
use crate::pid1::test_process::{helper_command, runs_as_helper};
use crate::pid1::{become_child_subreaper, SignalPipe};

const HELPER: &str = "agent::supervise_tests::helper_supervisor";
/// Bound on every wait for an event, so a broken supervisor fails the test instead of hanging it.
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

fn env_ms(name: &str) -> Duration {
    Duration::from_millis(std::env::var(name).unwrap().parse().unwrap())
}

fn helper_supervisor() {
    become_child_subreaper().unwrap();
    let signals = SignalPipe::install().unwrap();
    let command = AgentCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), std::env::var("NODEINIT_TEST_AGENT").unwrap()],
        env: vec![],
    };
    let stop_signal = std::env::var("NODEINIT_TEST_STOP_SIGNAL")
        .map_or(Signal::SIGTERM, |name| name.parse().unwrap());
    let mut options = SuperviseOptions {
        stop_signal,
        grace: env_ms("NODEINIT_TEST_GRACE_MS"),
        // Short delays keep the test fast; `stable_after` is out of reach so
        // a slow machine cannot reset the schedule mid-test.
        backoff: RestartBackoff::new(
            Duration::from_millis(10),
            Duration::from_millis(40),
            Duration::from_secs(3600),
        ),
        restart: RestartPolicy::Always,
    };
    let outcome = supervise(&command, &mut options, signals, &mut |event| match event {
        SuperviseEvent::Started { pid } => println!("EVENT started pid={pid}"),
        SuperviseEvent::Exited { pid, status } => {
            println!("EVENT exited pid={pid} status={status}")
        }
        SuperviseEvent::RestartScheduled { attempt, delay } => {
            println!(
                "EVENT restart attempt={attempt} delay_ms={}",
                delay.as_millis()
            )
        }
        SuperviseEvent::OrphanReaped { pid, status } => {
            println!("EVENT orphan pid={pid} status={status}")
        }
        SuperviseEvent::Stopping { pid, signal } => {
            println!("EVENT stopping pid={pid} signal={}", signal.as_str())
        }
        SuperviseEvent::ShutdownRequested { signal } => {
            println!("EVENT shutdown signal={}", signal.as_str())
        }
        other => println!("EVENT other {other:?}"),
    })
    .unwrap();
    println!("OUTCOME {outcome:?}");
}

/// The helper process; killed with its whole process group (agent and
/// orphans included) if the test fails half-way.
struct Supervisor {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Supervisor {
    /// Starts the helper by re-running `test` (the calling test's name).
    fn start(test: &str, agent_script: &str, grace_ms: u64, extra_env: &[(&str, &str)]) -> Self {
        let mut command = helper_command(&format!("agent::supervise_tests::{test}"), HELPER, &[]);
        command
            .env("NODEINIT_TEST_AGENT", agent_script)
            .env("NODEINIT_TEST_GRACE_MS", grace_ms.to_string())
            .envs(extra_env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The first line matching `pred`, among those seen or still to come
    /// (the agent and the supervisor write to the same pipe, in any order).
    fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| pred(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + EVENT_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {EVENT_DEADLINE:?}; saw {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("supervisor ended before {what}; saw {:#?}", self.seen)
                }
            }
        }
    }

    /// SIGTERM the supervisor and collect everything until it exits.
    fn terminate(&mut self) -> std::process::ExitStatus {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        self.expect("OUTCOME", |l| l.starts_with("OUTCOME"));
        self.reap()
    }

    /// Waits for the supervisor's exit, kills what is left of its process
    /// group (an agent's child, e.g. a `sleep 1000` whose shell was killed,
    /// would live on holding the test binary's stdout pipe), then reaps it:
    /// unreaped, its pid cannot name another process's group.
    fn reap(&mut self) -> std::process::ExitStatus {
        let exited = waitid(
            Id::Pid(self.pid()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        );
        assert!(exited.is_ok(), "waitid on the supervisor: {exited:?}");
        let _ = killpg(self.pid(), Signal::SIGKILL);
        self.child.wait().unwrap()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Not reaped yet (running or a zombie): its group is still ours.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
        if waitid(Id::Pid(self.pid()), flags).is_ok() {
            let _ = killpg(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// The supervisor's event and outcome lines, in order.
fn protocol_lines(seen: &[String]) -> impl Iterator<Item = &str> {
    seen.iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("EVENT") || l.starts_with("OUTCOME"))
}

fn process_exists(pid: &str) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn failing_agent_is_restarted_with_growing_delays() {
    if runs_as_helper(HELPER, helper_supervisor) {
        return;
    }
    let mut sup = Supervisor::start(
        "failing_agent_is_restarted_with_growing_delays",
        "exit 1",
        10_000,
        &[],
    );
    let mut delays = Vec::new();
    for attempt in 1..=5 {
        let prefix = format!("EVENT restart attempt={attempt} ");
        let restart = sup.expect("restart", |l| l.starts_with(&prefix));
        delays.push(field(&restart, "delay_ms").parse::<u64>().unwrap());
    }
    let exits: Vec<&String> = sup
        .seen
        .iter()
        .filter(|l| l.starts_with("EVENT exited"))
        .collect();
    assert!(
        exits.len() >= 5 && exits.iter().all(|l| l.ends_with("status=exited 1")),
        "{exits:#?}"
    );
    assert_eq!(delays, [10, 20, 40, 40, 40]);
    let status = sup.terminate();
    assert!(
        status.success(),
        "supervisor exit: {status}; saw {:#?}",
        sup.seen
    );
    assert!(
        sup.seen
            .iter()
            .any(|l| l == "EVENT shutdown signal=SIGTERM"),
        "{:#?}",
        sup.seen
    );
}

#[test]
fn sigterm_stops_the_agent_and_nodeinit_exits_zero() {
    if runs_as_helper(HELPER, helper_supervisor) {
        return;
    }
    let mut sup = Supervisor::start(
        "sigterm_stops_the_agent_and_nodeinit_exits_zero",
        "echo agent-ready; exec sleep 1000",
        30_000,
        &[],
    );
    let started = sup.expect("start", |l| l.starts_with("EVENT started"));
    let agent = field(&started, "pid").to_owned();
    sup.expect("agent ready", |l| l == "agent-ready");
    let status = sup.terminate();
    assert!(
        status.success(),
        "supervisor exit: {status}; saw {:#?}",
        sup.seen
    );
    let events: Vec<&str> = protocol_lines(&sup.seen)
        .filter(|l| !l.starts_with("EVENT started"))
        .collect();
    assert_eq!(
        events,
        [
            "EVENT shutdown signal=SIGTERM".to_owned(),
            format!("EVENT stopping pid={agent} signal=SIGTERM"),
            format!("EVENT exited pid={agent} status=killed by SIGTERM"),
            "OUTCOME Shutdown { signal: SIGTERM, action: Reboot }".to_owned(),
        ]
    );
    assert!(!process_exists(&agent), "agent {agent} still exists");
}

#[test]
fn agent_ignoring_sigterm_is_killed_after_the_grace_period() {
    if runs_as_helper(HELPER, helper_supervisor) {
        return;
    }
    let mut sup = Supervisor::start(
        "agent_ignoring_sigterm_is_killed_after_the_grace_period",
        "trap '' TERM; echo agent-ready; exec sleep 1000",
        200,
        &[],
    );
    let started = sup.expect("start", |l| l.starts_with("EVENT started"));
    let agent = field(&started, "pid").to_owned();
    sup.expect("agent ready", |l| l == "agent-ready");
    let status = sup.terminate();
    assert!(
        status.success(),
        "supervisor exit: {status}; saw {:#?}",
        sup.seen
    );
    let tail: Vec<&str> = protocol_lines(&sup.seen)
        .skip_while(|l| !l.starts_with("EVENT stopping"))
        .collect();
    assert_eq!(
        tail,
        [
            format!("EVENT stopping pid={agent} signal=SIGTERM"),
            format!("EVENT stopping pid={agent} signal=SIGKILL"),
            format!("EVENT exited pid={agent} status=killed by SIGKILL"),
            "OUTCOME Shutdown { signal: SIGTERM, action: Reboot }".to_owned(),
        ]
    );
    assert!(!process_exists(&agent), "agent {agent} still exists");
}

#[test]
fn orphans_reparented_to_nodeinit_are_reaped() {
    if runs_as_helper(HELPER, helper_supervisor) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("release");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // The subshell forks the orphan and exits; the agent waits for the
    // subshell, so by "agent-ready" the orphan has been reparented.
    let script = r#"( sh -c 'echo orphan=$$; read x < "$RELEASE_FIFO"; exit 3' & ); echo agent-ready; exec sleep 1000"#;
    let mut sup = Supervisor::start(
        "orphans_reparented_to_nodeinit_are_reaped",
        script,
        30_000,
        &[("RELEASE_FIFO", fifo.to_str().unwrap())],
    );
    let orphan = field(
        &sup.expect("orphan pid", |l| l.starts_with("orphan=")),
        "orphan",
    )
    .to_owned();
    sup.expect("agent ready", |l| l == "agent-ready");
    let status_file = std::fs::read_to_string(format!("/proc/{orphan}/status")).unwrap();
    let ppid = status_file
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim();
    assert_eq!(
        ppid,
        sup.pid().to_string(),
        "orphan not reparented to the supervisor"
    );
    std::fs::write(&fifo, "go\n").unwrap();
    sup.expect("orphan reaped", |l| {
        l == format!("EVENT orphan pid={orphan} status=exited 3")
    });
    assert!(!process_exists(&orphan), "orphan {orphan} was not reaped");
    let status = sup.terminate();
    assert!(
        status.success(),
        "supervisor exit: {status}; saw {:#?}",
        sup.seen
    );
}

/// The agent traps INT and TERM and prints which one arrived; `stop_signal`
/// comes from a parsed `[handoff]` table, as in a real boot.
fn agent_sees_its_stop_signal(test: &str, handoff_toml: &str, expected: &str) {
    let config = crate::config::load_from_str(handoff_toml, std::path::Path::new("test.toml"))
        .unwrap()
        .handoff
        .unwrap();
    let stop_signal = config.effective_stop_signal();
    assert_eq!(stop_signal.as_str(), format!("SIG{expected}"));
    // `kill $!` ends the sleep so that no process outlives the test.
    let script = "trap 'kill $!; echo got=INT; exit 0' INT; \
                  trap 'kill $!; echo got=TERM; exit 0' TERM; \
                  echo agent-ready; while :; do sleep 1000 & wait $!; done";
    let mut sup = Supervisor::start(
        test,
        script,
        30_000,
        &[("NODEINIT_TEST_STOP_SIGNAL", stop_signal.as_str())],
    );
    let started = sup.expect("start", |l| l.starts_with("EVENT started"));
    let agent = field(&started, "pid").to_owned();
    sup.expect("agent ready", |l| l == "agent-ready");
    let status = sup.terminate();
    assert!(
        status.success(),
        "supervisor exit: {status}; saw {:#?}",
        sup.seen
    );
    let got: Vec<&String> = sup.seen.iter().filter(|l| l.starts_with("got=")).collect();
    assert_eq!(got, [&format!("got={expected}")], "{:#?}", sup.seen);
    let tail: Vec<&str> = protocol_lines(&sup.seen)
        .skip_while(|l| !l.starts_with("EVENT stopping"))
        .filter(|l| !l.starts_with("EVENT orphan"))
        .collect();
    assert_eq!(
        tail,
        [
            format!("EVENT stopping pid={agent} signal=SIG{expected}"),
            format!("EVENT exited pid={agent} status=exited 0"),
            "OUTCOME Shutdown { signal: SIGTERM, action: Reboot }".to_owned(),
        ]
    );
}

#[test]
fn configured_stop_signal_reaches_the_agent() {
    if runs_as_helper(HELPER, helper_supervisor) {
        return;
    }
    agent_sees_its_stop_signal(
        "configured_stop_signal_reaches_the_agent",
        "[handoff]\nagent = \"command\"\nexec = \"/bin/sh\"\nmode = \"supervise\"\nstop_signal = \"INT\"\n",
        "INT",
    );
}

#[test]
fn pact_is_stopped_with_sigint_and_command_with_sigterm_by_default() {
    if runs_as_helper(HELPER, helper_supervisor) {
        return;
    }
    let test = "pact_is_stopped_with_sigint_and_command_with_sigterm_by_default";
    agent_sees_its_stop_signal(
        test,
        "[handoff]\nagent = \"pact\"\nexec = \"/bin/sh\"\nmode = \"supervise\"\n",
        "INT",
    );
    agent_sees_its_stop_signal(
        test,
        "[handoff]\nagent = \"command\"\nexec = \"/bin/sh\"\nmode = \"supervise\"\n",
        "TERM",
    );
}
