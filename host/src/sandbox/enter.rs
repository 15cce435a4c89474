//! Entering the sandbox: PID namespace + fork, then (in the child, which is
//! PID 1 of the new namespace) a private mount namespace with fresh /proc,
//! tmpfs /run and the sandbox cgroup at /sys/fs/cgroup. The parent waits,
//! forwards SIGINT/SIGTERM/SIGHUP as SIGTERM, and removes the cgroup.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::pid1::{mount_points, SignalPipe};
use crate::sandbox::{
    plan_sandbox, remove_cgroup_tree, CgroupCleanupError, SandboxPlan, SandboxPlanError,
};

/// Which side of the fork this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxSide {
    /// PID 1 of the sandbox: run the boot now, as PID 1 in sandbox mode.
    Inside,
    /// The original process, after the sandbox ended and was cleaned up:
    /// exit with this code (the sandbox PID 1's exit status; 128+N if killed by signal N).
    Outside {
        /// The code.
        exit_code: i32,
    },
}

/// Why the sandbox could not be set up or cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Not root.
    #[error("the sandbox needs root (namespaces, mounts, cgroups): run it with sudo")]
    NotRoot,
    /// A file under /proc could not be read.
    #[error("cannot read {path}: {source}")]
    Proc {
        /// The file.
        path: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// No place for the sandbox cgroup.
    #[error(transparent)]
    Plan(#[from] SandboxPlanError),
    /// The sandbox cgroup could not be created.
    #[error("cannot create sandbox cgroup {path}: {source}")]
    CreateCgroup {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A namespace or fork call failed.
    #[error("{what}: {source} (is this kernel built with namespaces, and are you root in the initial user namespace?)")]
    Namespace {
        /// The call.
        what: &'static str,
        /// The OS error.
        source: nix::Error,
    },
    /// A mount inside the sandbox failed.
    #[error("sandbox: mount {what} on {target}: {source}")]
    Mount {
        /// What was mounted.
        what: &'static str,
        /// Where.
        target: String,
        /// The OS error.
        source: nix::Error,
    },
    /// Waiting for the sandbox failed.
    #[error("sandbox: waiting for PID 1 of the sandbox failed: {0}")]
    Wait(nix::Error),
    /// The cgroup could not be removed afterwards.
    #[error(transparent)]
    Cleanup(#[from] CgroupCleanupError),
}

/// Set up the sandbox and fork. Call before any thread is started.
///
/// # Errors
///
/// [`SandboxError`] in the parent. In the child a setup failure is printed
/// and the child exits with status 125, which the parent returns.
pub fn enter_sandbox() -> Result<SandboxSide, SandboxError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SandboxError::NotRoot);
    }
    let read = |path: &'static str| {
        std::fs::read_to_string(path).map_err(|source| SandboxError::Proc { path, source })
    };
    let plan = plan_sandbox(
        &mount_points(&read("/proc/self/mountinfo")?),
        &read("/proc/self/cgroup")?,
        std::process::id(),
    )?;
    // A leftover of an earlier run with the same pid would hold stale slices.
    remove_cgroup_tree(&plan.sandbox_cgroup)?;
    std::fs::create_dir(&plan.sandbox_cgroup).map_err(|source| SandboxError::CreateCgroup {
        path: plan.sandbox_cgroup.display().to_string(),
        source,
    })?;
    let forked = unshare(CloneFlags::CLONE_NEWPID).and_then(|()| {
        // SAFETY: called before nodeinit starts threads (documented
        // requirement); the child only makes syscalls and then runs the
        // ordinary single-threaded boot.
        unsafe { fork() }
    });
    match forked {
        Err(source) => {
            let _ = remove_cgroup_tree(&plan.sandbox_cgroup);
            Err(SandboxError::Namespace {
                what: "unshare(CLONE_NEWPID) + fork",
                source,
            })
        }
        Ok(ForkResult::Child) => match setup_inside(&plan) {
            Ok(()) => Ok(SandboxSide::Inside),
            Err(e) => {
                eprintln!("nodeinit: {e}");
                std::process::exit(125);
            }
        },
        Ok(ForkResult::Parent { child }) => {
            let waited = wait_for_sandbox(child);
            // Clean up even when waiting failed: the namespace is gone or going.
            remove_cgroup_tree(&plan.sandbox_cgroup)?;
            Ok(SandboxSide::Outside { exit_code: waited? })
        }
    }
}

fn setup_inside(plan: &SandboxPlan) -> Result<(), SandboxError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|source| SandboxError::Namespace {
        what: "unshare(CLONE_NEWNS)",
        source,
    })?;
    let mount_at = |what: &'static str,
                    source: Option<&Path>,
                    target: &str,
                    fstype: Option<&str>,
                    flags: MsFlags,
                    data: Option<&str>| {
        mount(source, target, fstype, flags, data).map_err(|e| SandboxError::Mount {
            what,
            target: target.to_owned(),
            source: e,
        })
    };
    // Nothing mounted inside may propagate back to the host.
    mount_at(
        "private propagation",
        None,
        "/",
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let hardening = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // A /proc of the new PID namespace, so PIDs and /proc/self match.
    mount_at(
        "proc",
        Some(Path::new("proc")),
        "/proc",
        Some("proc"),
        hardening,
        None,
    )?;
    mount_at(
        "tmpfs",
        Some(Path::new("tmpfs")),
        "/run",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    mount_at(
        "the sandbox cgroup",
        Some(&plan.sandbox_cgroup),
        "/sys/fs/cgroup",
        None,
        MsFlags::MS_BIND,
        None,
    )?;
    Ok(())
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

fn wait_for_sandbox(child: Pid) -> Result<i32, SandboxError> {
    // Installed after the fork, so the sandbox never shares this pipe.
    let signals = SignalPipe::install().map_err(SandboxError::Wait)?;
    loop {
        // Checked before sleeping: the child may have ended before the handler existed.
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    return Ok(code);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(SandboxError::Wait(e)),
        }
        let mut fds = [PollFd::new(signals.fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(SandboxError::Wait(e)),
        }
        for signal in signals.drain() {
            if matches!(signal, Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP) {
                // PID 1 of the sandbox handles SIGTERM as "shut down".
                let _ = kill(child, Signal::SIGTERM);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The real thing, in a helper process: enter, look around inside, leave
    //! a process and a cgroup behind on purpose, and check the parent
    //! cleaned everything up.
    use super::*;
    use crate::pid1::test_process::{helper_command, runs_as_helper};

    const HELPER: &str = "sandbox::enter::tests::helper_enter_sandbox";
    /// A duration no other test uses, so `pgrep` finds only this test's straggler.
    const STRAGGLER_SECS: &str = "4217.5";

    const TEST: &str = "sandbox::enter::tests::sandbox_encloses_and_cleans_up";

    fn helper_enter_sandbox() {
        match enter_sandbox().unwrap() {
            SandboxSide::Inside => {
                let mounts =
                    mount_points(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
                let fstype_at = |t: &str| {
                    mounts
                        .iter()
                        .rev()
                        .find(|m| m.target == Path::new(t))
                        .map(|m| m.fstype.clone())
                };
                println!("INSIDE pid={}", std::process::id());
                println!(
                    "INSIDE run={:?} cgroup={:?}",
                    fstype_at("/run"),
                    fstype_at("/sys/fs/cgroup")
                );
                println!(
                    "INSIDE run_empty={}",
                    std::fs::read_dir("/run").unwrap().count() == 0
                );
                // What a cgroup backend would create; left for the parent to remove.
                std::fs::create_dir("/sys/fs/cgroup/pact.slice").unwrap();
                std::fs::create_dir("/sys/fs/cgroup/pact.slice/infra.slice").unwrap();
                // A process left running: the PID namespace must take it down.
                let straggler = std::process::Command::new("sleep")
                    .arg(STRAGGLER_SECS)
                    .spawn()
                    .unwrap();
                println!("INSIDE straggler={}", straggler.id());
                std::process::exit(7);
            }
            SandboxSide::Outside { exit_code } => println!("OUTSIDE exit_code={exit_code}"),
        }
    }

    #[test]
    fn sandbox_encloses_and_cleans_up() {
        if runs_as_helper(HELPER, helper_enter_sandbox) {
            return;
        }
        assert!(
            nix::unistd::geteuid().is_root(),
            "the sandbox test needs root"
        );
        let output = helper_command(TEST, HELPER, &[]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let context = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{context}");
        assert!(stdout.contains("INSIDE pid=1\n"), "{context}");
        assert!(
            stdout.contains("INSIDE run=Some(\"tmpfs\") cgroup=Some(\"cgroup2\")"),
            "{context}"
        );
        assert!(stdout.contains("INSIDE run_empty=true"), "{context}");
        assert!(stdout.contains("OUTSIDE exit_code=7"), "{context}");
        // Nothing left: no sandbox cgroup, no mounts on the host, no straggler.
        let leftovers: Vec<_> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains("nodeinit-sandbox"))
            .map(str::to_owned)
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let plan_root = plan_sandbox(
            &mount_points(&std::fs::read_to_string("/proc/self/mountinfo").unwrap()),
            &std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            0,
        )
        .unwrap();
        let parent = plan_root.sandbox_cgroup.parent().unwrap().to_path_buf();
        let sandboxes: Vec<_> = std::fs::read_dir(&parent)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("nodeinit-sandbox-"))
            .collect();
        assert!(
            sandboxes.is_empty(),
            "sandbox cgroups left in {}: {sandboxes:?}",
            parent.display()
        );
        let straggler = stdout
            .lines()
            .find_map(|l| l.strip_prefix("INSIDE straggler="))
            .unwrap();
        // Its pid is the namespace's; find it on the host by its unique command line.
        assert!(!straggler.is_empty());
        let pattern = format!("^sleep {STRAGGLER_SECS}$");
        let survivors = std::process::Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        assert!(
            survivors.stdout.is_empty(),
            "straggler survived: {}",
            String::from_utf8_lossy(&survivors.stdout)
        );
    }
}
