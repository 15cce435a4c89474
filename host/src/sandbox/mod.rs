//! `nodeinit --sandbox` (DESIGN.md §5): the whole boot on a developer's
//! machine without touching it. This module owns only the enclosure: a new
//! PID namespace (nodeinit is PID 1 inside), a private mount namespace with
//! a fresh `/proc`, a tmpfs on `/run`, and a fresh child cgroup of the
//! current cgroup2 mount bind-mounted at `/sys/fs/cgroup`. The boot itself
//! runs inside, unchanged, with failures turned into a non-zero exit.
//!
//! Outside, the parent waits for the sandbox's PID 1, forwards SIGINT/SIGTERM
//! to it, then removes the sandbox cgroup. Mounts vanish with the mount
//! namespace, loop devices (autoclear) with their mounts, processes with the
//! PID namespace. This module never touches the host's own mounts.

mod cgroup_dir;
mod enter;
mod plan;

pub use cgroup_dir::{remove_cgroup_tree, CgroupCleanupError};
pub use enter::{enter_sandbox, SandboxError, SandboxSide};
pub use plan::{plan_sandbox, SandboxPlan, SandboxPlanError};
