//! `tracing` events emitted inside a plugin `.so` reach the host's log with
//! their level, target and fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nodeinit::loader::load_plugin;
use nodeinit_plugin_api::HostServices;

use nodeinit_tests::CapturedLog as Buffer;

#[test]
fn plugin_events_reach_the_host_log_with_level_target_and_fields() {
    let built = nodeinit_tests::plugin_artifacts(&["nodeinit-null", "nodeinit-panicky"]);
    let buffer = Buffer::install();

    let null = load_plugin(&built["nodeinit-null"], None).unwrap().library;
    null.cgroup(HostServices::new("null", None), "{}").unwrap();
    let panicky = load_plugin(&built["nodeinit-panicky"], None)
        .unwrap()
        .library;
    panicky
        .cgroup(HostServices::new("panicky", None), "{}")
        .unwrap();

    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let null_line = log
        .lines()
        .find(|l| l.contains("null backend ready"))
        .unwrap_or_else(|| panic!("no null event in host log:\n{log}"));
    assert!(null_line.contains(" INFO nodeinit::plugin:"), "{null_line}");
    assert!(null_line.contains("plugin=\"null\""), "{null_line}");
    assert!(
        null_line.contains("plugin_target=\"nodeinit_null\""),
        "{null_line}"
    );
    assert!(
        null_line.contains("fields=\"backend=\\\"cgroup\\\"\""),
        "{null_line}"
    );

    let panicky_line = log
        .lines()
        .find(|l| l.contains("panicky backend constructed"))
        .unwrap_or_else(|| panic!("no panicky event in host log:\n{log}"));
    assert!(
        panicky_line.contains(" WARN nodeinit::plugin:"),
        "{panicky_line}"
    );
    assert!(
        panicky_line.contains("plugin=\"panicky\""),
        "{panicky_line}"
    );
}
