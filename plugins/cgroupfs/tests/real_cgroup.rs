//! cgroupfs backend against the real kernel: run as root on a host with a
//! cgroup2 mount. Each test works in its own fresh subtree (see `common`).
//! What needs controllers the host lacks (memory.max, cpu.weight, io.max
//! accepted by the kernel) is covered by the VM test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{Sleeper, TestRoot};
use hpc_node::cgroup::slices;
use hpc_node::{CgroupError, CgroupHandle, CgroupManager, ResourceLimits, SliceOwner};
use nodeinit_cgroupfs::cgroup_path::KNOWN_SLICES;
use nodeinit_cgroupfs::controller::{self, Controller};
use nodeinit_cgroupfs::events::{self, WaitOutcome};
use nodeinit_cgroupfs::{kill, CgroupfsManager, CgroupfsOptions, OwnerPolicy, SetupError};

fn no_limits() -> ResourceLimits {
    ResourceLimits::default()
}

#[test]
fn hierarchy_is_created_once_and_recreated_idempotently() {
    let root = TestRoot::new("hierarchy");
    let manager = root.manager(OwnerPolicy::Any);
    let offered = controller::available(root.path()).unwrap();

    let first = manager.create_hierarchy_report().unwrap();
    assert_eq!(
        first.created_slices,
        KNOWN_SLICES.map(|(slice, _)| slice).to_vec()
    );
    let expected_missing: Vec<Controller> = Controller::defaults()
        .into_iter()
        .filter(|c| !offered.iter().any(|o| o == c.name()))
        .collect();
    assert_eq!(first.missing, expected_missing);
    for (slice, _) in KNOWN_SLICES {
        let dir = root.path().join(slice);
        assert!(
            dir.join("cgroup.events").is_file(),
            "{slice} is not a cgroup"
        );
        let enabled = controller::enabled_for_children(&dir).unwrap();
        let wanted_enabled: Vec<&str> = first.enabled.iter().map(Controller::name).collect();
        assert_eq!(enabled, wanted_enabled, "{slice} subtree_control");
        // Never moves a process.
        assert_eq!(
            std::fs::read_to_string(dir.join("cgroup.procs")).unwrap(),
            "",
            "{slice}"
        );
    }

    let tree_before = root.tree();
    let second = manager.create_hierarchy_report().unwrap();
    assert!(
        second.created_slices.is_empty(),
        "{:?}",
        second.created_slices
    );
    assert_eq!(second.enabled, first.enabled);
    assert_eq!(second.missing, first.missing);
    assert_eq!(root.tree(), tree_before);
    manager.create_hierarchy().unwrap();
}

#[test]
fn required_controller_the_kernel_lacks_is_an_error_and_creates_nothing() {
    let root = TestRoot::new("require");
    let options = CgroupfsOptions {
        controllers: vec![Controller::new("nosuchctl").unwrap()],
        require_controllers: true,
        ..root.options(OwnerPolicy::Any)
    };
    let manager = CgroupfsManager::new(options).unwrap();
    match manager.create_hierarchy() {
        Err(CgroupError::CreationFailed { reason }) => {
            assert!(
                reason.starts_with("controllers nosuchctl are wanted but not offered in "),
                "{reason}"
            );
            assert!(reason.contains("cgroup.controllers"), "{reason}");
            assert!(reason.contains("require_controllers"), "{reason}");
        }
        other => panic!("expected CreationFailed, got {other:?}"),
    }
    assert_eq!(root.tree(), vec![""]);
}

#[test]
fn scope_with_a_live_child_is_killed_and_removed() {
    let root = TestRoot::new("destroy");
    let manager = root.manager(OwnerPolicy::Any);
    manager.create_hierarchy().unwrap();
    let handle = manager
        .create_scope(slices::WORKLOAD_ROOT, "alloc-42", &no_limits())
        .unwrap();
    let scope_dir = root.path().join("workload.slice/alloc-42.scope");
    assert_eq!(handle.path, scope_dir.display().to_string());
    assert!(manager.is_scope_empty(&handle).unwrap());
    assert_eq!(manager.read_metrics(&handle.path).unwrap().nr_processes, 0);

    let mut child = Sleeper::spawn_into(&scope_dir);
    assert!(!manager.is_scope_empty(&handle).unwrap());
    assert_eq!(manager.read_metrics(&handle.path).unwrap().nr_processes, 1);
    // pact hands root-relative paths: same cgroup.
    let relative = manager
        .read_metrics("workload.slice/alloc-42.scope")
        .unwrap();
    assert_eq!(relative.nr_processes, 1);
    assert_eq!(relative.memory_max, None);

    manager.destroy_scope(&handle).unwrap();
    assert_eq!(child.wait().signal(), Some(9), "child must die by SIGKILL");
    assert!(!scope_dir.exists(), "scope directory must be gone");
    match manager.is_scope_empty(&handle) {
        Err(CgroupError::NotFound { path }) => assert_eq!(path, handle.path),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match manager.read_metrics(&handle.path) {
        Err(CgroupError::NotFound { path }) => assert_eq!(path, handle.path),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // Idempotent.
    manager.destroy_scope(&handle).unwrap();
    let relative_handle = CgroupHandle {
        path: "workload.slice/alloc-42.scope".to_owned(),
    };
    manager.destroy_scope(&relative_handle).unwrap();
}

#[test]
fn nested_cgroups_and_several_processes_are_all_destroyed() {
    let root = TestRoot::new("nested");
    let manager = root.manager(OwnerPolicy::Any);
    manager.create_hierarchy().unwrap();
    let handle = manager
        .create_scope(slices::PACT_INFRA, "chronyd", &no_limits())
        .unwrap();
    let scope_dir = root.path().join(slices::PACT_INFRA).join("chronyd.scope");
    std::fs::create_dir(scope_dir.join("worker")).unwrap();
    let mut children = [
        Sleeper::spawn_into(&scope_dir.join("worker")),
        Sleeper::spawn_into(&scope_dir.join("worker")),
    ];
    assert_eq!(kill::subtree_pids(&scope_dir).unwrap().len(), 2);

    manager.destroy_scope(&handle).unwrap();
    for child in &mut children {
        assert_eq!(child.wait().signal(), Some(9));
    }
    assert!(!scope_dir.exists());
    assert!(
        root.path().join(slices::PACT_INFRA).is_dir(),
        "the slice itself stays"
    );
}

#[test]
fn signal_each_pid_fallback_empties_a_real_cgroup() {
    let root = TestRoot::new("fallback");
    let manager = root.manager(OwnerPolicy::Any);
    manager.create_hierarchy().unwrap();
    manager
        .create_scope(slices::WORKLOAD_ROOT, "old-kernel", &no_limits())
        .unwrap();
    let scope_dir = root.path().join("workload.slice/old-kernel.scope");
    let mut child = Sleeper::spawn_into(&scope_dir);
    assert_eq!(kill::signal_each_pid(&scope_dir).unwrap(), 1);
    assert_eq!(
        events::wait_until_empty(&scope_dir, Duration::from_secs(30)).unwrap(),
        WaitOutcome::Emptied
    );
    assert_eq!(child.wait().signal(), Some(9));
}

#[test]
fn invalid_names_and_parents_are_refused_and_create_nothing() {
    let root = TestRoot::new("invalid");
    let manager = root.manager(OwnerPolicy::Any);
    manager.create_hierarchy().unwrap();
    let tree = root.tree();
    let long = "x".repeat(129);
    let absolute_outside = "/sys/fs/cgroup-elsewhere/workload.slice".to_owned();
    let cases: [(&str, &str, &str); 14] = [
        (slices::WORKLOAD_ROOT, "..", "invalid scope name: \"..\" is a relative directory reference"),
        (slices::WORKLOAD_ROOT, ".", "invalid scope name: \".\" is a relative directory reference"),
        (slices::WORKLOAD_ROOT, "a/b", "invalid scope name: \"a/b\" contains '/'"),
        (slices::WORKLOAD_ROOT, "", "invalid scope name: \"\" is empty"),
        (slices::WORKLOAD_ROOT, "a\0b", "invalid scope name: \"a\\0b\" contains a NUL byte"),
        (slices::WORKLOAD_ROOT, &long, "invalid scope name: name of 129 bytes is longer than 128 bytes"),
        (slices::WORKLOAD_ROOT, "-x", "must start with an ASCII letter or digit"),
        ("workload.slice-extra", "a", "invalid parent slice: parent slice \"workload.slice-extra\" is not one of the known slices"),
        ("system.slice", "a", "is not one of the known slices"),
        ("", "a", "invalid parent slice: parent slice \"\" is not one of the known slices"),
        ("workload.slice/..", "a", "invalid parent slice: \"workload.slice/..\" has a component \"..\""),
        ("../workload.slice", "a", "has a component \"..\""),
        ("workload.slice//x", "a", "has a component \"\""),
        (&absolute_outside, "a", "is outside the cgroup root"),
    ];
    for (parent, name, why) in cases {
        match manager.create_scope(parent, name, &no_limits()) {
            Err(CgroupError::CreationFailed { reason }) => {
                assert!(reason.contains(why), "{parent:?}/{name:?}: {reason}");
            }
            other => panic!("{parent:?}/{name:?}: expected CreationFailed, got {other:?}"),
        }
    }
    // Limits are validated before mkdir too.
    let bad_weight = ResourceLimits {
        cpu_weight: Some(0),
        ..no_limits()
    };
    match manager.create_scope(slices::WORKLOAD_ROOT, "weightless", &bad_weight) {
        Err(CgroupError::CreationFailed { reason }) => {
            assert!(
                reason.contains("cpu_weight 0 is out of range: cpu.weight takes 1–10000"),
                "{reason}"
            )
        }
        other => panic!("expected CreationFailed, got {other:?}"),
    }
    assert_eq!(root.tree(), tree);

    // Handles that are not scopes are refused by destroy_scope, and nothing is touched.
    for slice in ["", slices::PACT_ROOT, slices::WORKLOAD_ROOT, "../x", "/etc"] {
        match manager.destroy_scope(&CgroupHandle {
            path: slice.to_owned(),
        }) {
            Err(CgroupError::Io(err)) => assert_eq!(
                err.kind(),
                std::io::ErrorKind::InvalidInput,
                "{slice:?}: {err}"
            ),
            other => panic!("{slice:?}: expected Io(InvalidInput), got {other:?}"),
        }
    }
    assert_eq!(root.tree(), tree);
}

#[test]
fn missing_parent_is_explained() {
    let root = TestRoot::new("noparent");
    let manager = root.manager(OwnerPolicy::Any);
    match manager.create_scope(slices::PACT_GPU, "nv-hostengine", &no_limits()) {
        Err(CgroupError::CreationFailed { reason }) => {
            assert!(reason.contains("parent slice"), "{reason}");
            assert!(
                reason.contains("does not exist; run create_hierarchy first"),
                "{reason}"
            );
        }
        other => panic!("expected CreationFailed, got {other:?}"),
    }
    assert_eq!(root.tree(), vec![""]);
}

#[test]
fn existing_scope_is_not_reused_nor_removed() {
    let root = TestRoot::new("exists");
    let manager = root.manager(OwnerPolicy::Any);
    manager.create_hierarchy().unwrap();
    manager
        .create_scope(slices::WORKLOAD_ROOT, "twice", &no_limits())
        .unwrap();
    match manager.create_scope(slices::WORKLOAD_ROOT, "twice", &no_limits()) {
        Err(CgroupError::CreationFailed { reason }) => {
            assert!(reason.contains("already exists"), "{reason}")
        }
        other => panic!("expected CreationFailed, got {other:?}"),
    }
    assert!(
        root.path().join("workload.slice/twice.scope").is_dir(),
        "the first scope must survive"
    );
}

#[test]
fn ownership_is_enforced_both_ways() {
    let root = TestRoot::new("owner");
    let any = root.manager(OwnerPolicy::Any);
    any.create_hierarchy().unwrap();
    let workload_scope = any
        .create_scope(slices::WORKLOAD_ROOT, "job-1", &no_limits())
        .unwrap();
    let tree = root.tree();

    let pact = root.manager(OwnerPolicy::Pact);
    match pact.create_scope(slices::WORKLOAD_ROOT, "intruder", &no_limits()) {
        Err(CgroupError::PermissionDenied { path, owner }) => {
            assert_eq!(path, "workload.slice");
            assert_eq!(owner, SliceOwner::Workload);
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    match pact.destroy_scope(&workload_scope) {
        Err(CgroupError::PermissionDenied { path, owner }) => {
            assert_eq!(path, "workload.slice/job-1.scope");
            assert_eq!(owner, SliceOwner::Workload);
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert_eq!(root.tree(), tree, "a denied call must change nothing");
    pact.create_scope(slices::PACT_AUDIT, "auditd", &no_limits())
        .unwrap();

    let workload = root.manager(OwnerPolicy::Workload);
    match workload.create_scope(slices::PACT_GPU, "x", &no_limits()) {
        Err(CgroupError::PermissionDenied { path, owner }) => {
            assert_eq!(path, "pact.slice/gpu.slice");
            assert_eq!(owner, SliceOwner::Pact);
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    // RI6: reading is allowed everywhere.
    assert_eq!(
        workload
            .read_metrics("pact.slice/audit.slice/auditd.scope")
            .unwrap()
            .nr_processes,
        0
    );
    workload.destroy_scope(&workload_scope).unwrap();
}

/// Limits need controllers: on a host whose cgroup2 lacks one, the write is
/// refused and the scope rolled back; where it has it, the value lands. The
/// kernel-accepted forms on a full v2 kernel are asserted by the VM test.
#[test]
fn memory_limit_is_written_or_rolled_back_according_to_the_kernel() {
    let root = TestRoot::new("limits");
    let manager = root.manager(OwnerPolicy::Any);
    manager.create_hierarchy().unwrap();
    let slice_dir = root.path().join(slices::WORKLOAD_ROOT);
    let has_memory = controller::available(&slice_dir)
        .unwrap()
        .iter()
        .any(|c| c == "memory");
    let limits = ResourceLimits {
        memory_max: Some(64 << 20),
        ..no_limits()
    };
    let result = manager.create_scope(slices::WORKLOAD_ROOT, "capped", &limits);
    let scope_dir = slice_dir.join("capped.scope");
    if has_memory {
        let handle = result.unwrap();
        assert_eq!(
            std::fs::read_to_string(scope_dir.join("memory.max")).unwrap(),
            "67108864\n"
        );
        assert_eq!(
            manager.read_metrics(&handle.path).unwrap().memory_max,
            Some(67_108_864)
        );
    } else {
        match result {
            Err(CgroupError::CreationFailed { reason }) => {
                assert!(reason.contains("removed again"), "{reason}");
                assert!(reason.contains("memory.max"), "{reason}");
                assert!(
                    reason.contains("the memory controller is not enabled for this scope"),
                    "{reason}"
                );
            }
            other => panic!("expected CreationFailed, got {other:?}"),
        }
        assert!(!scope_dir.exists(), "rollback must remove the scope");
    }
}

#[test]
fn metrics_of_the_root_and_paths_outside_it() {
    let root = TestRoot::new("metrics");
    let manager = root.manager(OwnerPolicy::Any);
    let metrics = manager
        .read_metrics(&root.path().display().to_string())
        .unwrap();
    assert_eq!(metrics.nr_processes, 0);
    match manager.read_metrics("/etc") {
        Err(CgroupError::Io(err)) => {
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
            assert!(
                err.to_string().contains("is outside the cgroup root"),
                "{err}"
            );
        }
        other => panic!("expected Io(InvalidInput), got {other:?}"),
    }
    match manager.read_metrics("workload.slice") {
        Err(CgroupError::NotFound { path }) => assert!(path.ends_with("/workload.slice"), "{path}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn a_non_cgroup2_root_is_refused_naming_the_v2_mount() {
    let v2 = common::cgroup2_mount();
    // /sys/fs/cgroup on a hybrid host is tmpfs; on a pure v2 host it is the mount itself.
    let options = CgroupfsOptions {
        root: "/sys/fs/cgroup".into(),
        io_devices: Some(Vec::new()),
        ..CgroupfsOptions::default()
    };
    let result = CgroupfsManager::new(options);
    if v2 == std::path::Path::new("/sys/fs/cgroup") {
        assert_eq!(result.unwrap().root(), v2);
    } else {
        match result {
            Err(SetupError::Root(reason)) => {
                assert!(
                    reason.contains("/sys/fs/cgroup is not a cgroup v2 filesystem"),
                    "{reason}"
                );
                assert!(
                    reason.contains(&format!("the cgroup2 mount is {}", v2.display())),
                    "{reason}"
                );
            }
            other => panic!("expected SetupError::Root, got {other:?}"),
        }
    }
    let zero = CgroupfsOptions {
        root: v2,
        kill_timeout_ms: 0,
        io_devices: Some(Vec::new()),
        ..CgroupfsOptions::default()
    };
    match CgroupfsManager::new(zero) {
        Err(
            err @ SetupError::Invalid {
                key: "kill_timeout_ms",
                ..
            },
        ) => {
            assert!(
                err.to_string()
                    .starts_with("option `kill_timeout_ms`: 0 would give"),
                "{err}"
            )
        }
        other => panic!("expected Invalid kill_timeout_ms, got {other:?}"),
    }
}

#[test]
fn io_devices_default_to_the_whole_disks_of_sys_block() {
    let root = TestRoot::new("iodev");
    let options = CgroupfsOptions {
        io_devices: None,
        ..root.options(OwnerPolicy::Any)
    };
    let manager = CgroupfsManager::new(options).unwrap();
    let expected =
        nodeinit_cgroupfs::io_device::detect(std::path::Path::new("/sys/block")).unwrap();
    assert_eq!(manager.io_devices(), expected.as_slice());
    for entry in std::fs::read_dir("/sys/block").unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let dev = std::fs::read_to_string(format!("/sys/block/{name}/dev")).unwrap();
        let device = nodeinit_cgroupfs::io_device::IoDevice::parse(&dev).unwrap();
        let virtual_device = ["loop", "ram", "zram"]
            .iter()
            .any(|prefix| name.starts_with(prefix));
        assert_eq!(
            manager.io_devices().contains(&device),
            !virtual_device,
            "{name} ({device})"
        );
    }
}

#[test]
fn wait_until_empty_wakes_when_the_last_process_exits() {
    let root = TestRoot::new("wake");
    let manager = root.manager(OwnerPolicy::Any);
    manager.create_hierarchy().unwrap();
    manager
        .create_scope(slices::WORKLOAD_ROOT, "waiting", &no_limits())
        .unwrap();
    let scope_dir = root.path().join("workload.slice/waiting.scope");
    let mut child = Sleeper::spawn_into(&scope_dir);
    let (armed_tx, armed_rx) = std::sync::mpsc::channel();
    let waiter = {
        let scope_dir = scope_dir.clone();
        std::thread::spawn(move || {
            armed_tx.send(()).unwrap();
            // Ten minutes: only the kernel's notification can end this in time for the test.
            events::wait_until_empty(&scope_dir, Duration::from_secs(600))
        })
    };
    armed_rx.recv().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), WaitOutcome::Emptied);
    assert_eq!(child.wait().signal(), Some(9));
}
