//! The `nodeinit` binary: logging, argument dispatch, and the PID 1 safety
//! net (a panic anywhere becomes the `on_failure` action; PID 1 never
//! exits). Everything else lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nodeinit::boot::{boot, BootEnv, BootReport, BOOT_REPORT_FILE};
use nodeinit::cli::{self, Command};
use nodeinit::pid1;
use nodeinit::placement::Placement;
use nodeinit::sandbox::{enter_sandbox, SandboxSide};

fn main() -> ExitCode {
    let is_pid1 = pid1::is_pid1();
    nodeinit::logging::init();
    pid1::install_panic_hook();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args, is_pid1) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version go to stdout with 0; mistakes to stderr with 2.
            let _ = e.print();
            return exit(e.exit_code());
        }
    };
    match command {
        Command::Boot { config } => exit(run_boot(BootEnv::from_system(config))),
        Command::BenchUnsplitSandbox { config } => {
            nodeinit::keeper::run_workers_in_process_for_bench();
            exit(sandbox(config))
        }
        Command::Sandbox { config } => exit(sandbox(config)),
        Command::Check { config } => {
            let (report, ok) = nodeinit::check::check(config.as_deref());
            print!("{report}");
            verdict(ok)
        }
        Command::Report { file, json } => {
            let path = file.unwrap_or_else(|| Path::new("/run/nodeinit").join(BOOT_REPORT_FILE));
            match BootReport::read_from(&path) {
                Ok(r) if json => match serde_json::to_string_pretty(&r) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("nodeinit report: encode {}: {e}", path.display());
                        ExitCode::FAILURE
                    }
                },
                Ok(r) => {
                    print!("{}", r.render());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("nodeinit report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Inspect { paths } => {
            let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
            let (report, ok) = nodeinit::inspect::inspect(&paths);
            print!("{report}");
            verdict(ok)
        }
        Command::Status { socket } => control(socket, &nodeinit::control::ControlRequest::Status),
        Command::Reload { socket } => control(socket, &nodeinit::control::ControlRequest::Reload),
        Command::DemoAgent => exit(nodeinit::demo::run()),
        Command::DemoAgentRestartCheck => exit(nodeinit::demo::run_restart_check()),
        Command::DemoAgentRestartBench { times } => exit(nodeinit::demo::run_restart_bench(times)),
        Command::DemoAgentReloadCheck {
            installed,
            new,
            broken,
        } => exit(nodeinit::demo::run_reload_check(&installed, &new, &broken)),
        Command::Worker => exit(nodeinit::worker::run()),
        Command::CheckChild { config, excluded } => {
            verdict(nodeinit::check::check_here(config.as_deref(), &excluded).1)
        }
        Command::InspectChild { path } => exit(nodeinit::inspect::inspect_here(&path)),
        Command::Man { dir } => written(cli::write_man_pages(&dir)),
        Command::Completions { dir } => written(cli::write_completions(&dir)),
    }
}

fn written(result: Result<Vec<PathBuf>, String>) -> ExitCode {
    match result {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nodeinit: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `nodeinit status` / `nodeinit reload`: ask the keeper, print its answer.
fn control(socket: Option<PathBuf>, request: &nodeinit::control::ControlRequest) -> ExitCode {
    use nodeinit::control::{ask, default_socket, render_status, ControlReply};
    let socket = socket.unwrap_or_else(default_socket);
    match ask(&socket, request) {
        Ok(ControlReply::Status(status)) => {
            print!("{}", render_status(&status));
            ExitCode::SUCCESS
        }
        Ok(ControlReply::Reloaded(status)) => {
            println!("reloaded");
            print!("{}", render_status(&status));
            ExitCode::SUCCESS
        }
        Ok(ControlReply::Error(why)) => {
            eprintln!("nodeinit: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("nodeinit: {e}");
            ExitCode::FAILURE
        }
    }
}

fn verdict(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--sandbox`: the boot in a private PID and mount namespace; the exit code.
fn sandbox(config: Option<PathBuf>) -> i32 {
    match enter_sandbox() {
        Ok(SandboxSide::Inside) => match nodeinit::demo::prepare(config) {
            Ok(config) => run_boot(BootEnv::for_sandbox(config)),
            Err(e) => {
                eprintln!("nodeinit --sandbox: {e}");
                1
            }
        },
        Ok(SandboxSide::Outside { exit_code }) => exit_code,
        Err(e) => {
            eprintln!("nodeinit: {e}");
            1
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Boots under the panic net. As the node's real PID 1 this never returns.
fn run_boot(env: BootEnv) -> i32 {
    let code = match pid1::catch_panic(|| boot(&env)) {
        Ok(code) => code,
        Err(panic) => {
            let reason = format!("nodeinit panicked: {panic}");
            tracing::error!("{reason}");
            let context = nodeinit::boot::failure_context(env.placement);
            let outcome = pid1::decide_failure_outcome(nodeinit::boot::on_failure(), &context);
            pid1::perform_failure_outcome(&outcome, &reason).unwrap_or(1)
        }
    };
    if env.placement == Placement::NodePid1 {
        // PID 1 exiting panics the kernel: stay, reap, obey shutdown signals.
        tracing::error!(
            code,
            "boot ended without a handoff; PID 1 stays up (send SIGTERM/SIGPWR to shut down)"
        );
        nodeinit::boot::idle_as_pid1();
    }
    code
}
