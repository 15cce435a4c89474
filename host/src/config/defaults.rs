//! Default values, and the built-in config used when no file exists.

/// Where the config is read from unless `--config` or `nodeinit.config=` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/nodeinit/nodeinit.toml";

/// Where bare plugin names are resolved (`<dir>/libnodeinit_<name>.so`).
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/nodeinit/plugins";

/// Seconds a supervised agent gets between SIGTERM and SIGKILL at shutdown.
pub const DEFAULT_GRACE_SECS: u64 = 10;

/// Seconds a plugin call may take unless `[host].phase_timeout_secs` or the
/// plugin's `timeout_secs` says otherwise.
pub const DEFAULT_PHASE_TIMEOUT_SECS: u64 = 60;

/// The config of a plain node, used when no config file exists: the four
/// reference backends (cgroup and readiness required, mount and namespace
/// optional), no boot mounts and no agent — nodeinit stays PID 1, serves the
/// sockets, reaps, and waits for a shutdown signal. Parsed by the same code
/// as a file, so it is validated by the tests.
pub const BUILTIN_CONFIG: &str = r#"# nodeinit built-in default (no config file found)
[host]
plugin_dir = "/usr/lib/nodeinit/plugins"
on_failure = "shell"

[plugins.cgroup]
path = "cgroupfs"
required = true

[plugins.mount]
path = "squashfs"
required = false

[plugins.namespace]
path = "unshare"
required = false

[plugins.readiness]
path = "readiness"
required = true
"#;
