//! The command line: which job to run. PID 1 ignores its arguments (the
//! kernel passes unknown boot parameters to init as arguments) and boots.

use std::path::PathBuf;

/// What the invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Boot the node (default).
    Boot {
        /// `--config`.
        config: Option<PathBuf>,
    },
    /// `--sandbox [--config F]`.
    Sandbox {
        /// `--config`.
        config: Option<PathBuf>,
    },
    /// `check [--config F]`.
    Check {
        /// `--config`.
        config: Option<PathBuf>,
    },
    /// `report [--file F]`.
    Report {
        /// `--file` (default `/run/nodeinit/boot.json`).
        file: Option<PathBuf>,
    },
    /// `status [--socket S]`: the running worker and its plugins.
    Status {
        /// The control socket (default `/run/nodeinit/control.sock`).
        socket: Option<PathBuf>,
    },
    /// `reload [--socket S]`: swap in the config's plugin files.
    Reload {
        /// The control socket (default `/run/nodeinit/control.sock`).
        socket: Option<PathBuf>,
    },
    /// `plugin inspect PATH...`.
    Inspect {
        /// Files.
        paths: Vec<PathBuf>,
    },
    /// `demo-agent`: the sandbox's demo agent (requests namespaces over the
    /// handoff socket and prints what it received).
    DemoAgent,
    /// `demo-agent --restart-check`: kills the worker and checks the live
    /// allocation survives its restart.
    DemoAgentRestartCheck,
    /// `demo-agent --restart-bench N`: time N worker restarts.
    DemoAgentRestartBench {
        /// How many.
        times: u32,
    },
    /// `demo-agent --reload-check INSTALLED NEW BROKEN`: a live plugin upgrade.
    DemoAgentReloadCheck {
        /// The plugin file the config names.
        installed: PathBuf,
        /// Its new version.
        new: PathBuf,
        /// A file that does not load.
        broken: PathBuf,
    },
    /// `__worker` (hidden): the worker process the keeper starts.
    Worker,
    /// `__check [--config F] [--exclude kind=reason]...` (hidden): the probe
    /// child of `check`.
    CheckChild {
        /// `--config`.
        config: Option<PathBuf>,
        /// `kind=reason` of plugins not to load.
        excluded: Vec<String>,
    },
    /// `__inspect PATH` (hidden): the probe child of `plugin inspect`.
    InspectChild {
        /// The file.
        path: PathBuf,
    },
    /// `--help`.
    Help,
}

/// Usage text.
pub const USAGE: &str = "usage:
  nodeinit [--config FILE]             boot the node (what the kernel runs as /init)
  nodeinit --sandbox [--config FILE]   run the whole boot in a throwaway sandbox on this machine
  nodeinit check [--config FILE]       validate a config and load its plugins; changes nothing
  nodeinit report [--file FILE]        print /run/nodeinit/boot.json as a table
  nodeinit plugin inspect PATH...      describe plugin files and whether this nodeinit loads them
  nodeinit status                      the running worker: its plugins (name, version, sha256), since when
  nodeinit reload                      load the config's plugin files in a probe, then hand over to them (also: SIGHUP)";

/// Parses the arguments (without argv\[0\]).
///
/// # Errors
///
/// A one-line message for a malformed command line.
pub fn parse(args: &[String], is_pid1: bool) -> Result<Command, String> {
    if is_pid1 {
        return Ok(Command::Boot { config: None });
    }
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let config_flag = |rest: &[&str]| -> Result<Option<PathBuf>, String> {
        match rest {
            [] => Ok(None),
            ["--config", path] => Ok(Some(PathBuf::from(path))),
            other => Err(format!(
                "unexpected arguments {other:?}; expected [--config FILE]"
            )),
        }
    };
    match words.as_slice() {
        [] | ["boot"] => Ok(Command::Boot { config: None }),
        ["--config", _] | ["boot", "--config", _] => {
            let rest = if words[0] == "boot" {
                &words[1..]
            } else {
                &words[..]
            };
            Ok(Command::Boot {
                config: config_flag(rest)?,
            })
        }
        ["--sandbox", rest @ ..] => Ok(Command::Sandbox {
            config: config_flag(rest)?,
        }),
        ["check", rest @ ..] => Ok(Command::Check {
            config: config_flag(rest)?,
        }),
        ["status"] => Ok(Command::Status { socket: None }),
        ["status", "--socket", s] => Ok(Command::Status {
            socket: Some(PathBuf::from(s)),
        }),
        ["reload"] => Ok(Command::Reload { socket: None }),
        ["reload", "--socket", s] => Ok(Command::Reload {
            socket: Some(PathBuf::from(s)),
        }),
        ["report"] => Ok(Command::Report { file: None }),
        ["report", "--file", f] => Ok(Command::Report {
            file: Some(PathBuf::from(f)),
        }),
        ["plugin", "inspect", paths @ ..] if !paths.is_empty() => Ok(Command::Inspect {
            paths: paths.iter().map(PathBuf::from).collect(),
        }),
        ["demo-agent"] => Ok(Command::DemoAgent),
        ["demo-agent", "--restart-check"] => Ok(Command::DemoAgentRestartCheck),
        ["demo-agent", "--restart-bench", n] => Ok(Command::DemoAgentRestartBench {
            times: n
                .parse()
                .map_err(|e| format!("--restart-bench {n:?}: {e}"))?,
        }),
        ["demo-agent", "--reload-check", installed, new, broken] => {
            Ok(Command::DemoAgentReloadCheck {
                installed: PathBuf::from(installed),
                new: PathBuf::from(new),
                broken: PathBuf::from(broken),
            })
        }
        ["__worker"] => Ok(Command::Worker),
        ["__inspect", path] => Ok(Command::InspectChild {
            path: PathBuf::from(path),
        }),
        ["__check", rest @ ..] => parse_check_child(rest),
        ["--help"] | ["-h"] | ["help"] => Ok(Command::Help),
        other => Err(format!("unknown command {other:?}")),
    }
}

fn parse_check_child(rest: &[&str]) -> Result<Command, String> {
    let mut config = None;
    let mut excluded = Vec::new();
    let mut words = rest.iter();
    while let Some(word) = words.next() {
        match (*word, words.next()) {
            ("--config", Some(path)) => config = Some(PathBuf::from(path)),
            ("--exclude", Some(pair)) => excluded.push((*pair).to_owned()),
            (other, _) => return Err(format!("__check: unexpected argument {other:?}")),
        }
    }
    Ok(Command::CheckChild { config, excluded })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Result<Command, String> {
        parse(
            &words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>(),
            false,
        )
    }

    #[test]
    fn commands() {
        assert_eq!(p(&[]), Ok(Command::Boot { config: None }));
        assert_eq!(
            p(&["--config", "/x.toml"]),
            Ok(Command::Boot {
                config: Some("/x.toml".into())
            })
        );
        assert_eq!(p(&["--sandbox"]), Ok(Command::Sandbox { config: None }));
        assert_eq!(
            p(&["check", "--config", "c.toml"]),
            Ok(Command::Check {
                config: Some("c.toml".into())
            })
        );
        assert_eq!(p(&["report"]), Ok(Command::Report { file: None }));
        assert_eq!(
            p(&["plugin", "inspect", "a.so", "b.so"]),
            Ok(Command::Inspect {
                paths: vec!["a.so".into(), "b.so".into()]
            })
        );
        assert_eq!(
            p(&["check", "--confg", "x"]).unwrap_err(),
            "unexpected arguments [\"--confg\", \"x\"]; expected [--config FILE]"
        );
        assert_eq!(
            p(&["frobnicate"]).unwrap_err(),
            "unknown command [\"frobnicate\"]"
        );
    }

    #[test]
    fn pid1_ignores_kernel_leftovers() {
        let args = vec!["splash".to_owned(), "single".to_owned()];
        assert_eq!(parse(&args, true), Ok(Command::Boot { config: None }));
    }
}
