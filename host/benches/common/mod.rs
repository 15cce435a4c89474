//! What the host's boot benchmarks share: the sandbox boot they time (four
//! reference `.so` plugins, exec of a no-op agent that prints the time) and
//! the median they report.
#![allow(dead_code)]

/// The config of the timed boot (`plugin_dir` added by the bench).
pub const CONFIG: &str = r#"
[host]
on_failure = "poweroff"
node_id = "bench-node"
[plugins.cgroup]
path = "cgroupfs"
[plugins.mount]
path = "squashfs"
[plugins.namespace]
path = "unshare"
[plugins.readiness]
path = "readiness"
[handoff]
agent = "command"
exec = "/bin/date"
args = ["+%s%N"]
mode = "exec"
"#;

/// The median of `v` (not empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
