//! Handing the node to its agent (DESIGN.md §5 "Handoff"): the preflight
//! checks that catch an agent that would die at once, `exec` (the agent
//! replaces nodeinit) and `supervise` (nodeinit stays, restarts the agent
//! with backoff, forwards signals, stops it at shutdown), and, for pact in
//! supervise mode, opening the handoff gate when pact writes its ready file.
//!
//! This module never loads plugins or touches mounts and cgroups; what must
//! be released at shutdown is released by the caller after `supervise`
//! returns.

mod backoff;
mod command;
mod exec;
mod pact_ready;
mod preflight;
mod supervise;

pub use backoff::{RestartBackoff, DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY};
pub use command::{carries_flag, flag_value, AgentCommand, NodeIdUnavailable, NODE_ID_FLAG};
pub use exec::{exec_agent, ExecError};
pub use pact_ready::{
    open_gate_when_pact_ready, spawn_pact_ready_watch, PactReadyError, PACT_READY_FILE,
};
pub use preflight::{
    check_pact_config, preflight, preflight_with_env, Preflight, PreflightError,
    LATTICE_ADVERTISE_ENV, PACT_CONFIG_ENV, PACT_DEFAULT_CONFIG,
};
pub use supervise::{
    supervise, AgentSupervision, RestartPolicy, SuperviseError, SuperviseEvent, SuperviseOptions,
    SuperviseOutcome,
};

#[cfg(test)]
mod supervise_tests;
