//! Preflight on real files: agent binaries with their modes, pact configs,
//! lattice command lines, all after `{node_id}` substitution.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::config::{load_from_str, HandoffMode};

struct Fixture {
    dir: tempfile::TempDir,
}

fn nid(id: &str) -> NodeId {
    NodeId::try_from(id.to_owned()).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn file(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
    /// A `[handoff]` table parsed like a real config; `rest` follows `exec`.
    fn handoff(&self, agent: &str, exec: &Path, rest: &str) -> HandoffSection {
        let text = format!(
            "[handoff]\nagent = \"{agent}\"\nexec = \"{}\"\n{rest}\n",
            exec.display()
        );
        load_from_str(&text, Path::new("nodeinit.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .handoff
            .unwrap()
    }
    fn pact(&self, toml: &str) -> (HandoffSection, PathBuf) {
        let agent = self.file("pact-agent", "#!/bin/sh\n", 0o755);
        let config = self.file("agent.toml", toml, 0o644);
        let h = self.handoff(
            "pact",
            &agent,
            &format!("args = [\"--config\", \"{}\"]", config.display()),
        );
        (h, config)
    }
}

fn run(h: &HandoffSection) -> Result<Preflight, PreflightError> {
    preflight_with_env(h, Some(&nid("nid000042")), true, &no_env)
}

const GOOD_PACT: &str = "[agent]\nnode_id = \"unset\"\n[agent.journal]\nendpoints = [\"https://j:9443\"]\n[agent.supervisor]\nbackend = \"Pact\"\n";

#[test]
fn good_pact_config_passes_and_gets_the_node_id() {
    let f = Fixture::new();
    let (h, config) = f.pact(GOOD_PACT);
    let ok = run(&h).unwrap();
    assert_eq!(
        ok.command.args,
        [
            "--config",
            config.to_str().unwrap(),
            "--node-id",
            "nid000042"
        ]
    );
    assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
}

/// Assert a PactConfig refusal at `line` for `key` whose problem contains `needle`.
fn assert_pact_refused(err: PreflightError, config: &Path, line: usize, key: &str, needle: &str) {
    let text = err.to_string();
    match &err {
        PreflightError::PactConfig {
            path,
            line: l,
            key: k,
            problem,
            ..
        } => {
            assert_eq!(
                (path.as_path(), *l, k.as_str()),
                (config, Some(line), key),
                "{text}"
            );
            assert!(problem.contains(needle), "{text}");
        }
        other => panic!("expected PactConfig, got {other:?}"),
    }
    assert!(
        text.starts_with(&format!(
            "pact config {}:{line}: key `{key}`: ",
            config.display()
        )),
        "{text}"
    );
    assert!(text.contains("; pact-agent would "), "{text}");
}

#[test]
fn pact_required_keys_and_types() {
    let f = Fixture::new();
    let cases: [(&str, usize, &str, &str); 9] = [
        ("", 1, "agent", "missing field `agent`"),
        (
            "[agent]\n[agent.journal]\nendpoints = [\"https://j\"]\n",
            1,
            "agent.node_id",
            "missing field `node_id`",
        ),
        (
            "[agent]\nnode_id = \"n\"\n",
            1,
            "agent.journal",
            "missing field `journal`",
        ),
        (
            "[agent]\nnode_id = \"n\"\n[agent.journal]\nendpoints = [1]\n",
            4,
            "agent.journal.endpoints",
            "invalid type: integer `1`, expected a string",
        ),
        (
            "[agent]\nnode_id = 42\n[agent.journal]\nendpoints = []\n",
            2,
            "agent.node_id",
            "invalid type: integer `42`, expected a string",
        ),
        (
            "[agent]\nnode_id = \"n\"\nsupervisor = \"Pact\"\n[agent.journal]\nendpoints = []\n",
            3,
            "agent.supervisor",
            "invalid type: string \"Pact\", expected struct Supervisor",
        ),
        (
            &GOOD_PACT.replace("\"Pact\"", "\"pact\""),
            6,
            "agent.supervisor.backend",
            "unknown variant `pact`, expected `Pact` or `Systemd`",
        ),
        (
            "[agent]\nnode_id = \"n\"\n[agent.journal]\nendpoints = []\n[agent.capability]\nmanifest_path = \"/etc/pact/caps.json\"\n",
            5,
            "agent.capability.socket_path",
            "missing field `socket_path`",
        ),
        (
            "[agent]\nnode_id = \"n\"\n[agent.journal]\nendpoints = []\n[agent.shell.auth]\nissuer = \"https://idp\"\n",
            5,
            "agent.shell.auth.audience",
            "missing field `audience`",
        ),
    ];
    for (toml, line, key, needle) in cases {
        let (h, config) = f.pact(toml);
        assert_pact_refused(run(&h).unwrap_err(), &config, line, key, needle);
    }
}

#[test]
fn empty_endpoints_and_placeholder_node_id_pass_with_a_warning() {
    let f = Fixture::new();
    let (h, config) =
        f.pact("[agent]\nnode_id = \"\"\nunknown_key = 1\n[agent.journal]\nendpoints = []\n");
    let ok = run(&h).unwrap();
    assert_eq!(
        ok.warnings,
        [format!(
            "pact config {}:5: key `agent.journal.endpoints` is empty: pact-agent runs in disconnected mode (no journal, no enrollment)",
            config.display()
        )]
    );
}

#[test]
fn systemd_backend_is_refused_on_a_nodeinit_node() {
    let f = Fixture::new();
    let (h, config) = f.pact(&GOOD_PACT.replace("\"Pact\"", "\"Systemd\""));
    let err = run(&h).unwrap_err();
    assert!(
        err.to_string().ends_with(
            "pact-agent would fail to start any service: systemctl does not exist on this node"
        ),
        "{err}"
    );
    assert_pact_refused(
        err,
        &config,
        6,
        "agent.supervisor.backend",
        "a nodeinit node has no systemd",
    );
}

#[test]
fn repeated_or_valueless_pact_flags_are_refused_as_clap_would() {
    let f = Fixture::new();
    let agent = f.file("pact-agent", "", 0o755);
    let config = f.file("agent.toml", GOOD_PACT, 0o644);
    let c = config.display();
    for (args, problem) in [
        (
            format!("[\"--config\", \"{c}\", \"--config\", \"{c}\"]"),
            "the argument '--config <CONFIG>' cannot be used multiple times",
        ),
        (
            format!("[\"--config={c}\", \"--config\", \"{c}\"]"),
            "the argument '--config <CONFIG>' cannot be used multiple times",
        ),
        (
            format!("[\"--config={c}\", \"--node-id=a\", \"--node-id\", \"{{node_id}}\"]"),
            "the argument '--node-id <NODE_ID>' cannot be used multiple times",
        ),
        (
            format!("[\"--config={c}\", \"--vcluster\", \"a\", \"--vcluster=b\"]"),
            "the argument '--vcluster <VCLUSTER>' cannot be used multiple times",
        ),
        (
            "[\"--config\", \"--node-id\", \"x\"]".to_owned(),
            "a value is required for '--config <CONFIG>' but none was supplied",
        ),
        (
            format!("[\"--config={c}\", \"--node-id\"]"),
            "a value is required for '--node-id <NODE_ID>' but none was supplied",
        ),
    ] {
        let h = f.handoff("pact", &agent, &format!("args = {args}"));
        let err = run(&h).unwrap_err();
        assert!(
            matches!(&err, PreflightError::PactArgs { problem: p, .. } if p == problem),
            "{args}: {err}"
        );
        assert!(
            err.to_string().ends_with(
                "; pact-agent would exit 2 (its argument parser refuses the command line)"
            ),
            "{err}"
        );
    }
    // After `--` nothing is a flag.
    let h = f.handoff(
        "pact",
        &agent,
        &format!("args = [\"--config\", \"{c}\", \"--node-id\", \"n\", \"--\", \"--config\"]"),
    );
    run(&h).unwrap();
}

#[test]
fn pact_config_path_comes_from_flag_then_env_then_default() {
    let f = Fixture::new();
    let agent = f.file("pact-agent", "", 0o755);
    let good = f.file("good.toml", GOOD_PACT, 0o644);
    let bad = f.file("bad.toml", "[agent]\n", 0o644);
    let names_bad = |err: PreflightError| matches!(err, PreflightError::PactConfig { ref path, .. } if path == &bad);
    // handoff.env sets PACT_AGENT_CONFIG: pact reads that file.
    let h = f.handoff(
        "pact",
        &agent,
        &format!("[handoff.env]\nPACT_AGENT_CONFIG = \"{}\"", bad.display()),
    );
    assert!(names_bad(run(&h).unwrap_err()));
    // nodeinit's own environment, inherited by the agent.
    let h = f.handoff("pact", &agent, "");
    let inherited = |name: &str| (name == PACT_CONFIG_ENV).then(|| bad.display().to_string());
    assert!(names_bad(
        preflight_with_env(&h, Some(&nid("n")), true, &inherited).unwrap_err()
    ));
    // --config wins over the environment.
    let h = f.handoff(
        "pact",
        &agent,
        &format!("args = [\"--config={}\"]", good.display()),
    );
    preflight_with_env(&h, Some(&nid("n")), true, &inherited).unwrap();
    // An empty variable is as good as none: the default path.
    let h = f.handoff("pact", &agent, "[handoff.env]\nPACT_AGENT_CONFIG = \"\"");
    match run(&h).unwrap_err() {
        PreflightError::PactConfig {
            path,
            line: None,
            problem,
            ..
        } => {
            assert_eq!(path, Path::new(PACT_DEFAULT_CONFIG));
            assert!(problem.starts_with("cannot read: "), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unreadable_and_invalid_pact_configs_are_refused() {
    let f = Fixture::new();
    let agent = f.file("pact-agent", "", 0o755);
    let h = f.handoff(
        "pact",
        &agent,
        "args = [\"--config=/nonexistent/agent.toml\"]",
    );
    let err = run(&h).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "pact config /nonexistent/agent.toml: cannot read: No such file or directory"
        ),
        "{err}"
    );
    assert!(
        err.contains("pact-agent would exit at start: it cannot read its config"),
        "{err}"
    );
    let (h, config) = f.pact("[agent]\nnode_id = \"n\"\n[agent\n");
    let err = run(&h).unwrap_err();
    assert!(
        matches!(&err, PreflightError::PactConfig { line: Some(3), path, .. } if path == &config),
        "{err}"
    );
}

#[test]
fn node_id_placeholder_without_a_resolved_id_is_refused() {
    let f = Fixture::new();
    let (h, _) = f.pact(GOOD_PACT);
    let err = preflight_with_env(&h, None, true, &no_env).unwrap_err();
    assert!(matches!(err, PreflightError::NodeId(_)), "{err}");
    assert!(
        err.to_string().starts_with("pact-agent's --node-id"),
        "{err}"
    );
}

#[test]
fn missing_agent_binary_is_refused() {
    let f = Fixture::new();
    let path = f.dir.path().join("pact-agent");
    let h = f.handoff("command", &path, "");
    assert_eq!(
        run(&h).unwrap_err(),
        PreflightError::AgentMissing { path: path.clone() }
    );
    assert!(run(&h).unwrap_err().to_string().contains("does not exist"));
}

#[test]
fn non_executable_agent_is_refused() {
    let f = Fixture::new();
    let path = f.file("agent", "#!/bin/sh\n", 0o644);
    let h = f.handoff("command", &path, "mode = \"supervise\"");
    let err = run(&h).unwrap_err();
    assert_eq!(
        err,
        PreflightError::AgentNotExecutable {
            path: path.clone(),
            mode: 0o644
        }
    );
    assert!(err.to_string().contains("chmod 0755"), "{err}");
    let h = f.handoff("command", f.dir.path(), "");
    assert!(matches!(
        run(&h).unwrap_err(),
        PreflightError::AgentNotAFile { .. }
    ));
}

#[test]
fn lattice_rules() {
    let f = Fixture::new();
    let agent = f.file("lattice-agent", "", 0o755);
    let good = "\"--node-id\", \"{node_id}\", \"--quorum-endpoint\", \"http://quorum:50051\", \"--advertise-addr\", \"10.0.0.42:50052\"";
    let h = |args: &str, mode: &str| {
        f.handoff(
            "lattice",
            &agent,
            &format!("args = [{args}]\nmode = \"{mode}\""),
        )
    };
    let ok = run(&h(good, "supervise")).unwrap();
    assert_eq!(ok.command.args[..2], ["--node-id", "nid000042"]);
    for (args, expected) in [
        ("\"--quorum-endpoint\", \"http://q:50051\", \"--advertise-addr\", \"10.0.0.1:1\"", PreflightError::LatticeNoNodeId),
        ("\"--node-id=\", \"--quorum-endpoint\", \"http://q:50051\"", PreflightError::LatticeNoNodeId),
        ("\"--node-id\", \"{node_id}\"", PreflightError::LatticeNoQuorumEndpoint),
        (&format!("{good}, \"--config\", \"/x\""), PreflightError::LatticeConfigFlag),
        (
            "\"--node-id\", \"n\", \"--quorum-endpoint\", \"http://q:50051\", \"--advertise-addr=0.0.0.0:50052\"",
            PreflightError::LatticeAdvertisesAny {
                addr: "0.0.0.0:50052".into(),
                source_name: "--advertise-addr".into(),
            },
        ),
    ] {
        assert_eq!(run(&h(args, "supervise")), Err(expected), "{args}");
    }
    // Neither --advertise-addr nor the env: the default grpc host 0.0.0.0 is advertised.
    let err = run(&h(
        "\"--node-id\", \"n\", \"--quorum-endpoint\", \"http://q:50051\"",
        "supervise",
    ))
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("lattice-agent would advertise 0.0.0.0 (from the default --grpc-addr"),
        "{err}"
    );
    // The env, from handoff.env or nodeinit's own, fixes it; 0.0.0.0 there does not.
    let base = "\"--node-id\", \"n\", \"--quorum-endpoint\", \"http://q:50051\"";
    let with_env = |value: &str| {
        f.handoff(
            "lattice",
            &agent,
            &format!("args = [{base}]\nmode = \"supervise\"\n[handoff.env]\nLATTICE_ADVERTISE_ADDR = \"{value}\""),
        )
    };
    run(&with_env("{node_id}.hsn:50052")).unwrap();
    assert_eq!(
        run(&with_env("0.0.0.0:50052")),
        Err(PreflightError::LatticeAdvertisesAny {
            addr: "0.0.0.0:50052".into(),
            source_name: LATTICE_ADVERTISE_ENV.into()
        })
    );
    let inherited =
        |name: &str| (name == LATTICE_ADVERTISE_ENV).then(|| "10.1.1.1:50052".to_owned());
    preflight_with_env(&h(base, "supervise"), Some(&nid("n")), true, &inherited).unwrap();
    // A --grpc-addr on a real address is what gets advertised.
    run(&h(
        &format!("{base}, \"--grpc-addr\", \"10.2.2.2:50052\""),
        "supervise",
    ))
    .unwrap();
    assert_eq!(
        run(&h(good, "exec")),
        Err(PreflightError::LatticeExecAsPid1)
    );
    preflight_with_env(&h(good, "exec"), Some(&nid("n")), false, &no_env).unwrap();
    assert_eq!(h(good, "exec").mode, HandoffMode::Exec);
}
