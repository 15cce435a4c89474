//! The command line: which job to run, parsed with `clap` (derive) so that
//! every subcommand has `--help` and `--version`, and the same definition
//! renders the `nodeinit(8)` man page and the shell completions.
//!
//! As the kernel's PID 1 nodeinit ignores its arguments (the kernel passes
//! boot parameters it does not know to init as arguments) and boots: clap is
//! never consulted there, so a stray `splash` can never stop a node.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

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
    /// `report [--file F] [--json]`.
    Report {
        /// `--file` (default `/run/nodeinit/boot.json`).
        file: Option<PathBuf>,
        /// `--json`: print the file itself, for scripts.
        json: bool,
    },
    /// `plugin inspect PATH...`.
    Inspect {
        /// Files.
        paths: Vec<PathBuf>,
    },
    /// `demo-agent`: the sandbox's demo agent (requests namespaces over the
    /// handoff socket and prints what it received).
    DemoAgent,
    /// `__man DIR` (hidden): write the man pages into DIR (packaging).
    Man {
        /// Output directory.
        dir: PathBuf,
    },
    /// `__completions DIR` (hidden): write bash, zsh and fish completions.
    Completions {
        /// Output directory.
        dir: PathBuf,
    },
}

/// nodeinit: the first userspace program on an HPC compute node.
///
/// Run by the kernel as /init (or by a first stage as /sbin/init), nodeinit
/// reads /etc/nodeinit/nodeinit.toml, loads its backend plugins in a worker
/// process, prepares cgroups, uenv mounts, the namespace handoff socket and
/// readiness, and hands the node to its agent. Run by hand, it validates
/// configs, inspects plugins, reports the last boot, or runs the whole boot
/// in a throwaway sandbox.
#[derive(Debug, Parser)]
#[command(
    name = "nodeinit",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Run the whole boot in a throwaway sandbox on this machine (root; a
    /// private mount and PID namespace; nothing is left behind).
    #[arg(long)]
    sandbox: bool,
    /// The config file (default /etc/nodeinit/nodeinit.toml; with --sandbox,
    /// the built-in sandbox config).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Boot the node (what the kernel runs as /init; the default).
    #[command(version)]
    Boot {
        /// The config file (default /etc/nodeinit/nodeinit.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a config and load its plugins in a probe child; changes nothing.
    #[command(version)]
    Check {
        /// The config file (default /etc/nodeinit/nodeinit.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the last boot's report (/run/nodeinit/boot.json) as a table.
    #[command(version)]
    Report {
        /// The report file.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Print the JSON itself, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Work with plugin files.
    #[command(version, subcommand_required = true, arg_required_else_help = true)]
    Plugin {
        #[command(subcommand)]
        command: PluginSub,
    },
    /// The sandbox's demo agent.
    #[command(hide = true)]
    DemoAgent,
    /// Write the man pages into DIR.
    #[command(name = "__man", hide = true)]
    Man {
        /// Output directory.
        dir: PathBuf,
    },
    /// Write shell completions into DIR.
    #[command(name = "__completions", hide = true)]
    Completions {
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PluginSub {
    /// Describe plugin files and whether this nodeinit loads them (each is
    /// loaded in a probe child: a plugin that crashes while loading is reported).
    #[command(version)]
    Inspect {
        /// The .so files.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

/// Parses the arguments (without argv\[0\]).
///
/// # Errors
///
/// clap's error for a malformed command line, and for `--help`/`--version`
/// (whose `exit_code()` is 0): print it with `print()` and exit with it.
pub fn parse(args: &[String], is_pid1: bool) -> Result<Command, clap::Error> {
    if is_pid1 {
        return Ok(Command::Boot { config: None });
    }
    let cli =
        Cli::try_parse_from(std::iter::once("nodeinit".to_owned()).chain(args.iter().cloned()))?;
    Ok(match (cli.sandbox, cli.command) {
        (true, _) => Command::Sandbox { config: cli.config },
        (false, None) => Command::Boot { config: cli.config },
        (false, Some(sub)) => match sub {
            Sub::Boot { config } => Command::Boot { config },
            Sub::Check { config } => Command::Check { config },
            Sub::Report { file, json } => Command::Report { file, json },
            Sub::Plugin {
                command: PluginSub::Inspect { paths },
            } => Command::Inspect { paths },
            Sub::DemoAgent => Command::DemoAgent,
            Sub::Man { dir } => Command::Man { dir },
            Sub::Completions { dir } => Command::Completions { dir },
        },
    })
}

/// The clap definition, for man pages and completions.
pub fn definition() -> clap::Command {
    Cli::command()
}

/// Writes `nodeinit.8` (from the clap definition) and `nodeinit.toml.5`
/// (from the config reference) into `dir`.
///
/// # Errors
///
/// The file that could not be written.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut page = Vec::new();
    clap_mangen::Man::new(definition())
        .section("8")
        .manual("System Administration")
        .render(&mut page)
        .map_err(|e| format!("render nodeinit.8: {e}"))?;
    let toml_page = crate::config::reference::man_page(env!("CARGO_PKG_VERSION"));
    let mut written = Vec::new();
    for (name, bytes) in [
        ("nodeinit.8", page),
        ("nodeinit.toml.5", toml_page.into_bytes()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `nodeinit.bash`, `_nodeinit` (zsh) and `nodeinit.fish` into `dir`.
///
/// # Errors
///
/// The file that could not be written.
pub fn write_completions(dir: &Path) -> Result<Vec<PathBuf>, String> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut definition(), "nodeinit", dir)
            .map_err(|e| format!("write {shell} completions into {}: {e}", dir.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn p(words: &[&str]) -> Result<Command, clap::Error> {
        parse(
            &words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>(),
            false,
        )
    }

    #[test]
    fn commands() {
        assert_eq!(p(&[]).unwrap(), Command::Boot { config: None });
        assert_eq!(
            p(&["--config", "/x.toml"]).unwrap(),
            Command::Boot {
                config: Some("/x.toml".into())
            }
        );
        assert_eq!(
            p(&["boot", "--config", "/x.toml"]).unwrap(),
            Command::Boot {
                config: Some("/x.toml".into())
            }
        );
        assert_eq!(
            p(&["--sandbox"]).unwrap(),
            Command::Sandbox { config: None }
        );
        assert_eq!(
            p(&["--sandbox", "--config", "s.toml"]).unwrap(),
            Command::Sandbox {
                config: Some("s.toml".into())
            }
        );
        assert_eq!(
            p(&["check", "--config", "c.toml"]).unwrap(),
            Command::Check {
                config: Some("c.toml".into())
            }
        );
        assert_eq!(
            p(&["report"]).unwrap(),
            Command::Report {
                file: None,
                json: false
            }
        );
        assert_eq!(
            p(&["report", "--json", "--file", "b.json"]).unwrap(),
            Command::Report {
                file: Some("b.json".into()),
                json: true
            }
        );
        assert_eq!(
            p(&["plugin", "inspect", "a.so", "b.so"]).unwrap(),
            Command::Inspect {
                paths: vec!["a.so".into(), "b.so".into()]
            }
        );
    }

    #[test]
    fn mistakes_name_the_argument() {
        let e = p(&["check", "--confg", "x"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        assert!(
            e.to_string()
                .contains("unexpected argument '--confg' found"),
            "{e}"
        );
        let e = p(&["frobnicate"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSubcommand);
        assert!(
            e.to_string()
                .contains("unrecognized subcommand 'frobnicate'"),
            "{e}"
        );
        let e = p(&["plugin", "inspect"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        // Errors end with a newline: the shell prompt starts on its own line.
        assert!(e.render().to_string().ends_with('\n'));
    }

    #[test]
    fn help_and_version_everywhere() {
        for words in [
            &["--help"][..],
            &["check", "--help"],
            &["report", "--help"],
            &["plugin", "inspect", "--help"],
            &["boot", "--help"],
        ] {
            let e = p(words).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{words:?}");
            assert_eq!(e.exit_code(), 0);
        }
        for words in [
            &["--version"][..],
            &["check", "--version"],
            &["report", "--version"],
        ] {
            let e = p(words).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayVersion, "{words:?}");
            assert!(
                e.render().to_string().contains(env!("CARGO_PKG_VERSION")),
                "{words:?}"
            );
        }
    }

    #[test]
    fn pid1_ignores_kernel_leftovers() {
        let args = vec!["splash".to_owned(), "--help".to_owned()];
        assert_eq!(parse(&args, true).unwrap(), Command::Boot { config: None });
    }

    #[test]
    fn definition_is_consistent() {
        definition().debug_assert();
    }

    #[test]
    fn man_pages_and_completions_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_man_pages(dir.path()).unwrap();
        assert_eq!(pages.len(), 2);
        let page = std::fs::read_to_string(dir.path().join("nodeinit.8")).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq \\(aq"), "{page}");
        assert!(page.contains(".TH nodeinit 8"), "{page}");
        assert!(page.contains("check"), "{page}");
        assert!(
            !page.contains("__man"),
            "hidden commands stay out of the page"
        );
        let toml = std::fs::read_to_string(dir.path().join("nodeinit.toml.5")).unwrap();
        assert!(toml.contains("host.on_failure"), "{toml}");
        let shells = write_completions(dir.path()).unwrap();
        let names: Vec<String> = shells
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["nodeinit.bash", "_nodeinit", "nodeinit.fish"]);
        let bash = std::fs::read_to_string(dir.path().join("nodeinit.bash")).unwrap();
        assert!(bash.contains("inspect"), "{bash}");
    }
}
