//! nodeinit's pact preflight against models of pact-agent's shipped configs
//! (`tests/fixtures/pact/`, see their headers): the minimal and the two
//! production examples are refused for the reason pact-agent dies on them,
//! the PID-1 config is accepted and pact gets the resolved node id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nodeinit::agent::{preflight_with_env, Preflight, PreflightError};
use nodeinit::config::{load_from_str, NodeId};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pact")
        .join(name)
}

/// Preflight `[handoff]` for pact with `--config <fixture>` on node nid000042.
fn check(name: &str) -> Result<Preflight, PreflightError> {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("pact-agent");
    std::fs::write(&agent, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = format!(
        "[handoff]\nagent = \"pact\"\nexec = \"{}\"\nargs = [\"--config\", \"{}\"]\n",
        agent.display(),
        fixture(name).display()
    );
    let handoff = load_from_str(&text, Path::new("nodeinit.toml"))
        .unwrap()
        .handoff
        .unwrap();
    let node = NodeId::try_from("nid000042".to_owned()).unwrap();
    preflight_with_env(&handoff, Some(&node), true, &|_| None)
}

fn refusal(name: &str) -> (Option<usize>, String, String, String) {
    match check(name).unwrap_err() {
        PreflightError::PactConfig {
            path,
            line,
            key,
            problem,
            pact_would,
        } => {
            assert_eq!(path, fixture(name));
            (line, key, problem, pact_would)
        }
        other => panic!("{name}: expected a pact config refusal, got {other}"),
    }
}

#[test]
fn minimal_example_is_refused_for_its_missing_journal() {
    let (line, key, problem, pact_would) = refusal("minimal.toml");
    assert_eq!(
        (line, key.as_str(), problem.as_str()),
        (Some(14), "agent.journal", "missing field `journal`")
    );
    assert!(pact_would.starts_with("exit at start"), "{pact_would}");
    let text = check("minimal.toml").unwrap_err().to_string();
    assert!(
        text.starts_with(&format!(
            "pact config {}:14: key `agent.journal`: missing field `journal`; pact-agent would exit at start",
            fixture("minimal.toml").display()
        )),
        "{text}"
    );
}

#[test]
fn production_example_is_refused_for_enrollment_without_ca_cert_not_for_toml_1_1() {
    // The file is TOML 1.1 (multi-line inline table): a TOML 1.0 parser
    // refuses its syntax, which pact-agent would not.
    let text = std::fs::read_to_string(fixture("production.toml")).unwrap();
    assert!(text.parse::<toml::Table>().is_err());
    text.parse::<toml1::Table>().unwrap();
    let (line, key, problem, _) = refusal("production.toml");
    assert_eq!(
        (line, key.as_str(), problem.as_str()),
        (
            Some(41),
            "agent.enrollment.ca_cert",
            "missing field `ca_cert`"
        )
    );
}

#[test]
fn systemd_production_example_is_refused_on_a_nodeinit_node() {
    let (line, key, problem, pact_would) = refusal("production-systemd.toml");
    assert_eq!((line, key.as_str()), (Some(21), "agent.supervisor.backend"));
    assert!(
        problem.contains("a nodeinit node has no systemd"),
        "{problem}"
    );
    assert_eq!(
        pact_would,
        "fail to start any service: systemctl does not exist on this node"
    );
}

#[test]
fn pid1_config_is_accepted_and_pact_gets_the_node_id() {
    let ok = check("pid1.toml").unwrap();
    assert_eq!(
        ok.command.args,
        [
            "--config",
            fixture("pid1.toml").to_str().unwrap(),
            "--node-id",
            "nid000042"
        ]
    );
    assert_eq!(
        ok.warnings,
        [format!(
            "pact config {}:18: key `agent.journal.endpoints` is empty: pact-agent runs in disconnected mode (no journal, no enrollment)",
            fixture("pid1.toml").display()
        )]
    );
}
