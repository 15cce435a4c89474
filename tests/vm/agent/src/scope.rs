//! A scope made by the cgroupfs reference backend, read back from the kernel.
//!
//! Owns the scope check: build the backend from its rlib exactly as the
//! plugin loader would (options as JSON, `from_plugin`), create a scope in
//! `workload.slice` with memory, cpu and io limits, read `memory.max`,
//! `cpu.weight` and `io.max` back from cgroupfs, and destroy it again.
//! Must never leave the scope behind when a read-back fails.

use std::path::Path;

use hpc_node::cgroup::slices;
use hpc_node::{CgroupManager, ResourceLimits};

/// The limits the VM test asks for.
pub const MEMORY_MAX: u64 = 256 * 1024 * 1024;
/// `cpu.weight` asked for (the kernel default is 100).
pub const CPU_WEIGHT: u16 = 250;
/// Bytes per second for both `rbps` and `wbps`.
pub const IO_BPS: u64 = 4 * 1024 * 1024;
const SCOPE_NAME: &str = "vmtest-agent";

/// `MAJ:MIN` of the VM's virtio disk (`/dev/vda`).
pub fn virtio_disk() -> Result<String, String> {
    let dev = Path::new("/sys/block/vda/dev");
    std::fs::read_to_string(dev)
        .map(|text| text.trim().to_owned())
        .map_err(|e| {
            format!(
                "cannot read {}: {e} (is virtio_blk loaded and the VM given a --disk?)",
                dev.display()
            )
        })
}

/// The cgroupfs backend, built from its rlib with `io_devices = [disk]`.
pub fn cgroupfs_backend(disk: &str) -> Result<Box<dyn CgroupManager>, String> {
    let options = serde_json::json!({ "io_devices": [disk] });
    let options = serde_json::from_value(options)
        .map_err(|e| format!("cgroupfs options {{io_devices = [{disk:?}]}} refused: {e}"))?;
    let host = nodeinit_plugin_api::HostServices::new("cgroupfs", None);
    nodeinit_cgroupfs::CgroupfsManager::from_plugin(&host, options)
        .map(|manager| Box::new(manager) as Box<dyn CgroupManager>)
        .map_err(|e| format!("cgroupfs backend refused to start: {e}"))
}

/// Creates the scope, checks the three files, destroys it.
pub fn scope_limits(manager: &dyn CgroupManager, disk: &str) -> Result<String, String> {
    let limits = ResourceLimits {
        memory_max: Some(MEMORY_MAX),
        cpu_weight: Some(CPU_WEIGHT),
        io_max: Some(IO_BPS),
    };
    let handle = manager
        .create_scope(slices::WORKLOAD_ROOT, SCOPE_NAME, &limits)
        .map_err(|e| {
            format!(
                "create_scope({}, {SCOPE_NAME}) failed: {e}",
                slices::WORKLOAD_ROOT
            )
        })?;
    let dir = Path::new(&handle.path).to_path_buf();
    let read_back = read_limits(&dir, disk);
    let destroyed = manager.destroy_scope(&handle);
    let detail = read_back?;
    destroyed.map_err(|e| format!("destroy_scope({}) failed: {e}", handle.path))?;
    if dir.exists() {
        return Err(format!(
            "{} still exists after destroy_scope returned Ok",
            dir.display()
        ));
    }
    Ok(format!("{detail}; destroyed {}", dir.display()))
}

fn read_limits(dir: &Path, disk: &str) -> Result<String, String> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .map(|text| text.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", dir.join(file).display()))
    };
    let memory_max = read("memory.max")?;
    if memory_max != MEMORY_MAX.to_string() {
        return Err(format!(
            "{}/memory.max is {memory_max:?}, expected {MEMORY_MAX}",
            dir.display()
        ));
    }
    let cpu_weight = read("cpu.weight")?;
    if cpu_weight != CPU_WEIGHT.to_string() {
        return Err(format!(
            "{}/cpu.weight is {cpu_weight:?}, expected {CPU_WEIGHT}",
            dir.display()
        ));
    }
    let io_max = read("io.max")?;
    let expected = format!("{disk} rbps={IO_BPS} wbps={IO_BPS} riops=max wiops=max");
    if !io_max.lines().any(|line| line == expected) {
        return Err(format!(
            "{}/io.max is {io_max:?}, expected a line {expected:?}",
            dir.display()
        ));
    }
    Ok(format!(
        "memory.max={memory_max} cpu.weight={cpu_weight} io.max=[{io_max}]"
    ))
}
