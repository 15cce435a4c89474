//! lattice-agent's preflight (DESIGN.md §6): `--node-id` given (it has no
//! env fallback), `--quorum-endpoint` given (the localhost default makes it
//! exit after 10 failed connects), an advertised address that is not
//! `0.0.0.0` (the quorum rejects it and the agent exits), no `--config`
//! (it has none), and not `exec`'d as PID 1 (it reaps nothing and exits on
//! error).

use crate::agent::command::flag_value;
use crate::agent::{AgentCommand, PreflightError};
use crate::config::HandoffMode;

use super::printable;

/// The environment variable `--advertise-addr` falls back to.
pub const LATTICE_ADVERTISE_ENV: &str = "LATTICE_ADVERTISE_ADDR";

/// The host of `--grpc-addr` when not given, advertised when nothing else is.
const DEFAULT_GRPC_HOST: &str = "0.0.0.0";

/// Check lattice's command line; returns warnings (none today).
pub(super) fn check(
    command: &AgentCommand,
    mode: HandoffMode,
    is_pid1: bool,
    inherited: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, PreflightError> {
    if is_pid1 && mode == HandoffMode::Exec {
        return Err(PreflightError::LatticeExecAsPid1);
    }
    let flag = |name| flag_value(&command.args, name).filter(|v| !v.trim().is_empty());
    if flag_value(&command.args, "--config").is_some() {
        return Err(PreflightError::LatticeConfigFlag);
    }
    if flag("--node-id").is_none() {
        return Err(PreflightError::LatticeNoNodeId);
    }
    if flag("--quorum-endpoint").is_none() {
        return Err(PreflightError::LatticeNoQuorumEndpoint);
    }
    let (addr, source_name) = if let Some(addr) = flag("--advertise-addr") {
        (addr.to_owned(), "--advertise-addr".to_owned())
    } else if let Some(addr) = command
        .env_var(LATTICE_ADVERTISE_ENV, inherited)
        .filter(|v| !v.trim().is_empty())
    {
        (addr, LATTICE_ADVERTISE_ENV.to_owned())
    } else if let Some(addr) = flag("--grpc-addr") {
        (
            addr.to_owned(),
            "--grpc-addr, advertised when neither --advertise-addr nor LATTICE_ADVERTISE_ADDR is set"
                .to_owned(),
        )
    } else {
        (
            DEFAULT_GRPC_HOST.to_owned(),
            "the default --grpc-addr, advertised when neither --advertise-addr nor LATTICE_ADVERTISE_ADDR is set"
                .to_owned(),
        )
    };
    if host_of(&addr) == DEFAULT_GRPC_HOST {
        return Err(PreflightError::LatticeAdvertisesAny {
            addr: printable(&addr),
            source_name,
        });
    }
    Ok(Vec::new())
}

/// The host part of `[scheme://]host[:port]` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    let rest = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let rest = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    rest.rsplit_once(':').map_or(rest, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts() {
        assert_eq!(host_of("0.0.0.0:50052"), "0.0.0.0");
        assert_eq!(host_of("0.0.0.0"), "0.0.0.0");
        assert_eq!(host_of("http://0.0.0.0:50052/x"), "0.0.0.0");
        assert_eq!(host_of("10.1.2.3:50052"), "10.1.2.3");
        assert_eq!(host_of("[fe80::1]:50052"), "fe80::1");
        assert_eq!(host_of("nid1.hsn"), "nid1.hsn");
    }
}
