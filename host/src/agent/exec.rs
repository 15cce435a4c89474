//! `mode = "exec"`: replace nodeinit with the agent. Every descriptor above
//! stderr is marked close-on-exec first — nothing nodeinit opened (plugin
//! files, sockets, `/dev/watchdog`, whose open handle would make the
//! watchdog fire if the agent does not know about it) leaks into the agent —
//! and the signal handlers and mask are reset to defaults.

use std::os::fd::RawFd;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::agent::AgentCommand;

/// Why the exec did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The command line cannot be passed to execve.
    #[error("cannot exec agent: {0}")]
    BadArgument(String),
    /// Preparing the process failed.
    #[error("cannot exec agent {program}: preparing the process failed: {source}")]
    Prepare {
        /// The agent.
        program: String,
        /// The OS error.
        source: nix::Error,
    },
    /// execve(2) itself failed.
    #[error("cannot exec agent {program}: {source} (check the binary and its interpreter/dynamic loader exist in the image)")]
    Exec {
        /// The agent.
        program: String,
        /// The OS error.
        source: nix::Error,
    },
}

/// Mark every fd above 2 close-on-exec.
fn close_on_exec_above_stderr() -> nix::Result<()> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(|_| nix::Error::ENOENT)?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        match fcntl(fd, FcntlArg::F_GETFD) {
            Ok(flags) => {
                let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
                fcntl(fd, FcntlArg::F_SETFD(flags))?;
            }
            // The directory's own fd, closed since the listing.
            Err(nix::Error::EBADF) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Replace this process with the agent. Returns only on failure.
pub fn exec_agent(command: &AgentCommand) -> ExecError {
    let program = command.program.display().to_string();
    let (argv, envp) = match command.argv().and_then(|a| Ok((a, command.envp()?))) {
        Ok(both) => both,
        Err(message) => return ExecError::BadArgument(message),
    };
    if let Err(source) =
        close_on_exec_above_stderr().and_then(|()| crate::pid1::reset_signals_for_child())
    {
        return ExecError::Prepare { program, source };
    }
    match nix::unistd::execve(&argv[0], &argv, &envp) {
        Err(source) => ExecError::Exec { program, source },
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pid1::test_process::{helper_command, runs_as_helper};

    const HELPER: &str = "agent::exec::tests::helper_exec_with_open_fds";

    const TEST: &str = "agent::exec::tests::exec_leaks_no_descriptor";

    fn helper_exec_with_open_fds() {
        // An fd opened without O_CLOEXEC, as a careless library would (or /dev/watchdog).
        let leaked = nix::fcntl::open(
            "/dev/zero",
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        println!("LEAK_CANDIDATE={leaked}");
        let command = AgentCommand {
            program: "/bin/sh".into(),
            // The glob is expanded (and its directory closed) before the loop runs.
            args: vec![
                "-c".into(),
                "for f in /proc/$$/fd/*; do echo \"FD ${f##*/} $(readlink $f)\"; done".into(),
            ],
            env: vec![],
        };
        let err = exec_agent(&command);
        panic!("exec failed: {err}");
    }

    #[test]
    fn exec_leaks_no_descriptor() {
        if runs_as_helper(HELPER, helper_exec_with_open_fds) {
            return;
        }
        let output = helper_command(TEST, HELPER, &[]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let fds: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("FD "))
            .collect();
        assert!(stdout.contains("LEAK_CANDIDATE="), "{stdout}");
        // 0-2 are inherited; fd 3 is the shell's own (glob directory or the
        // `$(...)` pipe). The /dev/zero the parent left open must be gone.
        assert!(
            fds.len() >= 3 && fds[0].starts_with("0 ") && fds[2].starts_with("2 "),
            "{stdout}"
        );
        assert!(
            fds.iter().all(|l| !l.ends_with("/dev/zero")),
            "descriptor leaked into the agent: {stdout}"
        );
        assert!(output.status.success());
    }

    #[test]
    fn missing_program_reports_exec_error() {
        // execv fails before replacing anything, so this is safe in-process;
        // signal handlers were default already.
        let err = exec_agent(&AgentCommand {
            program: "/nonexistent/agent".into(),
            args: vec![],
            env: vec![],
        });
        assert!(
            matches!(
                err,
                ExecError::Exec {
                    source: nix::Error::ENOENT,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/nonexistent/agent"), "{err}");
    }
}
