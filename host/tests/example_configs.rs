//! The example configs in `config/` parse against the schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use nodeinit::config::{load_from_str, AgentKind, HandoffMode};

fn load(name: &str) -> nodeinit::config::NodeConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    load_from_str(&text, &path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn pact_example_execs_pact() {
    let c = load("pact.toml");
    let h = c.handoff.unwrap();
    assert_eq!((h.agent, h.mode), (AgentKind::Pact, HandoffMode::Exec));
    assert_eq!(c.boot.mounts.len(), 1);
}

#[test]
fn lattice_example_supervises_lattice() {
    let c = load("lattice.toml");
    let h = c.handoff.unwrap();
    assert_eq!(
        (h.agent, h.mode),
        (AgentKind::Lattice, HandoffMode::Supervise)
    );
    assert_eq!(h.args, ["--node-id", "nid001234"]);
    assert!(c.plugins.namespace.is_some());
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
