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
    /// `status [--socket S]`: the running worker's plugins, since when.
    Status {
        /// The keeper's control socket (default `/run/nodeinit/control.sock`).
        socket: Option<PathBuf>,
    },
    /// `reload [--socket S]`: probe the config's plugin files, then hand over.
    Reload {
        /// The keeper's control socket.
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
    /// `demo-agent --restart-check`: kills the worker and checks the
    /// allocation survives (tests).
    DemoAgentRestartCheck,
    /// `demo-agent --restart-bench N`: times N worker restarts (bench).
    DemoAgentRestartBench {
        /// Restarts to time.
        times: u32,
    },
    /// `demo-agent --reload-check INSTALLED NEW BROKEN` (tests).
    DemoAgentReloadCheck {
        /// The plugin file in place.
        installed: PathBuf,
        /// A good new version.
        new: PathBuf,
        /// A broken one.
        broken: PathBuf,
    },
    /// `__worker` (hidden): the worker process the keeper starts.
    Worker,
    /// `__bench-unsplit-sandbox [--config F]` (hidden, benchmarks only):
    /// `--sandbox` with the worker's phases run in a thread of the keeper,
    /// as before the keeper/worker split, to measure what the split costs.
    BenchUnsplitSandbox {
        /// `--config`.
        config: Option<PathBuf>,
    },
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
    /// Show the running worker: its plugins (name, version, sha256) and since when.
    #[command(version)]
    Status {
        /// The keeper's control socket.
        #[arg(long, value_name = "SOCKET")]
        socket: Option<PathBuf>,
    },
    /// Load the config's plugin files in a probe child, then hand the running
    /// node over to them without losing state (also: SIGHUP to the keeper).
    #[command(version)]
    Reload {
        /// The keeper's control socket.
        #[arg(long, value_name = "SOCKET")]
        socket: Option<PathBuf>,
    },
    /// Work with plugin files.
    #[command(version, subcommand_required = true, arg_required_else_help = true)]
    Plugin {
        #[command(subcommand)]
        command: PluginSub,
    },
    /// The sandbox's demo agent.
    #[command(hide = true)]
    DemoAgent {
        /// Kill the worker and check the allocation survives.
        #[arg(long, conflicts_with_all = ["restart_bench", "reload_check"])]
        restart_check: bool,
        /// Time N worker restarts.
        #[arg(long, value_name = "N", conflicts_with = "reload_check")]
        restart_bench: Option<u32>,
        /// Reload to NEW, then to BROKEN, with INSTALLED in place.
        #[arg(long, num_args = 3, value_names = ["INSTALLED", "NEW", "BROKEN"])]
        reload_check: Option<Vec<PathBuf>>,
    },
    /// The worker process the keeper starts.
    #[command(name = "__worker", hide = true)]
    Worker,
    /// `--sandbox` without the keeper/worker split (benchmarks only; never
    /// the PID 1 path, which never parses arguments).
    #[command(name = "__bench-unsplit-sandbox", hide = true)]
    BenchUnsplitSandbox {
        /// The config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The probe child of `check`.
    #[command(name = "__check", hide = true)]
    CheckChild {
        /// The config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// `kind=reason` of plugins not to load.
        #[arg(long = "exclude", value_name = "KIND=REASON")]
        excluded: Vec<String>,
    },
    /// The probe child of `plugin inspect`.
    #[command(name = "__inspect", hide = true)]
    InspectChild {
        /// The file.
        path: PathBuf,
    },
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
            Sub::Status { socket } => Command::Status { socket },
            Sub::Reload { socket } => Command::Reload { socket },
            Sub::DemoAgent {
                restart_check,
                restart_bench,
                reload_check,
            } => match (restart_check, restart_bench, reload_check) {
                (true, _, _) => Command::DemoAgentRestartCheck,
                (_, Some(times), _) => Command::DemoAgentRestartBench { times },
                (_, _, Some(paths)) => match <[PathBuf; 3]>::try_from(paths) {
                    Ok([installed, new, broken]) => Command::DemoAgentReloadCheck {
                        installed,
                        new,
                        broken,
                    },
                    // clap enforces num_args = 3.
                    Err(_) => Command::DemoAgent,
                },
                _ => Command::DemoAgent,
            },
            Sub::Worker => Command::Worker,
            Sub::BenchUnsplitSandbox { config } => Command::BenchUnsplitSandbox { config },
            Sub::CheckChild { config, excluded } => Command::CheckChild { config, excluded },
            Sub::InspectChild { path } => Command::InspectChild { path },
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
        assert_eq!(p(&["status"]).unwrap(), Command::Status { socket: None });
        assert_eq!(
            p(&["reload", "--socket", "/s"]).unwrap(),
            Command::Reload {
                socket: Some("/s".into())
            }
        );
        assert_eq!(p(&["__worker"]).unwrap(), Command::Worker);
        assert_eq!(
            p(&["__bench-unsplit-sandbox", "--config", "b.toml"]).unwrap(),
            Command::BenchUnsplitSandbox {
                config: Some("b.toml".into())
            }
        );
        assert_eq!(
            p(&[
                "__check",
                "--config",
                "c",
                "--exclude",
                "mount=x",
                "--exclude",
                "cgroup=y"
            ])
            .unwrap(),
            Command::CheckChild {
                config: Some("c".into()),
                excluded: vec!["mount=x".into(), "cgroup=y".into()]
            }
        );
        assert_eq!(
            p(&["__inspect", "a.so"]).unwrap(),
            Command::InspectChild {
                path: "a.so".into()
            }
        );
        assert_eq!(p(&["demo-agent"]).unwrap(), Command::DemoAgent);
        assert_eq!(
            p(&["demo-agent", "--restart-check"]).unwrap(),
            Command::DemoAgentRestartCheck
        );
        assert_eq!(
            p(&["demo-agent", "--restart-bench", "5"]).unwrap(),
            Command::DemoAgentRestartBench { times: 5 }
        );
        assert_eq!(
            p(&["demo-agent", "--reload-check", "a", "b", "c"]).unwrap(),
            Command::DemoAgentReloadCheck {
                installed: "a".into(),
                new: "b".into(),
                broken: "c".into()
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
            &["status", "--help"],
            &["reload", "--help"],
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
