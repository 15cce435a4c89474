//! One round-trip test per `hpc_node` error variant: every field survives.

use std::io;

use super::*;

fn io_custom() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "cgroup.procs: write refused",
    )
}

fn assert_io_same(a: &io::Error, b: &io::Error) {
    assert_eq!(a.kind(), b.kind());
    assert_eq!(a.raw_os_error(), b.raw_os_error());
    assert_eq!(a.to_string(), b.to_string());
}

fn cgroup_rt(e: CgroupError) -> CgroupError {
    CgroupError::from(PluginError::from(&e))
}

#[test]
fn cgroup_creation_failed() {
    let back = cgroup_rt(CgroupError::CreationFailed {
        reason: "no space".into(),
    });
    assert!(matches!(back, CgroupError::CreationFailed { reason } if reason == "no space"));
}

#[test]
fn cgroup_kill_failed() {
    let back = cgroup_rt(CgroupError::KillFailed {
        path: "/sys/fs/cgroup/a.scope".into(),
        reason: "pid 7 in D state".into(),
    });
    assert!(matches!(back, CgroupError::KillFailed { path, reason }
        if path == "/sys/fs/cgroup/a.scope" && reason == "pid 7 in D state"));
}

#[test]
fn cgroup_not_found() {
    let back = cgroup_rt(CgroupError::NotFound {
        path: "x.scope".into(),
    });
    assert!(matches!(back, CgroupError::NotFound { path } if path == "x.scope"));
}

#[test]
fn cgroup_permission_denied_both_owners() {
    for owner in [SliceOwner::Pact, SliceOwner::Workload] {
        let back = cgroup_rt(CgroupError::PermissionDenied {
            path: "workload.slice".into(),
            owner,
        });
        assert!(
            matches!(back, CgroupError::PermissionDenied { path, owner: o }
            if path == "workload.slice" && o == owner)
        );
    }
}

#[test]
fn cgroup_io_os_error_keeps_code() {
    let orig = io::Error::from_raw_os_error(libc_ebusy());
    let back = cgroup_rt(CgroupError::Io(io::Error::from_raw_os_error(libc_ebusy())));
    let CgroupError::Io(io) = back else {
        panic!("not Io: {back:?}")
    };
    assert_io_same(&orig, &io);
}

#[test]
fn cgroup_io_custom_keeps_kind_and_message() {
    let back = cgroup_rt(CgroupError::Io(io_custom()));
    let CgroupError::Io(io) = back else {
        panic!("not Io: {back:?}")
    };
    assert_io_same(&io_custom(), &io);
}

fn mount_rt(e: MountError) -> MountError {
    MountError::from(PluginError::from(&e))
}

#[test]
fn mount_failed() {
    let back = mount_rt(MountError::MountFailed {
        image_path: "/i/a.sqfs".into(),
        reason: "bad magic".into(),
    });
    assert!(
        matches!(back, MountError::MountFailed { image_path, reason }
        if image_path == "/i/a.sqfs" && reason == "bad magic")
    );
}

#[test]
fn mount_unmount_failed() {
    let back = mount_rt(MountError::UnmountFailed {
        mount_point: "/run/pact/uenv/a".into(),
        reason: "EBUSY".into(),
    });
    assert!(
        matches!(back, MountError::UnmountFailed { mount_point, reason }
        if mount_point == "/run/pact/uenv/a" && reason == "EBUSY")
    );
}

#[test]
fn mount_refcount_inconsistency() {
    let back = mount_rt(MountError::RefcountInconsistency {
        image_path: "/i/a.sqfs".into(),
        detail: "release at 0".into(),
    });
    assert!(
        matches!(back, MountError::RefcountInconsistency { image_path, detail }
        if image_path == "/i/a.sqfs" && detail == "release at 0")
    );
}

#[test]
fn mount_io() {
    let back = mount_rt(MountError::Io(io::Error::from_raw_os_error(2)));
    let MountError::Io(io) = back else {
        panic!("not Io: {back:?}")
    };
    assert_io_same(&io::Error::from_raw_os_error(2), &io);
}

fn ns_rt(e: NamespaceError) -> NamespaceError {
    NamespaceError::from(PluginError::from(&e))
}

#[test]
fn namespace_socket_unavailable() {
    let back = ns_rt(NamespaceError::SocketUnavailable {
        reason: "ECONNREFUSED".into(),
    });
    assert!(
        matches!(back, NamespaceError::SocketUnavailable { reason } if reason == "ECONNREFUSED")
    );
}

#[test]
fn namespace_creation_failed() {
    let back = ns_rt(NamespaceError::CreationFailed {
        reason: "clone: EPERM".into(),
    });
    assert!(matches!(back, NamespaceError::CreationFailed { reason } if reason == "clone: EPERM"));
}

#[test]
fn namespace_allocation_not_found() {
    let back = ns_rt(NamespaceError::AllocationNotFound {
        allocation_id: "job-9".into(),
    });
    assert!(
        matches!(back, NamespaceError::AllocationNotFound { allocation_id } if allocation_id == "job-9")
    );
}

#[test]
fn namespace_fd_passing() {
    let back = ns_rt(NamespaceError::FdPassing(io_custom()));
    let NamespaceError::FdPassing(io) = back else {
        panic!("not FdPassing: {back:?}")
    };
    assert_io_same(&io_custom(), &io);
}

#[test]
fn readiness_boot_failed() {
    let e = ReadinessError::BootFailed {
        reason: "cgroup phase".into(),
    };
    let back = ReadinessError::from(PluginError::from(&e));
    assert!(matches!(back, ReadinessError::BootFailed { reason } if reason == "cgroup phase"));
}

#[test]
fn readiness_timeout() {
    let back = ReadinessError::from(PluginError::from(&ReadinessError::Timeout));
    assert!(matches!(back, ReadinessError::Timeout));
}

#[test]
fn panic_survives_as_fault_and_back() {
    let crossing = PluginError::new(ErrorKind::PANICKED, "create_scope: boom");
    let CgroupError::Io(io) = CgroupError::from(crossing.clone()) else {
        panic!("not Io")
    };
    let fault = PluginFault::find(&io).expect("fault inside");
    assert_eq!(fault.kind, ErrorKind::PANICKED);
    assert_eq!(io.to_string(), "plugin panicked: create_scope: boom");
    // And a fault crossing again keeps its kind.
    let again = PluginError::from(CgroupError::Io(io));
    assert_eq!(again.kind, ErrorKind::PANICKED);
    assert_eq!(again.message.as_str(), "create_scope: boom");
}

#[test]
fn unknown_kind_from_newer_plugin_is_a_fault_not_a_panic() {
    let crossing = PluginError::new(ErrorKind(4242), "something new");
    let MountError::Io(io) = MountError::from(crossing.clone()) else {
        panic!("not Io")
    };
    assert_eq!(io.to_string(), "plugin error 4242 (unknown): something new");
    let r = ReadinessError::from(crossing);
    assert!(
        matches!(r, ReadinessError::BootFailed { reason } if reason == "plugin error 4242 (unknown): something new")
    );
}

fn libc_ebusy() -> i32 {
    16
}
