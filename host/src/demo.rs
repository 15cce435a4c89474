//! The sandbox's demo: what `nodeinit --sandbox` boots with when no config
//! is given — the config in `config/sandbox.toml`, a small uenv image, and a
//! demo agent (`nodeinit demo-agent`) that requests namespaces over the
//! handoff socket and prints what it received.
//!
//! Runs only inside the sandbox (everything it writes is under the
//! sandbox's private `/run`).

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use hpc_node::{NamespaceRequest, NamespaceType};
use nodeinit_handoff::client::ClientConfig;
use nodeinit_handoff::HandoffClient;

/// The sandbox config, built in.
pub const SANDBOX_CONFIG: &str = include_str!("../../config/sandbox.toml");
/// Where the demo lives inside the sandbox.
pub const DEMO_DIR: &str = "/run/nodeinit/demo";
/// The demo image's name.
pub const DEMO_IMAGE: &str = "demo.sqfs";
/// The file inside the demo image.
pub const DEMO_FILE: &str = "hello.txt";
/// Its content.
pub const DEMO_TEXT: &str = "hello from the nodeinit demo uenv\n";

/// Without `--config`: writes the built-in sandbox config and makes the
/// demo (image and agent link). With `--config`: makes the demo only if that
/// config refers to it (`/run/nodeinit/demo`). Returns the config to boot with.
///
/// # Errors
///
/// What could not be made, and what to install or fix.
pub fn prepare(config: Option<PathBuf>) -> Result<PathBuf, String> {
    match config {
        None => {
            make_demo()?;
            let path = Path::new(DEMO_DIR).join("sandbox.toml");
            std::fs::write(&path, SANDBOX_CONFIG)
                .map_err(|e| format!("write {}: {e}", path.display()))?;
            Ok(path)
        }
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
            if text.contains(DEMO_DIR) {
                make_demo()?;
            }
            Ok(path)
        }
    }
}

fn make_demo() -> Result<(), String> {
    let dir = Path::new(DEMO_DIR);
    let images = dir.join("images");
    std::fs::create_dir_all(&images).map_err(|e| format!("create {}: {e}", images.display()))?;
    write_demo_image(&images.join(DEMO_IMAGE))?;
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the nodeinit binary: {e}"))?;
    let agent = dir.join("demo-agent");
    let _ = std::fs::remove_file(&agent);
    std::os::unix::fs::symlink(&exe, &agent).map_err(|e| format!("link demo agent: {e}"))
}

/// Writes the demo uenv image to `path`: a gzip squashfs 4.0 image holding
/// [`DEMO_FILE`] (mode 0644) with [`DEMO_TEXT`], everything owned by root and
/// dated 1970, so the same build writes the same bytes.
///
/// Made in pure Rust (`backhand`) so that the sandbox needs nothing but
/// `cargo` — no squashfs-tools. gzip because every kernel with squashfs
/// has `CONFIG_SQUASHFS_ZLIB`; the image is written next to `path` and
/// renamed over it, so a reader never sees half an image.
///
/// # Errors
///
/// What could not be built or written, naming the file.
pub fn write_demo_image(path: &Path) -> Result<(), String> {
    use backhand::compression::Compressor;
    use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

    let what = |e: &dyn std::fmt::Display| format!("build demo image {}: {e}", path.display());
    let mut fs = FilesystemWriter::default();
    fs.set_compressor(FilesystemCompressor::new(Compressor::Gzip, None).map_err(|e| what(&e))?);
    fs.set_time(0);
    fs.set_only_root_id();
    fs.set_root_mode(0o755);
    let file = NodeHeader::new(0o644, 0, 0, 0);
    fs.push_file(std::io::Cursor::new(DEMO_TEXT.as_bytes()), DEMO_FILE, file)
        .map_err(|e| what(&e))?;
    let tmp = path.with_extension("sqfs.tmp");
    let written = std::fs::File::create(&tmp)
        .map_err(|e| format!("create demo image {}: {e}", tmp.display()))
        .and_then(|file| {
            let mut out = std::io::BufWriter::new(file);
            fs.write(&mut out).map_err(|e| what(&e))?;
            let file = out
                .into_inner()
                .map_err(|e| format!("write demo image {}: {}", tmp.display(), e.error()))?;
            file.sync_all()
                .map_err(|e| format!("sync demo image {}: {e}", tmp.display()))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .map_err(|e| format!("rename {} to {}: {e}", tmp.display(), path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `nodeinit demo-agent`: request Pid+Net+Mount with the demo uenv, show
/// the FDs and the uenv file as seen inside the mount namespace, end the
/// allocation. Returns the exit code.
pub fn run() -> i32 {
    let client = HandoffClient::new(ClientConfig {
        fallback: false,
        ..ClientConfig::default()
    });
    let request = NamespaceRequest {
        allocation_id: "demo-1".to_owned(),
        namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
        uenv_image: Some(DEMO_IMAGE.to_owned()),
    };
    let granted = match client.request(&request) {
        Ok(g) => g,
        Err(e) => {
            println!("demo-agent: namespace request failed: {e}");
            return 1;
        }
    };
    println!(
        "demo-agent: granted {} namespaces for {} ({:?})",
        granted.fds.len(),
        granted.response.allocation_id,
        granted.source
    );
    for (kind, fd) in granted.response.fd_types.iter().zip(&granted.fds) {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_or_else(|e| format!("? ({e})"), |p| p.display().to_string());
        println!("demo-agent:   {kind:?} fd {} -> {link}", fd.as_raw_fd());
    }
    let uenv = granted.response.uenv_mount_path.clone().unwrap_or_default();
    println!("demo-agent: uenv at {uenv}");
    let seen = match granted.fd(NamespaceType::Mount) {
        Some(mnt) => read_inside(mnt.as_fd(), &Path::new(&uenv).join(DEMO_FILE)),
        None => Err("no mount namespace granted".to_owned()),
    };
    let code = match seen {
        Ok(text) if text == DEMO_TEXT => {
            println!(
                "demo-agent: read {uenv}/{DEMO_FILE} inside the namespace: {:?}",
                text.trim_end()
            );
            0
        }
        Ok(text) => {
            println!("demo-agent: unexpected content {text:?}");
            1
        }
        Err(e) => {
            println!("demo-agent: {e}");
            1
        }
    };
    match client.release(granted) {
        Ok(()) => println!("demo-agent: allocation demo-1 ended"),
        Err(e) => {
            println!("demo-agent: release failed: {e}");
            return 1;
        }
    }
    code
}

/// `nodeinit demo-agent --restart-check`: what a supervise-mode worker
/// restart must keep. Requests `demo-1`, kills the worker with SIGSEGV,
/// waits until it is gone, requests `demo-1` again while the keeper
/// restarts the worker (the request waits in the socket's backlog), and
/// checks the answer names the same namespaces, the uenv is still readable
/// through the old FDs, and the mount references are unchanged. Returns the
/// exit code.
pub fn run_restart_check() -> i32 {
    match restart_check() {
        Ok(()) => {
            println!("demo-agent: restart check passed");
            0
        }
        Err(e) => {
            println!("demo-agent: restart check FAILED: {e}");
            1
        }
    }
}

fn ns_links(granted: &nodeinit_handoff::GrantedNamespaces) -> Vec<String> {
    granted
        .fds
        .iter()
        .map(|fd| {
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map_or_else(|e| format!("? ({e})"), |p| p.display().to_string())
        })
        .collect()
}

/// The pid of the running worker: its name (`comm`) is `nodeinit-worker`
/// (forked or re-executed alike; its command line may be the keeper's) and
/// it is in our PID namespace (a namespace holder is PID 1 of its own).
fn worker_pid() -> Option<i32> {
    let own_ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read(e.path().join("comm")).ok()?;
        let is_worker = comm.strip_suffix(b"\n") == Some(crate::worker::WORKER_COMM.to_bytes());
        let same_ns = std::fs::read_link(e.path().join("ns/pid")).ok()? == own_ns;
        (is_worker && same_ns).then_some(pid)
    })
}

/// Block until process `pid` has exited (its pidfd turns readable).
fn wait_gone(pid: i32) -> Result<(), String> {
    let Ok(fd) = nodeinit_sys::pidfd::open(pid) else {
        return Ok(()); // already gone
    };
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16))
        .map_err(|e| format!("poll on the worker's pidfd: {e}"))?;
    Ok(())
}

fn mount_state() -> String {
    std::fs::read_to_string("/run/nodeinit/squashfs-mounts.json").unwrap_or_default()
}

/// `nodeinit demo-agent --restart-bench N`: with `demo-1` live (its uenv
/// image mounted), kill the worker N times with SIGSEGV and time, each
/// time, SIGSEGV → the same request answered by the next worker. Prints one
/// `restart-bench: <ms>` line per restart (the keeper's backoff included;
/// the keeper logs `restart_ms`, its own part). Returns the exit code.
pub fn run_restart_bench(times: u32) -> i32 {
    let client = HandoffClient::new(ClientConfig {
        fallback: false,
        ..ClientConfig::default()
    });
    let request = NamespaceRequest {
        allocation_id: "demo-1".to_owned(),
        namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
        uenv_image: Some(DEMO_IMAGE.to_owned()),
    };
    let Ok(granted) = client.request(&request) else {
        println!("restart-bench: first request failed");
        return 1;
    };
    for restarts in 0..times {
        // A new worker answers the queued request before its own resume is
        // done (readiness is re-signalled after the server is up): a kill
        // then is a failed restart, not the restart this bench times. Wait
        // until the keeper counts it serving (outside the timed span).
        match status_when(|s| s.restarts >= restarts && s.pid.is_some()) {
            Ok(s) if s.restarts >= restarts && s.pid.is_some() => {}
            Ok(s) => {
                println!("restart-bench: no serving worker after restart {restarts}: {s:?}");
                return 1;
            }
            Err(e) => {
                println!("restart-bench: {e}");
                return 1;
            }
        }
        let Some(worker) = worker_pid() else {
            println!("restart-bench: no worker");
            return 1;
        };
        let begun = std::time::Instant::now();
        if nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(worker),
            nix::sys::signal::Signal::SIGSEGV,
        )
        .is_err()
            || wait_gone(worker).is_err()
        {
            println!("restart-bench: cannot kill worker {worker}");
            return 1;
        }
        match client.request(&request) {
            Ok(again) => drop(again),
            Err(e) => {
                println!("restart-bench: request after the restart: {e}");
                return 1;
            }
        }
        println!("restart-bench: {:.3}", begun.elapsed().as_secs_f64() * 1e3);
    }
    let _ = client.release(granted);
    0
}

fn restart_check() -> Result<(), String> {
    let client = HandoffClient::new(ClientConfig {
        fallback: false,
        ..ClientConfig::default()
    });
    let request = NamespaceRequest {
        allocation_id: "demo-1".to_owned(),
        namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
        uenv_image: Some(DEMO_IMAGE.to_owned()),
    };
    let first = client
        .request(&request)
        .map_err(|e| format!("first request: {e}"))?;
    let before = ns_links(&first);
    let mounts_before = mount_state();
    let worker = worker_pid().ok_or("no worker process found")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::Signal::SIGSEGV,
    )
    .map_err(|e| format!("kill -SEGV {worker}: {e}"))?;
    wait_gone(worker)?;
    println!("demo-agent: worker {worker} killed by SIGSEGV");
    // Sent while no worker serves: it waits in the keeper's listen backlog.
    let second = client
        .request(&request)
        .map_err(|e| format!("request during the restart: {e}"))?;
    let after = ns_links(&second);
    println!("demo-agent: namespaces before {before:?} after {after:?}");
    if before != after {
        return Err("the restarted worker answered with other namespaces".into());
    }
    let new_worker = worker_pid().ok_or("no worker after the restart")?;
    if new_worker == worker {
        return Err("the worker was not restarted".into());
    }
    let uenv =
        Path::new(&first.response.uenv_mount_path.clone().unwrap_or_default()).join(DEMO_FILE);
    for (what, granted) in [("old", &first), ("new", &second)] {
        let mnt = granted
            .fd(NamespaceType::Mount)
            .ok_or("no mount namespace granted")?;
        let text = read_inside(mnt.as_fd(), &uenv)?;
        if text != DEMO_TEXT {
            return Err(format!("{what} FDs: unexpected uenv content {text:?}"));
        }
    }
    println!("demo-agent: uenv readable through the old and the new FDs");
    let mounts_after = mount_state();
    if mounts_before != mounts_after {
        return Err(format!(
            "mount references changed:\n{mounts_before}\n{mounts_after}"
        ));
    }
    println!("demo-agent: mount references unchanged");
    client
        .release(second)
        .map_err(|e| format!("release: {e}"))?;
    drop(first);
    Ok(())
}

/// `nodeinit demo-agent --reload-check INSTALLED NEW BROKEN`: a live
/// plugin upgrade. Requests `demo-1`; replaces the plugin file `INSTALLED`
/// (atomically) with `NEW` and asks the keeper to reload: `status` must
/// show NEW's version and the allocation must answer with the same
/// namespaces; then with `BROKEN`: the reload must be refused and nothing
/// change. Returns the exit code.
pub fn run_reload_check(installed: &Path, new: &Path, broken: &Path) -> i32 {
    match reload_check(installed, new, broken) {
        Ok(()) => {
            println!("demo-agent: reload check passed");
            0
        }
        Err(e) => {
            println!("demo-agent: reload check FAILED: {e}");
            1
        }
    }
}

fn install(from: &Path, to: &Path) -> Result<(), String> {
    let tmp = to.with_extension("so.new");
    std::fs::copy(from, &tmp)
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("rename onto {}: {e}", to.display()))
}

/// The keeper's status once the worker has hashed its plugin files (it
/// does so after it started serving).
fn status() -> Result<crate::keeper::WorkerStatus, String> {
    status_when(|status| {
        status
            .plugins
            .iter()
            .all(|p| p.error.is_some() || p.sha256.is_some())
    })
}

/// The keeper's status (`nodeinit status`) once `done` holds, or as it is
/// after 60 s.
fn status_when(
    done: impl Fn(&crate::keeper::WorkerStatus) -> bool,
) -> Result<crate::keeper::WorkerStatus, String> {
    use crate::control::{ask, default_socket, ControlReply, ControlRequest};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status =
            match ask(&default_socket(), &ControlRequest::Status).map_err(|e| e.to_string())? {
                ControlReply::Status(s) => s,
                other => return Err(format!("status: unexpected reply {other:?}")),
            };
        if done(&status) || std::time::Instant::now() >= deadline {
            return Ok(status);
        }
        // Waiting for the keeper's report, not for time to pass.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn plugin_line(status: &crate::keeper::WorkerStatus, path: &Path) -> String {
    status
        .plugins
        .iter()
        .find(|p| Path::new(&p.path) == path)
        .map_or_else(
            || "not loaded".to_owned(),
            |p| {
                format!(
                    "{} {} sha256 {}",
                    p.name.as_deref().unwrap_or("-"),
                    p.version.as_deref().unwrap_or("-"),
                    p.sha256.as_deref().unwrap_or("-")
                )
            },
        )
}

fn reload_check(installed: &Path, new: &Path, broken: &Path) -> Result<(), String> {
    use crate::control::{ask, default_socket, ControlReply, ControlRequest};
    let client = HandoffClient::new(ClientConfig {
        fallback: false,
        ..ClientConfig::default()
    });
    let request = NamespaceRequest {
        allocation_id: "demo-1".to_owned(),
        namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
        uenv_image: Some(DEMO_IMAGE.to_owned()),
    };
    let first = client
        .request(&request)
        .map_err(|e| format!("first request: {e}"))?;
    let before = status()?;
    println!(
        "demo-agent: before: worker {:?}: {}",
        before.pid,
        plugin_line(&before, installed)
    );
    install(new, installed)?;
    match ask(&default_socket(), &ControlRequest::Reload).map_err(|e| e.to_string())? {
        ControlReply::Reloaded(_) => {}
        other => return Err(format!("reload to the new version: {other:?}")),
    }
    let after = status()?;
    println!(
        "demo-agent: after reload: worker {:?}: {}",
        after.pid,
        plugin_line(&after, installed)
    );
    let again = client
        .request(&request)
        .map_err(|e| format!("request after the reload: {e}"))?;
    if ns_links(&first) != ns_links(&again) {
        return Err("the reloaded worker answered with other namespaces".into());
    }
    println!("demo-agent: demo-1 has the same namespaces after the reload");
    install(broken, installed)?;
    match ask(&default_socket(), &ControlRequest::Reload).map_err(|e| e.to_string())? {
        ControlReply::Error(why) => println!(
            "demo-agent: broken reload refused: {}",
            why.lines().find(|l| l.contains("FAILED")).unwrap_or(&why)
        ),
        other => return Err(format!("a broken plugin was accepted: {other:?}")),
    }
    let unchanged = status()?;
    println!(
        "demo-agent: after the refused reload: worker {:?}: {}",
        unchanged.pid,
        plugin_line(&unchanged, installed)
    );
    if unchanged.pid != after.pid
        || plugin_line(&unchanged, installed) != plugin_line(&after, installed)
    {
        return Err("the refused reload changed the worker".into());
    }
    client.release(again).map_err(|e| format!("release: {e}"))?;
    drop(first);
    Ok(())
}

/// Reads `path` as seen from mount namespace `mnt`, on a thread of its own
/// (setns of a mount namespace needs an unshared fs context).
fn read_inside(mnt: std::os::fd::BorrowedFd<'_>, path: &Path) -> Result<String, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                .map_err(|e| format!("unshare(CLONE_FS): {e}"))?;
            nix::sched::setns(mnt, nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("setns(mnt): {e}"))?;
            std::fs::read_to_string(path)
                .map_err(|e| format!("read {} inside the namespace: {e}", path.display()))
        })
        .join()
        .unwrap_or_else(|_| Err("reader thread panicked".to_owned()))
    })
}

#[cfg(test)]
mod tests {
    //! The demo image as the real kernel sees it (loop + squashfs, in a
    //! private mount namespace so nothing shows on this machine), and as
    //! squashfs-tools, the reference implementation, reads it.
    use super::*;
    use std::process::Command;

    fn image_in(dir: &Path) -> PathBuf {
        let image = dir.join(DEMO_IMAGE);
        write_demo_image(&image).unwrap();
        image
    }

    #[test]
    fn the_kernel_mounts_the_demo_image_with_the_expected_content() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a loop device and must run as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let image = image_in(dir.path());
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        // util-linux: mount sets up a read-only autoclear loop device, which
        // goes away with the mount when the namespace ends.
        let script = r#"set -e
            mount -t squashfs -o loop,ro "$1" "$2"
            stat -c '%n %a %u:%g %F' "$2" "$2/hello.txt"
            ls -A "$2"
            printf 'CONTENT<'; cat "$2/hello.txt"; printf '>\n'
            umount "$2""#;
        let out = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&image)
            .arg(&mnt)
            .output()
            .expect("run unshare (util-linux)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "mounting {} failed: {}\n{stdout}\n{}",
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let m = mnt.display();
        assert_eq!(
            stdout,
            format!(
                "{m} 755 0:0 directory\n{m}/{DEMO_FILE} 644 0:0 regular file\n\
                 {DEMO_FILE}\nCONTENT<{DEMO_TEXT}>\n"
            )
        );
    }

    #[test]
    fn squashfs_tools_read_the_demo_image_as_gzip_squashfs_4() {
        let dir = tempfile::tempdir().unwrap();
        let image = image_in(dir.path());
        let out = Command::new("unsquashfs")
            .args(["-s"])
            .arg(&image)
            .output()
            .expect("unsquashfs is required: apt-get install -y squashfs-tools");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "unsquashfs -s: {stdout}");
        assert!(stdout.contains("valid SQUASHFS 4:0 superblock"), "{stdout}");
        assert!(stdout.contains("Compression gzip"), "{stdout}");
        let out = Command::new("unsquashfs")
            .args(["-lln", "-d", "root"])
            .arg(&image)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        let entries: Vec<(&str, &str, &str)> = listing
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 6).then(|| (f[0], f[1], f[f.len() - 1]))
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("drwxr-xr-x", "0/0", "root"),
                ("-rw-r--r--", "0/0", "root/hello.txt")
            ],
            "{listing}"
        );
    }

    #[test]
    fn the_demo_image_is_reproducible_and_replaces_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let image = image_in(dir.path());
        let first = std::fs::read(&image).unwrap();
        assert_eq!(&first[..4], b"hsqs");
        std::fs::write(&image, b"stale").unwrap();
        write_demo_image(&image).unwrap();
        assert_eq!(std::fs::read(&image).unwrap(), first);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [DEMO_IMAGE], "no temporary file is left behind");
    }

    #[test]
    fn an_unwritable_place_is_an_error_naming_the_file() {
        let err = write_demo_image(Path::new("/nonexistent-dir/demo.sqfs")).unwrap_err();
        assert_eq!(
            err,
            "create demo image /nonexistent-dir/demo.sqfs.tmp: No such file or directory (os error 2)"
        );
    }
}
