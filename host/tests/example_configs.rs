//! The example configs in `config/` parse against the schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use std::os::unix::fs::PermissionsExt;

use nodeinit::agent::preflight_with_env;
use nodeinit::config::{
    load_from_str, AbsolutePath, AgentKind, HandoffMode, HandoffSection, NodeId, Template,
};

/// `handoff` with its `exec` replaced by an executable stand-in, kept in `dir`.
fn with_stand_in(mut handoff: HandoffSection, dir: &tempfile::TempDir) -> HandoffSection {
    let agent = dir.path().join("agent");
    std::fs::write(&agent, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    handoff.exec = AbsolutePath::try_from(agent.display().to_string()).unwrap();
    handoff
}

fn node() -> NodeId {
    NodeId::try_from("nid000042".to_owned()).unwrap()
}

fn load(name: &str) -> nodeinit::config::NodeConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    load_from_str(&text, &path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn pact_example_execs_pact_with_the_node_id() {
    let c = load("pact.toml");
    let h = c.handoff.unwrap();
    assert_eq!((h.agent, h.mode), (AgentKind::Pact, HandoffMode::Exec));
    assert_eq!(h.args, ["--config", "/etc/pact/agent.toml"]);
    assert_eq!(c.boot.mounts.len(), 1);
    // With pact's PID-1 config in place of /etc/pact/agent.toml, the
    // handoff passes and pact gets --node-id.
    let dir = tempfile::tempdir().unwrap();
    let mut h = with_stand_in(h, &dir);
    let pid1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pact/pid1.toml");
    h.args[1] = Template::try_from(pid1.display().to_string()).unwrap();
    let ok = preflight_with_env(&h, Some(&node()), true, &|_| None).unwrap();
    assert_eq!(ok.command.args[2..], ["--node-id", "nid000042"]);
}

#[test]
fn lattice_example_would_start_a_working_lattice_agent() {
    let c = load("lattice.toml");
    let h = c.handoff.unwrap();
    assert_eq!(
        (h.agent, h.mode),
        (AgentKind::Lattice, HandoffMode::Supervise)
    );
    assert_eq!(h.effective_stop_signal(), nix::sys::signal::Signal::SIGINT);
    assert!(c.plugins.namespace.is_some());
    let image_dirs = c.plugins.mount.unwrap().options["image_dirs"].clone();
    assert!(
        image_dirs
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str() == Some("/var/cache/lattice/uenv")),
        "lattice stages uenv images in /var/cache/lattice/uenv: {image_dirs}"
    );
    let dir = tempfile::tempdir().unwrap();
    let h = with_stand_in(h, &dir);
    // nodeinit is PID 1 and lattice is supervised: every lattice rule passes.
    let ok = preflight_with_env(&h, Some(&node()), true, &|_| None).unwrap();
    assert_eq!(
        ok.command.args,
        [
            "--node-id",
            "nid000042",
            "--quorum-endpoint",
            "http://lattice-quorum.mgmt.example:50051",
            "--state-file",
            "/var/lib/lattice/agent-state.json"
        ]
    );
    assert_eq!(
        ok.command.env,
        [(
            "LATTICE_ADVERTISE_ADDR".to_owned(),
            "nid000042.hsn.example:50052".to_owned()
        )]
    );
}

#[test]
fn sandbox_example_is_the_built_in_sandbox_config() {
    let c = load("sandbox.toml");
    assert_eq!(c.host.node_id.unwrap().as_str(), "sandbox-node");
    assert_eq!(
        nodeinit::demo::SANDBOX_CONFIG,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sandbox.toml")
        )
        .unwrap()
    );
}
