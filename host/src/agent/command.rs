//! The agent's command line as configured in `[handoff]`, made concrete:
//! `{node_id}` substituted in `args` and `env`, and `--node-id <id>`
//! appended for pact-agent when the args do not carry one (one initramfs
//! then serves every node). Never checks whether the agent would start:
//! that is `preflight`'s.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use crate::config::{AgentKind, HandoffSection, NodeId};

/// The flag pact-agent and lattice-agent take the node id with.
pub const NODE_ID_FLAG: &str = "--node-id";

/// Program, arguments and environment of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// Absolute path of the binary.
    pub program: PathBuf,
    /// Arguments, without argv\[0\].
    pub args: Vec<String>,
    /// Variables set on top of nodeinit's own environment (`handoff.env`).
    pub env: Vec<(String, String)>,
}

/// `{node_id}` is used, or pact needs `--node-id`, but no node id was resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{needed_by} needs the node id, but none was resolved; set nodeinit.node_id= on the kernel command line, [host].node_id, or /etc/hostname")]
pub struct NodeIdUnavailable {
    /// What needs it: `handoff.args[2] "…"`, `handoff.env.X`, or pact's `--node-id`.
    pub needed_by: String,
}

impl AgentCommand {
    /// The command `handoff` describes on the node `node_id`.
    ///
    /// # Errors
    ///
    /// [`NodeIdUnavailable`] when the id is needed and `node_id` is `None`.
    pub fn for_node(
        handoff: &HandoffSection,
        node_id: Option<&NodeId>,
    ) -> Result<Self, NodeIdUnavailable> {
        let id = |needed_by: String| {
            node_id
                .map(NodeId::as_str)
                .ok_or(NodeIdUnavailable { needed_by })
        };
        let mut args = Vec::with_capacity(handoff.args.len() + 2);
        for (i, arg) in handoff.args.iter().enumerate() {
            args.push(if arg.uses_node_id() {
                arg.render(id(format!("handoff.args[{i}] {:?}", arg.as_str()))?)
            } else {
                arg.as_str().to_owned()
            });
        }
        let mut env = Vec::with_capacity(handoff.env.len());
        for (name, value) in &handoff.env {
            let value = if value.uses_node_id() {
                value.render(id(format!("handoff.env.{}", name.as_str()))?)
            } else {
                value.as_str().to_owned()
            };
            env.push((name.as_str().to_owned(), value));
        }
        if handoff.agent == AgentKind::Pact && !carries_flag(&args, NODE_ID_FLAG) {
            let node = id("pact-agent's --node-id (added because handoff.args has none)".into())?;
            // Before a `--`, after which nothing is a flag.
            let at = flags(&args).len();
            args.splice(at..at, [NODE_ID_FLAG.to_owned(), node.to_owned()]);
        }
        Ok(Self {
            program: handoff.exec.as_path().to_path_buf(),
            args,
            env,
        })
    }

    /// `name` in the agent's environment: `handoff.env` first, else what
    /// `inherited` (nodeinit's own environment) says.
    pub fn env_var(
        &self,
        name: &str,
        inherited: &dyn Fn(&str) -> Option<String>,
    ) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| inherited(name))
    }

    /// envp for execve(2): nodeinit's environment with `env` set on top.
    ///
    /// # Errors
    ///
    /// A message naming the variable that contains a NUL byte.
    pub fn envp(&self) -> Result<Vec<CString>, String> {
        let overridden = |key: &OsString| {
            self.env
                .iter()
                .any(|(k, _)| key.as_encoded_bytes() == k.as_bytes())
        };
        std::env::vars_os()
            .filter(|(k, _)| !overridden(k))
            .map(|(k, v)| {
                let mut entry = k.into_vec();
                entry.push(b'=');
                entry.extend(v.into_vec());
                entry
            })
            .chain(
                self.env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}").into_bytes()),
            )
            .map(|bytes| {
                CString::new(bytes).map_err(|e| {
                    format!(
                        "handoff environment entry {:?} contains a NUL byte",
                        String::from_utf8_lossy(&e.into_vec())
                    )
                })
            })
            .collect()
    }

    /// argv for execve(2), argv\[0\] being the program path.
    ///
    /// # Errors
    ///
    /// A message naming the argument that contains a NUL byte.
    pub fn argv(&self) -> Result<Vec<CString>, String> {
        let program = self.program.as_os_str().as_encoded_bytes().to_vec();
        std::iter::once(program)
            .chain(self.args.iter().map(|a| a.as_bytes().to_vec()))
            .map(|bytes| {
                CString::new(bytes).map_err(|e| {
                    format!(
                        "handoff argument {:?} contains a NUL byte",
                        String::from_utf8_lossy(&e.into_vec())
                    )
                })
            })
            .collect()
    }

    /// The value of `flag` (`--flag value` or `--flag=value`), last one wins.
    pub fn flag(&self, flag: &str) -> Option<&str> {
        flag_value(&self.args, flag)
    }
}

/// The part of `args` before a `--` (after which nothing is a flag).
fn flags(args: &[String]) -> &[String] {
    args.iter()
        .position(|a| a == "--")
        .map_or(args, |end| &args[..end])
}

/// Whether `flag` occurs in `args` (before any `--`), as `--flag`,
/// `--flag value` or `--flag=value`.
pub fn carries_flag(args: &[String], flag: &str) -> bool {
    flags(args).iter().any(|arg| {
        arg == flag
            || arg
                .strip_prefix(flag)
                .is_some_and(|rest| rest.starts_with('='))
    })
}

/// The value of `flag` in `args` (`--flag value` or `--flag=value`, before
/// any `--`); the last occurrence wins, as with most argument parsers.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut found = None;
    let mut iter = flags(args).iter();
    while let Some(arg) = iter.next() {
        if arg == flag {
            found = iter.next().map(String::as_str);
        } else if let Some(value) = arg
            .strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(value);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flag_forms() {
        assert_eq!(
            flag_value(&args(&["--node-id", "n1"]), "--node-id"),
            Some("n1")
        );
        assert_eq!(
            flag_value(&args(&["--node-id=n2"]), "--node-id"),
            Some("n2")
        );
        assert_eq!(
            flag_value(&args(&["--node-id=a", "--node-id", "b"]), "--node-id"),
            Some("b")
        );
        assert_eq!(flag_value(&args(&["--node-id"]), "--node-id"), None);
        assert_eq!(flag_value(&args(&["--node-idx=1"]), "--node-id"), None);
        assert_eq!(
            flag_value(&args(&["--node-id=a", "--", "--node-id=b"]), "--node-id"),
            Some("a")
        );
    }

    #[test]
    fn argv_starts_with_program_and_refuses_nul() {
        let c = AgentCommand {
            program: "/bin/agent".into(),
            args: args(&["-v"]),
            env: vec![],
        };
        let argv = c.argv().unwrap();
        assert_eq!(argv[0].to_str().unwrap(), "/bin/agent");
        assert_eq!(argv[1].to_str().unwrap(), "-v");
        let bad = AgentCommand {
            program: "/bin/agent".into(),
            args: args(&["a\0b"]),
            env: vec![],
        };
        assert!(bad.argv().unwrap_err().contains("NUL byte"));
    }

    fn handoff(toml: &str) -> HandoffSection {
        crate::config::load_from_str(toml, std::path::Path::new("t.toml"))
            .unwrap()
            .handoff
            .unwrap()
    }

    fn nid(id: &str) -> NodeId {
        NodeId::try_from(id.to_owned()).unwrap()
    }

    #[test]
    fn node_id_is_substituted_in_args_and_env() {
        let h = handoff(
            "[handoff]\nagent = \"lattice\"\nexec = \"/bin/lattice-agent\"\nargs = [\"--node-id\", \"{node_id}\", \"--state-file=/var/lib/lattice/{node_id}.json\"]\n[handoff.env]\nLATTICE_ADVERTISE_ADDR = \"{node_id}.hsn:50052\"\nRUST_LOG = \"info\"\n",
        );
        let c = AgentCommand::for_node(&h, Some(&nid("nid000042"))).unwrap();
        assert_eq!(
            c.args,
            [
                "--node-id",
                "nid000042",
                "--state-file=/var/lib/lattice/nid000042.json"
            ]
        );
        assert_eq!(
            c.env,
            [
                (
                    "LATTICE_ADVERTISE_ADDR".to_owned(),
                    "nid000042.hsn:50052".to_owned()
                ),
                ("RUST_LOG".to_owned(), "info".to_owned())
            ]
        );
        assert_eq!(
            c.env_var("RUST_LOG", &|_| Some("debug".into())).as_deref(),
            Some("info")
        );
        assert_eq!(
            c.env_var("HOME", &|_| Some("/root".into())).as_deref(),
            Some("/root")
        );
        let err = AgentCommand::for_node(&h, None).unwrap_err();
        assert_eq!(err.needed_by, "handoff.args[1] \"{node_id}\"");
        assert!(
            err.to_string()
                .contains("none was resolved; set nodeinit.node_id="),
            "{err}"
        );
    }

    #[test]
    fn pact_gets_node_id_unless_args_carry_one() {
        let pact = |args: &str| {
            let h = handoff(&format!(
                "[handoff]\nagent = \"pact\"\nexec = \"/bin/pact-agent\"\nargs = {args}\n"
            ));
            AgentCommand::for_node(&h, Some(&nid("nid7"))).unwrap().args
        };
        assert_eq!(
            pact(r#"["--config", "/etc/pact/agent.toml"]"#),
            ["--config", "/etc/pact/agent.toml", "--node-id", "nid7"]
        );
        assert_eq!(pact(r#"["--node-id", "fixed"]"#), ["--node-id", "fixed"]);
        assert_eq!(pact(r#"["--node-id=fixed"]"#), ["--node-id=fixed"]);
        assert_eq!(pact(r#"["--node-id={node_id}"]"#), ["--node-id=nid7"]);
        // `--node-idx` is another flag: the id is still added.
        assert_eq!(
            pact(r#"["--node-idx=1"]"#),
            ["--node-idx=1", "--node-id", "nid7"]
        );
        assert_eq!(
            pact(r#"["-v", "--", "--node-id=x"]"#),
            ["-v", "--node-id", "nid7", "--", "--node-id=x"]
        );
        let h = handoff("[handoff]\nagent = \"pact\"\nexec = \"/bin/pact-agent\"\n");
        assert!(AgentCommand::for_node(&h, None)
            .unwrap_err()
            .needed_by
            .contains("pact-agent's --node-id"));
        // A command gets nothing added.
        let h = handoff("[handoff]\nagent = \"command\"\nexec = \"/bin/x\"\n");
        assert!(AgentCommand::for_node(&h, None).unwrap().args.is_empty());
    }

    #[test]
    fn envp_sets_handoff_env_over_the_inherited_one() {
        let c = AgentCommand {
            program: "/bin/agent".into(),
            args: vec![],
            env: vec![
                ("PATH".into(), "/opt/agent/bin".into()),
                ("NODEINIT_X".into(), "1".into()),
            ],
        };
        let envp: Vec<String> = c
            .envp()
            .unwrap()
            .into_iter()
            .map(|e| e.into_string().unwrap())
            .collect();
        assert_eq!(
            envp.iter()
                .filter(|e| e.starts_with("PATH="))
                .collect::<Vec<_>>(),
            ["PATH=/opt/agent/bin"]
        );
        assert!(envp.contains(&"NODEINIT_X=1".to_owned()));
    }
}
