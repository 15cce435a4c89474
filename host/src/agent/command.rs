//! The agent's command line as configured in `[handoff]`.

use std::ffi::CString;
use std::path::PathBuf;

use crate::config::HandoffSection;

/// Program and arguments of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// Absolute path of the binary.
    pub program: PathBuf,
    /// Arguments, without argv\[0\].
    pub args: Vec<String>,
}

impl From<&HandoffSection> for AgentCommand {
    fn from(handoff: &HandoffSection) -> Self {
        Self {
            program: handoff.exec.as_path().to_path_buf(),
            args: handoff.args.clone(),
        }
    }
}

impl AgentCommand {
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

/// The value of `flag` in `args` (`--flag value` or `--flag=value`); the
/// last occurrence wins, as with most argument parsers.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut found = None;
    let mut iter = args.iter();
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
    }

    #[test]
    fn argv_starts_with_program_and_refuses_nul() {
        let c = AgentCommand {
            program: "/bin/agent".into(),
            args: args(&["-v"]),
        };
        let argv = c.argv().unwrap();
        assert_eq!(argv[0].to_str().unwrap(), "/bin/agent");
        assert_eq!(argv[1].to_str().unwrap(), "-v");
        let bad = AgentCommand {
            program: "/bin/agent".into(),
            args: args(&["a\0b"]),
        };
        assert!(bad.argv().unwrap_err().contains("NUL byte"));
    }
}
