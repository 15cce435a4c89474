//! Path attacks on the mount manager with a real attacker running next to it
//! (issue 12, items 7, 8 and 10): a symlink swapped into `mount_base`, a
//! `RENAME_EXCHANGE` loop in a writable subdirectory of an image dir, a FIFO
//! planted at the state file's temp path. Each test says how often the attack
//! won before the fix; after it the mount never happens from (or onto) the
//! wrong place and the error says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{path_str, Fixture, LONG_HOLD};
use hpc_node::{MountError, MountManager};
use nix::fcntl::{renameat2, RenameFlags};
use nodeinit_plugin_api::AllocationMounts;
use nodeinit_squashfs::SquashfsManager;

/// Pause of the forked attacker between exchanges: without one, the
/// exchange and the lookup serialise on the directory's lock and the lookup
/// nearly always sees the same state.
const ATTACKER_PAUSE_US: u64 = 20;
/// Marks the child process that plays the image-dir attacker.
const ATTACKER_ENV: &str = "NODEINIT_SQUASHFS_EXCHANGE_ATTACKER";
/// Acquisitions each race test makes while the attacker runs.
const ATTEMPTS: usize = 40;
/// Image dirs configured after the first in the image-dir race.
const EXTRA_IMAGE_DIRS: usize = 30;
/// Lookups the image-dir race makes (most are refused cheaply, few win).
const LOOKUPS: usize = 1000;
/// Upper bound of exchanges an attacker makes before it stops by itself.
const ATTACKER_ITERATIONS: u64 = 50_000_000;

fn reason_of(result: Result<hpc_node::MountHandle, MountError>) -> Result<String, String> {
    match result {
        Ok(handle) => Ok(handle.mount_point),
        Err(MountError::MountFailed { reason, .. }) => Err(reason),
        Err(other) => panic!("expected MountFailed, got {other:?}"),
    }
}

/// A thread exchanging `a` and `b` (same directory) until told to stop or
/// [`ATTACKER_ITERATIONS`] are done; recreates `a` as a directory when it was
/// removed (the manager removes the mount point directories it made).
fn exchange_loop(
    dir: &Path,
    a: &str,
    b: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let (dir, a, b) = (dir.to_path_buf(), a.to_owned(), b.to_owned());
    std::thread::spawn(move || {
        let mut swaps = 0u64;
        for _ in 0..ATTACKER_ITERATIONS {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (pa, pb) = (dir.join(&a), dir.join(&b));
            match renameat2(None, &pa, None, &pb, RenameFlags::RENAME_EXCHANGE) {
                Ok(()) => swaps += 1,
                Err(_) => {
                    if pa.symlink_metadata().is_err() {
                        let _ = std::fs::create_dir(&pa);
                    }
                    if pb.symlink_metadata().is_err() {
                        let _ = std::fs::create_dir(&pb);
                    }
                }
            }
        }
        swaps
    })
}

fn mounted_on(path: &Path) -> bool {
    nodeinit_squashfs::mountinfo::read()
        .unwrap()
        .iter()
        .any(|e| e.mount_point == path)
}

/// Item 7, static form: `mount_base/base -> victim` planted before the first
/// acquire. Before the fix the image was mounted over the victim every time
/// (1 of 1) and never unmounted (UMOUNT_NOFOLLOW on the link).
#[test]
fn symlink_in_mount_base_is_refused_not_followed() {
    let fx = Fixture::new();
    let image = fx.make_image("base.sqfs", &[("f", b"image")]);
    let victim = fx.root().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("marker"), b"victim").unwrap();
    std::fs::create_dir_all(&fx.mount_base).unwrap();
    symlink(&victim, fx.mount_base.join("base")).unwrap();
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();

    let reason = reason_of(manager.acquire_mount(path_str(&image))).unwrap_err();
    let link = fx.mount_base.join("base");
    assert!(
        reason.contains(&format!(
            "mount point {} is a symbolic link; it is never followed",
            link.display()
        )) && reason.contains("remove it"),
        "{reason}"
    );
    assert!(!mounted_on(&victim), "mounted over the symlink's target");
    assert_eq!(
        std::fs::read_to_string(victim.join("marker")).unwrap(),
        "victim"
    );
    assert!(fx.mounts().is_empty(), "{:?}", fx.mounts());
    assert!(fx.loop_devices().is_empty(), "{:?}", fx.loop_devices());
}

/// Item 7, racing form: a thread swaps `mount_base/base` between a real
/// directory and a symlink to a victim directory while the manager mounts
/// and force-unmounts the image 40 times. Before the fix 36 and 30 of 40 mounts
/// (two runs) landed on the victim. After it: never; each acquire either mounts on the
/// real directory or is refused because the entry is a symbolic link.
#[test]
fn symlink_swapped_into_mount_base_never_redirects_the_mount() {
    let fx = Fixture::new();
    let image = fx.make_image("base.sqfs", &[("f", b"image")]);
    let victim = fx.root().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::create_dir_all(&fx.mount_base).unwrap();
    std::fs::create_dir(fx.mount_base.join("base")).unwrap();
    symlink(&victim, fx.mount_base.join("base.swap")).unwrap();
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = exchange_loop(&fx.mount_base, "base", "base.swap", Arc::clone(&stop));

    let (mut on_victim, mut mounted, mut refused) = (0, 0, 0);
    let mut unexpected = Vec::new();
    for _ in 0..ATTEMPTS {
        let result = reason_of(manager.acquire_mount(path_str(&image)));
        if mounted_on(&victim) {
            on_victim += 1;
            let _ = nix::mount::umount2(&victim, nix::mount::MntFlags::MNT_DETACH);
        }
        match result {
            Ok(_) => mounted += 1,
            Err(reason) => {
                if !(reason.contains("is a symbolic link; it is never followed")
                    || reason.contains("was replaced while it was being mounted"))
                {
                    unexpected.push(reason);
                }
                refused += 1;
            }
        }
        manager.force_unmount(path_str(&image)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = attacker.join().unwrap();
    eprintln!("mount_base race: {swaps} swaps, {mounted} mounted in place, {refused} refused, {on_victim} on the victim");
    assert_eq!(
        on_victim, 0,
        "mounted over the symlink target {on_victim} of {ATTEMPTS} times"
    );
    assert!(swaps > 0, "the attacker never swapped");
    assert!(unexpected.is_empty(), "unexpected errors: {unexpected:?}");
    fx.wait_clean().unwrap();
}

/// mount_base writable by others is refused before anything is created in it.
#[test]
fn world_writable_mount_base_is_refused() {
    let fx = Fixture::new();
    let image = fx.make_image("base.sqfs", &[("f", b"image")]);
    std::fs::create_dir_all(&fx.mount_base).unwrap();
    std::fs::set_permissions(&fx.mount_base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let reason = reason_of(manager.acquire_mount(path_str(&image))).unwrap_err();
    assert!(
        reason.contains(&format!(
            "mount_base {} is writable by others (mode 777)",
            fx.mount_base.display()
        )) && reason.contains("chmod go-w"),
        "{reason}"
    );
    assert!(!fx.mount_base.join("base").exists());
    assert!(fx.mounts().is_empty());
}

/// Item 8: an unprivileged attacker (uid 65534, a child process) exchanges a
/// directory of a world-writable subdirectory of an image dir with a symlink
/// to a root-only (0700) directory outside image_dirs, while the manager
/// acquires `<image dir>/user/d/secret.sqfs` 1000 times, with 30 more image
/// dirs configured. Before the fix the squashfs from the 0700 directory was
/// mounted 19 and 10 times of 1000 (two runs; with the one image dir alone
/// 0 to 4 of 1000, the window being narrower). After it: never; the
/// requests that meet the symlink are refused naming it.
#[test]
fn rename_exchange_in_writable_subdir_never_mounts_from_outside() {
    if let Ok(spec) = std::env::var(ATTACKER_ENV) {
        exchange_attacker(&spec);
        return;
    }
    let fx = Fixture::new();
    // The attacker must be able to reach the writable subdirectory.
    std::fs::set_permissions(fx.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = fx.images.join("user");
    std::fs::create_dir(&user).unwrap();
    std::fs::set_permissions(&user, std::fs::Permissions::from_mode(0o777)).unwrap();
    let decoy_dir = user.join("d");
    fx.make_image_in(&decoy_dir, "secret.sqfs", &[("who", b"decoy")]);
    nix::unistd::chown(&decoy_dir, Some(65534.into()), Some(65534.into())).unwrap();
    let secret_dir = fx.root().join("secret");
    let secret = fx.make_image_in(&secret_dir, "secret.sqfs", &[("who", b"secret")]);
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A separate process (the same test in its attacker role), not a fork of
    // this multi-threaded one: a fork would inherit the descriptors other
    // tests hold at that moment (loop devices, mounts) and keep them alive.
    let spec = [decoy_dir.clone(), user.join("x"), secret_dir.clone()]
        .map(|p| p.display().to_string())
        .join("\n");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "rename_exchange_in_writable_subdir_never_mounts_from_outside",
            "--exact",
            "--test-threads=1",
        ])
        .env(ATTACKER_ENV, spec)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the attacker has planted its link.
    common::wait_for(common::DEADLINE, || {
        user.join("x").symlink_metadata().is_ok()
    })
    .unwrap();

    // A site with several image dirs (here 30 more, after the first): the
    // old code re-resolved each of them between its check and its open,
    // which is the window the attacker needs.
    let mut config = fx.config(LONG_HOLD);
    for n in 0..EXTRA_IMAGE_DIRS {
        let extra = fx.root().join(format!("more-images-{n}"));
        std::fs::create_dir(&extra).unwrap();
        config.image_dirs.push(extra);
    }
    let manager = SquashfsManager::new(config).unwrap();
    let requested = decoy_dir.join("secret.sqfs");
    let (mut from_secret, mut decoys, mut refused) = (0, 0, 0);
    let mut unexpected = Vec::new();
    for _ in 0..LOOKUPS {
        match reason_of(manager.acquire_mount(path_str(&requested))) {
            Ok(mount_point) => {
                let who = std::fs::read_to_string(format!("{mount_point}/who")).unwrap();
                if who == "secret" {
                    from_secret += 1;
                } else {
                    assert_eq!(who, "decoy");
                    decoys += 1;
                }
                manager.force_unmount(path_str(&requested)).unwrap();
            }
            Err(reason) => {
                if !(reason.contains("passes through a symbolic link")
                    && reason.contains("links are not followed below an image dir"))
                {
                    unexpected.push(reason);
                }
                refused += 1;
            }
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    eprintln!("image dir race: {decoys} decoys mounted, {refused} refused, {from_secret} from the 0700 directory ({status:?})");
    assert!(
        status.signal() == Some(nix::libc::SIGKILL),
        "the attacker did not run: {status:?}"
    );
    assert_eq!(
        from_secret,
        0,
        "mounted {} from outside image_dirs {from_secret} of {LOOKUPS} times",
        secret.display()
    );
    assert!(unexpected.is_empty(), "unexpected errors: {unexpected:?}");
    assert!(
        refused > 0,
        "the attacker never won a lookup; the race did not happen"
    );
    fx.wait_clean().unwrap();
}

/// The attacker role of the image-dir race, run as uid 65534: plant
/// `b -> target`, then exchange `a` and `b` until killed (or the bound).
fn exchange_attacker(spec: &str) {
    let parts: Vec<&str> = spec.split('\n').collect();
    let [a, b, target] = parts[..] else {
        panic!("bad attacker spec {spec:?}");
    };
    symlink(target, b).unwrap();
    for _ in 0..ATTACKER_ITERATIONS {
        let _ = renameat2(None, a, None, b, RenameFlags::RENAME_EXCHANGE);
        std::thread::sleep(Duration::from_micros(ATTACKER_PAUSE_US));
    }
}

/// Item 10: a FIFO planted at the state file's temp path. Before the fix the
/// acquire opened it for writing and blocked forever (1 of 1), under the
/// manager's lock. After it the write goes through and the state is recorded.
#[test]
fn fifo_at_the_state_temp_path_does_not_block() {
    let fx = Fixture::new();
    let image = fx.make_image("rec.sqfs", &[("f", b"x")]);
    let manager = Arc::new(SquashfsManager::new(fx.config(LONG_HOLD)).unwrap());
    let temp = fx
        .state
        .path()
        .join(format!(".squashfs-mounts.json.{}.tmp", std::process::id()));
    nix::unistd::mkfifo(&temp, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = Arc::clone(&manager);
    let image_text = path_str(&image).to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(worker.acquire_for("job-1", &image_text));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("acquire_for blocked on the FIFO at the state temp path");
    let handle = result.unwrap();
    let state = std::fs::read_to_string(manager.state_file_path()).unwrap();
    assert!(state.contains("\"job-1\": 1"), "{state}");
    assert!(!temp.exists(), "temp path left behind");
    manager.release_for("job-1", &handle).unwrap();
    manager.force_unmount(path_str(&image)).unwrap();
    fx.wait_clean().unwrap();
}

/// mount_base is opened once, but a removed and recreated mount_base is
/// picked up again rather than failing every later mount.
#[test]
fn recreated_mount_base_is_reopened() {
    let fx = Fixture::new();
    let image = fx.make_image("base.sqfs", &[("f", b"image")]);
    let manager = SquashfsManager::new(fx.config(LONG_HOLD)).unwrap();
    let first = manager.acquire_mount(path_str(&image)).unwrap();
    manager.force_unmount(path_str(&image)).unwrap();
    std::fs::remove_dir(&fx.mount_base).unwrap();
    std::fs::create_dir(&fx.mount_base).unwrap();
    let again = manager.acquire_mount(path_str(&image)).unwrap();
    assert_eq!(again.mount_point, first.mount_point);
    assert_eq!(
        std::fs::read_to_string(format!("{}/f", again.mount_point)).unwrap(),
        "image"
    );
    manager.force_unmount(path_str(&image)).unwrap();
    fx.wait_clean().unwrap();
}
