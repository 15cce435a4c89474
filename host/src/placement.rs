//! Where this nodeinit runs. One value, decided once in `main`, instead of
//! `is_pid1`/`sandbox` booleans tested in many places: each duty asks the
//! placement whether it applies.

/// Where nodeinit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The node's real PID 1 (the kernel's `/init`): exiting panics the
    /// kernel, `on_failure` may reboot or power off the machine.
    NodePid1,
    /// PID 1 of `nodeinit --sandbox`'s private PID namespace on a developer
    /// machine: PID 1 duties (mounts, reaping), but a failure is an exit code.
    Sandbox,
    /// An ordinary process (tests, a boot run by hand): no PID 1 duties.
    Process,
}

impl Placement {
    /// The placement of this process when it boots without `--sandbox`.
    pub fn detect() -> Self {
        if crate::pid1::is_pid1() {
            Self::NodePid1
        } else {
            Self::Process
        }
    }

    /// PID 1 of its PID namespace (node or sandbox).
    pub fn is_pid1(self) -> bool {
        matches!(self, Self::NodePid1 | Self::Sandbox)
    }

    /// Whether orphans are reparented to us and must be reaped.
    pub fn reaps_orphans(self) -> bool {
        self.is_pid1()
    }

    /// Whether this process may reboot or power off the machine.
    pub fn owns_the_machine(self) -> bool {
        self == Self::NodePid1
    }

    /// Whether the kernel's module list and console apply (the real node only).
    pub fn is_node(self) -> bool {
        self == Self::NodePid1
    }

    /// Lowercase name, for logs and `boot.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodePid1 => "node-pid1",
            Self::Sandbox => "sandbox",
            Self::Process => "process",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duties_follow_the_placement() {
        use Placement::*;
        let table: Vec<_> = [NodePid1, Sandbox, Process]
            .into_iter()
            .map(|p| {
                (
                    p.is_pid1(),
                    p.reaps_orphans(),
                    p.owns_the_machine(),
                    p.is_node(),
                )
            })
            .collect();
        assert_eq!(
            table,
            [
                (true, true, true, true),
                (true, true, false, false),
                (false, false, false, false)
            ]
        );
        // The test harness is never PID 1.
        assert_eq!(Placement::detect(), Process);
    }
}
