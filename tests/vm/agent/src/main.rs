//! nodeinit-vm-agent: the node agent of the VM test.
//!
//! nodeinit hands the booted VM to this program (`[handoff] exec`). It checks
//! what nodeinit was supposed to have built (boot.json, kernel modules,
//! cgroup2 and its slices, a cgroupfs scope, the readiness file), prints one
//! `VMTEST PASS|FAIL` line per check on the console for
//! `tests/vm/run-vm-test.sh` to grep, and ends the VM the way its mode
//! demands:
//!
//! * `--mode exec`: the agent is PID 1; it also checks the `[boot].mounts`
//!   uenv image, then powers off.
//! * `--mode supervise`: nodeinit stays PID 1; the first run also checks the
//!   namespace handoff, that PID 1 maps no plugin, and that the allocation
//!   survives a worker killed with SIGSEGV, then crashes; the restarted run
//!   checks it was restarted and asks nodeinit to shut the VM down
//!   (`--shutdown-signal`).
//! * `--mode reload`: supervise mode; `nodeinit reload` to a rebuilt plugin
//!   with a live allocation, then to a broken one; then shuts the VM down.
//! * `--mode optional`: exec mode after an optional plugin killed a worker
//!   in its constructor: boot.json says so, the boot went on; powers off.

mod boot_report;
mod kernel_cmdline;
mod kernel_modules;
mod lifecycle;
mod namespaces;
mod reload;
mod report;
mod scope;
mod slices;
mod worker;

use boot_report::BootJson;
use hpc_node::readiness::READINESS_FILE_PATH;
use nix::sys::signal::Signal;
use report::Report;

/// The boot phases that must have succeeded before the handoff, per mode:
/// exec acquires a `[boot].mounts` image, supervise serves the handoff socket.
const EXEC_PHASES: [&str; 8] = [
    "early_mounts",
    "kernel_modules",
    "config",
    "plugins",
    "cgroup_hierarchy",
    "boot_mounts",
    "readiness",
    "handoff",
];
const SUPERVISE_PHASES: [&str; 8] = [
    "early_mounts",
    "kernel_modules",
    "config",
    "plugins",
    "cgroup_hierarchy",
    "handoff_socket",
    "readiness",
    "handoff",
];

const USAGE: &str =
    "usage: nodeinit-vm-agent --mode exec|supervise|optional|reload [--shutdown-signal TERM]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Exec,
    Supervise,
    Optional,
    Reload,
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
        Some("optional") => Ok(Mode::Optional),
        Some("reload") => Ok(Mode::Reload),
        other => Err(format!(
            "--mode {other:?} is not exec, supervise, optional or reload; {USAGE}"
        )),
    }
}

fn main() {
    let mut report = Report::open();
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
        (Mode::Optional, _) => optional_run(&mut report),
        (Mode::Reload, _) => reload_run(&mut report, args.shutdown_signal),
        (mode, runs) => {
            if let Err(why) = runs {
                report.check("run-counter", Err(why));
            }
            first_run(&mut report, mode)
        }
    }
}

fn first_run(report: &mut Report, mode: Mode) -> ! {
    report.info("handoff-uptime", &uptime_secs());
    let node_id = kernel_cmdline::node_id();
    match BootJson::read() {
        Ok(boot) => {
            for line in boot.timing_lines() {
                report.info("phase", &line);
            }
            let must_be_ok: &[&str] = match mode {
                Mode::Exec | Mode::Optional => &EXEC_PHASES,
                Mode::Supervise | Mode::Reload => &SUPERVISE_PHASES,
            };
            report.check(
                "boot-json",
                node_id.clone().and_then(|id| boot.check(&id, must_be_ok)),
            );
        }
        Err(why) => report.check("boot-json", Err(why)),
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
    report.check("modules", kernel_modules::packed_modules_loaded());
    report.check("cgroup2", slices::cgroup2_mounted());
    for slice in slices::ALL_SLICES {
        report.check(
            &format!("controllers {slice}"),
            slices::slice_controllers(slice),
        );
    }
    report.check(
        "readiness",
        node_id.and_then(|node_id| {
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
    report.check(
        "scope",
        scope::virtio_disk().and_then(|disk| {
            let manager = scope::cgroupfs_backend(&disk)?;
            scope::scope_limits(manager.as_ref(), &disk)
        }),
    );
    match mode {
        // `[boot].mounts` acquired the image before the exec.
        Mode::Exec | Mode::Optional => report.check("uenv-host", namespaces::host_mount()),
        Mode::Supervise | Mode::Reload => handoff_checks(report),
    }
    match mode {
        Mode::Exec | Mode::Optional => {
            finish(report, Some(lifecycle::power_off_as_pid1 as fn() -> !))
        }
        Mode::Supervise | Mode::Reload => {
            report.finish();
            report.info(
                "crash",
                "first run done, crashing on purpose (SIGABRT) to be restarted",
            );
            lifecycle::crash()
        }
    }
}

/// Supervise mode: a live plugin upgrade, then a shutdown request.
fn reload_run(report: &mut Report, shutdown_signal: Signal) -> ! {
    report.check("reload", reload::upgrade());
    report.finish();
    match lifecycle::request_shutdown(shutdown_signal) {
        Ok(()) => std::process::exit(0),
        Err(why) => {
            report.check("shutdown", Err(why));
            std::process::exit(1)
        }
    }
}

/// The boot went on without the optional readiness plugin that killed a
/// worker in its constructor; boot.json says why.
fn optional_run(report: &mut Report) -> ! {
    report.check(
        "pid",
        if std::process::id() == 1 {
            Ok("exec mode: the agent is PID 1".to_owned())
        } else {
            Err(format!("agent is pid {}", std::process::id()))
        },
    );
    report.check(
        "optional",
        BootJson::read().and_then(|boot| {
            boot.degraded_by("plugins", "worker killed by SIGSEGV in constructor")
        }),
    );
    finish(report, Some(lifecycle::power_off_as_pid1 as fn() -> !))
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
            report.check("pid1-maps", worker::pid1_maps_no_plugin());
            report.check(
                "worker-restart",
                worker::survives_worker_restart(&client, "vmtest-alloc-1", &granted),
            );
            report.check("allocation-ended", namespaces::release(&client, granted));
        }
        Err(why) => report.check("handoff", Err(why)),
    }
}

fn restarted_run(report: &mut Report, previous: u32, shutdown_signal: Signal) -> ! {
    report.info("restart-uptime", &uptime_secs());
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

/// The kernel's uptime in seconds, as `/proc/uptime` gives it.
fn uptime_secs() -> String {
    match std::fs::read_to_string("/proc/uptime") {
        Ok(text) => text.split_whitespace().next().unwrap_or("?").to_owned(),
        Err(e) => format!("unknown (/proc/uptime: {e})"),
    }
}
