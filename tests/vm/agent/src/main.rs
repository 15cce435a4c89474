//! nodeinit-vm-agent: the node agent of the VM test.
//!
//! nodeinit hands the booted VM to this program (`[handoff] exec`). It checks
//! what nodeinit was supposed to have built, prints one `VMTEST PASS|FAIL`
//! line per check on the console for `tests/vm/run-vm-test.sh` to grep, and
//! ends the VM the way its mode demands:
//!
//! * `--mode exec`: the agent is PID 1; it checks, then powers off.
//! * `--mode supervise`: nodeinit stays PID 1; the first run also checks the
//!   namespace handoff, then crashes; the restarted run checks it was
//!   restarted and asks nodeinit to shut the VM down.

mod kernel_cmdline;
mod kernel_modules;
mod lifecycle;
mod namespaces;
mod report;
mod scope;
mod slices;

use hpc_node::readiness::READINESS_FILE_PATH;
use nix::sys::signal::Signal;
use report::Report;

const BOOT_JSON: &str = "/run/nodeinit/boot.json";
const USAGE: &str = "usage: nodeinit-vm-agent --mode exec|supervise [--shutdown-signal TERM]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Exec,
    Supervise,
}

struct Args {
    mode: Mode,
    shutdown_signal: Signal,
}

fn parse_args() -> Result<Args, String> {
    let mut mode = None;
    let mut shutdown_signal = Signal::SIGTERM;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mode" => mode = Some(parse_mode(args.next())?),
            "--shutdown-signal" => {
                let name = args.next().unwrap_or_default();
                shutdown_signal = format!("SIG{name}")
                    .parse()
                    .map_err(|_| format!("--shutdown-signal {name:?} is not a signal; {USAGE}"))?;
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let mode = mode.ok_or_else(|| format!("--mode is required; {USAGE}"))?;
    Ok(Args {
        mode,
        shutdown_signal,
    })
}

fn parse_mode(word: Option<String>) -> Result<Mode, String> {
    match word.as_deref() {
        Some("exec") => Ok(Mode::Exec),
        Some("supervise") => Ok(Mode::Supervise),
        other => Err(format!(
            "--mode {other:?} is neither exec nor supervise; {USAGE}"
        )),
    }
}

fn main() {
    let mut report = Report::open();
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    report.info(
        "handoff-uptime",
        uptime.split_whitespace().next().unwrap_or("?"),
    );
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            report.check("arguments", Err(why));
            finish(&mut report, None);
        }
    };
    let runs = lifecycle::previous_runs();
    match (args.mode, runs) {
        (Mode::Supervise, Ok(previous)) if previous > 0 => {
            restarted_run(&mut report, previous, args.shutdown_signal)
        }
        (mode, runs) => {
            if let Err(why) = runs {
                report.check("run-counter", Err(why));
            }
            first_run(&mut report, mode)
        }
    }
}

fn first_run(report: &mut Report, mode: Mode) -> ! {
    match std::fs::read_to_string(BOOT_JSON) {
        Ok(json) => report.info("boot.json", &json),
        Err(e) => report.check("boot-json", Err(format!("cannot read {BOOT_JSON}: {e}"))),
    }
    let pid = std::process::id();
    report.check(
        "pid",
        match (mode, pid) {
            (Mode::Exec, 1) => Ok("exec mode: the agent is PID 1".to_owned()),
            (Mode::Supervise, pid) if pid != 1 => Ok(format!(
                "supervise mode: agent is pid {pid}, nodeinit stays PID 1 ({})",
                pid1_exe()
            )),
            (_, pid) => Err(format!("agent is pid {pid}, PID 1 is {}", pid1_exe())),
        },
    );
    report.check("cgroup2", slices::cgroup2_mounted());
    for slice in slices::ALL_SLICES {
        report.check(
            &format!("controllers {slice}"),
            slices::slice_controllers(slice),
        );
    }
    report.check(
        "readiness",
        kernel_cmdline::node_id().and_then(|node_id| {
            let content = std::fs::read_to_string(READINESS_FILE_PATH)
                .map_err(|e| format!("cannot read {READINESS_FILE_PATH}: {e}"))?;
            if content == node_id {
                Ok(format!("{READINESS_FILE_PATH} holds {content:?}"))
            } else {
                Err(format!(
                    "{READINESS_FILE_PATH} holds {content:?}, kernel command line says {node_id:?}"
                ))
            }
        }),
    );
    match kernel_modules::load_packed_modules() {
        Ok(loaded) if loaded.is_empty() => {
            report.info("modules", "all packed modules were already loaded")
        }
        Ok(loaded) => report.info("modules", &format!("the agent loaded {}", loaded.join(" "))),
        Err(why) => report.check("modules", Err(why)),
    }
    report.check(
        "scope",
        scope::virtio_disk().and_then(|disk| {
            let manager = scope::cgroupfs_backend(&disk)?;
            scope::scope_limits(manager.as_ref(), &disk)
        }),
    );
    if mode == Mode::Supervise {
        handoff_checks(report);
    }
    match mode {
        Mode::Exec => finish(report, Some(lifecycle::power_off_as_pid1 as fn() -> !)),
        Mode::Supervise => {
            report.finish();
            report.info(
                "crash",
                "first run done, crashing on purpose (SIGABRT) to be restarted",
            );
            lifecycle::crash()
        }
    }
}

fn handoff_checks(report: &mut Report) {
    let client = namespaces::client();
    match namespaces::request(&client, "vmtest-alloc-1") {
        Ok(granted) => {
            report.check(
                "handoff",
                Ok(format!("namespace_response {:?}", granted.response)),
            );
            report.check("uenv-host", namespaces::host_mount());
            report.check(
                "namespace-fds",
                namespaces::fds_are_new_namespaces(&granted),
            );
            report.check("uenv-in-namespace", namespaces::uenv_inside(&granted));
            report.check("allocation-ended", namespaces::release(&client, granted));
        }
        Err(why) => report.check("handoff", Err(why)),
    }
}

fn restarted_run(report: &mut Report, previous: u32, shutdown_signal: Signal) -> ! {
    let pid = std::process::id();
    report.check(
        "restarted",
        if pid != 1 {
            Ok(format!(
                "run {} as pid {pid}, restarted by nodeinit after the crash",
                previous + 1
            ))
        } else {
            Err("restarted run is PID 1".to_owned())
        },
    );
    report.finish();
    report.info(
        "shutdown",
        &format!("asking PID 1 to shut down with {shutdown_signal}"),
    );
    match lifecycle::request_shutdown(shutdown_signal) {
        Ok(()) => {
            report.info("shutdown", "got SIGTERM from nodeinit, exiting 0");
            std::process::exit(0)
        }
        Err(why) => {
            report.check("shutdown", Err(why));
            std::process::exit(1)
        }
    }
}

fn finish(report: &mut Report, then: Option<fn() -> !>) -> ! {
    let all_passed = report.finish();
    match then {
        Some(end) => end(),
        None if std::process::id() == 1 => lifecycle::power_off_as_pid1(),
        None => std::process::exit(if all_passed { 0 } else { 1 }),
    }
}

fn pid1_exe() -> String {
    std::fs::read_link("/proc/1/exe")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("unknown (/proc/1/exe: {e})"))
}
