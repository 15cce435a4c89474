//! Fixtures shared by the workspace-level tests and benchmarks.
//!
//! Owns building plugin `.so` files on demand, so that no test depends on an
//! earlier build: [`plugin_artifacts`] runs `cargo build` for the named
//! packages and returns where each cdylib landed. Never used at run time by
//! nodeinit itself.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Build profile of the plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `dev` (tests).
    Debug,
    /// `release` (benchmarks: compare like with like).
    Release,
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// Builds `packages` (cdylib plugin crates of this workspace, or any crate
/// given by `--manifest-path` in `extra_args`) and returns package name →
/// path of its `.so`.
///
/// # Errors
///
/// The build failed (its output is in the message) or a package produced no `.so`.
pub fn build_cdylibs(
    packages: &[&str],
    profile: Profile,
    extra_args: &[&str],
) -> Result<BTreeMap<String, PathBuf>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--message-format=json-render-diagnostics"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    // Never the invoking `cargo test`'s own target dir: a nested build with
    // another feature resolution rewrites its artifacts under it (seen as a
    // doctest linking two copies of a dependency).
    if !extra_args.contains(&"--target-dir") {
        cmd.arg("--target-dir").arg(fixture_target_dir());
    }
    cmd.args(extra_args);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build {packages:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build of {packages:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(name) = msg["package_id"].as_str().and_then(package_name) else {
            continue;
        };
        // Dependencies (proc-macro .so files among them) are not asked for.
        if !packages.contains(&name.as_str()) {
            continue;
        }
        let files = msg["filenames"].as_array().cloned().unwrap_or_default();
        for f in files.iter().filter_map(|f| f.as_str()) {
            if f.ends_with(".so") {
                found.insert(name.clone(), PathBuf::from(f));
            }
        }
    }
    for p in packages {
        if !found.contains_key(*p) {
            return Err(format!(
                "cargo build produced no .so for package {p} (is it a cdylib?)"
            ));
        }
    }
    Ok(found)
}

/// The cdylib `file_name` (`libnodeinit_x.so`) that cargo built together
/// with the crate under test, in this same invocation: beside the test or
/// bench binary (`target/<profile>/deps`) or one level up.
///
/// # Panics
///
/// When it is in neither place, saying so (a test must not pass without it).
pub fn cdylib_beside_test_binary(file_name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let deps = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let candidates = [deps.join(file_name), deps.join("..").join(file_name)];
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => p.clone(),
        None => panic!(
            "CANNOT RUN: {file_name} not found at {} or {}; cargo builds it with the crate (crate-type cdylib)",
            candidates[0].display(),
            candidates[1].display()
        ),
    }
}

/// Where fixture builds go (`target/fixtures`).
pub fn fixture_target_dir() -> PathBuf {
    workspace_root().join("target").join("fixtures")
}

/// The package name in a cargo package id
/// (`path+file:///w/null#nodeinit-null@0.1.0`, or `path+file:///w/null#0.1.0`
/// when the directory is named like the package).
fn package_name(id: &str) -> Option<String> {
    let (url, fragment) = id.split_once('#')?;
    match fragment.split_once('@') {
        Some((name, _)) => Some(name.to_owned()),
        None => url.rsplit('/').next().map(str::to_owned),
    }
}

/// [`build_cdylibs`] for workspace packages in the debug profile, panicking
/// with cargo's output on failure (for tests).
pub fn plugin_artifacts(packages: &[&str]) -> BTreeMap<String, PathBuf> {
    match build_cdylibs(packages, Profile::Debug, &[]) {
        Ok(map) => map,
        Err(e) => panic!("{e}"),
    }
}

/// The four reference plugin packages.
pub const REFERENCE_PLUGINS: [&str; 4] = [
    "nodeinit-cgroupfs",
    "nodeinit-squashfs",
    "nodeinit-unshare",
    "nodeinit-readiness",
];

/// Builds the four reference plugins and returns the directory holding them.
///
/// # Panics
///
/// When the build fails (with cargo's output).
pub fn reference_plugin_dir(profile: Profile) -> PathBuf {
    let built = build_cdylibs(&REFERENCE_PLUGINS, profile, &[]).unwrap_or_else(|e| panic!("{e}"));
    built[REFERENCE_PLUGINS[0]]
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `config` (a nodeinit TOML text with a `[host]` table) with
/// `plugin_dir = dir` added to that table.
pub fn with_plugin_dir(config: &str, dir: &Path) -> String {
    config.replacen(
        "[host]\n",
        &format!("[host]\nplugin_dir = {:?}\n", dir.display().to_string()),
        1,
    )
}

/// Polls `done` every 5 ms until it holds: how a test waits for another
/// process (or thread) to act, instead of sleeping a guessed time.
///
/// # Panics
///
/// After 20 s, naming `what` it waited for.
///
/// ```
/// let mut n = 0;
/// nodeinit_tests::wait_until("the third poll", || {
///     n += 1;
///     n == 3
/// });
/// ```
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    wait_for(what, || if done() { Ok(()) } else { Err(String::new()) });
}

/// Polls `check` every 5 ms until it returns `Ok`; panics after 20 s,
/// naming `what` it waited for and the last `Err` it saw.
///
/// ```
/// let mut n = 0;
/// nodeinit_tests::wait_for("the count reaches 3", || {
///     n += 1;
///     if n == 3 { Ok(()) } else { Err(format!("count {n}")) }
/// });
/// ```
pub fn wait_for(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let last = match check() {
            Ok(()) => return,
            Err(last) => last,
        };
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}{}{last}",
            if last.is_empty() { "" } else { ": " }
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Runs `script` with `sh -c` in a child that joined `fds` first (setns
/// before exec; a PID namespace applies to the script's children). Returns
/// stdout.
///
/// # Panics
///
/// With the script's stderr when it fails.
pub fn run_in_namespaces(fds: &[OwnedFd], script: &str) -> String {
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    // SAFETY: setns(2) is async-signal-safe; the closure touches only the
    // captured integers.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &raw {
                if libc::setns(*fd, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run sh in the namespaces: {e}"),
    };
    assert!(
        out.status.success(),
        "script in namespaces failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `Write` sink a test hands to a `tracing` subscriber (as its writer)
/// and then reads back: what reached "the console", byte for byte.
///
/// ```
/// use std::io::Write;
/// let mut log = nodeinit_tests::CapturedLog::default();
/// log.write_all(b"nodeinit: boot OK\n").unwrap();
/// assert_eq!(log.text(), "nodeinit: boot OK\n");
/// ```
#[derive(Clone, Default)]
pub struct CapturedLog(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLog {
    /// A log of every `tracing` event of this process from now on, at INFO
    /// and above, without colours: it installs the global subscriber, so
    /// once per test binary (one test function to a file).
    ///
    /// # Panics
    ///
    /// When a global subscriber is installed already.
    pub fn install() -> Self {
        let log = Self::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        log
    }

    /// Everything written so far, lossily as UTF-8.
    pub fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `SOCK_SEQPACKET` connection to the handoff socket at `path`; a receive
/// waits at most `reply_timeout` (a stalled server shows as a missing
/// reply, not as a hung test).
///
/// # Panics
///
/// When the socket cannot be made or connected.
pub fn connect_seqpacket(path: &Path, reply_timeout: std::time::Duration) -> OwnedFd {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap_or_else(|e| panic!("socket: {e}"));
    let address = UnixAddr::new(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    connect(fd.as_raw_fd(), &address).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    let timeout = nix::sys::time::TimeVal::new(
        i64::try_from(reply_timeout.as_secs()).unwrap_or(i64::MAX),
        0,
    );
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)
        .unwrap_or_else(|e| panic!("SO_RCVTIMEO: {e}"));
    fd
}
