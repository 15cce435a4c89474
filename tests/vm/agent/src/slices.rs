//! Checks of the hierarchy nodeinit's cgroup phase built.
//!
//! Owns: cgroup2 being mounted at the cgroup root and the controllers of the
//! hpc-node slices. Each slice must *have* cpu, memory, io and pids (its
//! parent enabled them) and *enable* them for its children (so scopes get
//! `memory.max`, `io.max`, ...). Must never write to the hierarchy.

use std::path::Path;

use hpc_node::cgroup::slices;

/// The cgroup2 mount nodeinit makes as PID 1.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// What the VM test expects in every slice: the DESIGN §3 default.
pub const WANTED: [&str; 4] = ["cpu", "memory", "io", "pids"];
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Every slice hpc-node names.
pub const ALL_SLICES: [&str; 6] = [
    slices::PACT_ROOT,
    slices::PACT_INFRA,
    slices::PACT_NETWORK,
    slices::PACT_GPU,
    slices::PACT_AUDIT,
    slices::WORKLOAD_ROOT,
];

/// Mount options nodeinit asks for when it mounts cgroup2 as PID 1 (DESIGN
/// §5); the VM's kernel supports both.
pub const MOUNT_OPTIONS: [&str; 2] = ["nsdelegate", "memory_recursiveprot"];

/// `CGROUP_ROOT` is a cgroup2 filesystem mounted with [`MOUNT_OPTIONS`].
pub fn cgroup2_mounted() -> Result<String, String> {
    let stat = nix::sys::statfs::statfs(CGROUP_ROOT)
        .map_err(|e| format!("statfs {CGROUP_ROOT} failed: {e}"))?;
    let magic = stat.filesystem_type().0 as i64;
    if magic != CGROUP2_SUPER_MAGIC {
        return Err(format!(
            "{CGROUP_ROOT} has filesystem magic {magic:#x}, not cgroup2 ({CGROUP2_SUPER_MAGIC:#x})"
        ));
    }
    let options = super_options(CGROUP_ROOT)?;
    let missing: Vec<&str> = MOUNT_OPTIONS
        .iter()
        .copied()
        .filter(|wanted| !options.split(',').any(|have| have == *wanted))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{CGROUP_ROOT} is cgroup2 mounted with {options:?}, lacking {missing:?}"
        ));
    }
    let root = read(&Path::new(CGROUP_ROOT).join("cgroup.controllers"))?;
    Ok(format!(
        "{CGROUP_ROOT} is cgroup2 ({options}), root controllers: {}",
        root.trim()
    ))
}

/// The superblock options of the mount at `mount_point` (the last field of
/// its `/proc/self/mountinfo` line).
fn super_options(mount_point: &str) -> Result<String, String> {
    let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
    mountinfo
        .lines()
        .rev() // the last mount on a path is the one visible there
        .find(|line| line.split_whitespace().nth(4) == Some(mount_point))
        .and_then(|line| line.split(" - ").nth(1))
        .and_then(|tail| tail.split_whitespace().nth(2))
        .map(str::to_owned)
        .ok_or_else(|| format!("no /proc/self/mountinfo line for {mount_point}"))
}

/// One slice has and enables every wanted controller.
pub fn slice_controllers(slice: &str) -> Result<String, String> {
    let dir = Path::new(CGROUP_ROOT).join(slice);
    let available = read(&dir.join("cgroup.controllers"))?;
    let enabled = read(&dir.join("cgroup.subtree_control"))?;
    let missing = |list: &str| -> Vec<&str> {
        WANTED
            .iter()
            .copied()
            .filter(|c| !list.split_whitespace().any(|have| have == *c))
            .collect()
    };
    let (not_available, not_enabled) = (missing(&available), missing(&enabled));
    if not_available.is_empty() && not_enabled.is_empty() {
        Ok(format!(
            "controllers [{}] subtree_control [{}]",
            available.trim(),
            enabled.trim()
        ))
    } else {
        Err(format!(
            "{}: missing from cgroup.controllers {not_available:?}, missing from cgroup.subtree_control {not_enabled:?}",
            dir.display()
        ))
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
