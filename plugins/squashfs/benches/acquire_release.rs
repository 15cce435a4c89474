//! Cost of a reference on an already-mounted image (target: ≤ 20 µs median for
//! acquire + release) and of the first mount of a small image.
//!
//! Needs root, loop devices and `mksquashfs`; fails loudly otherwise. The
//! state dir is on tmpfs (`/dev/shm`), as `/run/nodeinit` is on a node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hpc_node::MountManager;
use nodeinit_plugin_api::AllocationMounts;
use nodeinit_squashfs::{ManagerConfig, SquashfsManager};

struct Setup {
    _dir: tempfile::TempDir,
    _state: tempfile::TempDir,
    image: String,
    config: ManagerConfig,
}

fn setup() -> Setup {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark mounts images: run it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir_in("/dev/shm").unwrap();
    let images = dir.path().join("images");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), "hello").unwrap();
    let image = images.join("bench.sqfs");
    let out = Command::new("mksquashfs")
        .arg(&src)
        .arg(&image)
        .args(["-noappend", "-quiet", "-no-progress"])
        .output()
        .expect("mksquashfs is missing: apt-get install -y squashfs-tools");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = ManagerConfig {
        image_dirs: vec![images],
        mount_base: dir.path().join("uenv"),
        hold_time: Duration::from_secs(600),
        state_dir: PathBuf::from(state.path()),
    };
    Setup {
        image: image.display().to_string(),
        _dir: dir,
        _state: state,
        config,
    }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let manager = SquashfsManager::new(s.config.clone()).unwrap();
    let keep = manager.acquire_mount(&s.image).unwrap();
    let mut group = c.benchmark_group("mounted_image");
    group.bench_function("acquire_release_anonymous", |b| {
        b.iter(|| {
            let h = manager.acquire_mount(&s.image).unwrap();
            manager.release_mount(&h).unwrap();
        });
    });
    group.bench_function("acquire_release_bare_name", |b| {
        b.iter(|| {
            let h = manager.acquire_mount("bench.sqfs").unwrap();
            manager.release_mount(&h).unwrap();
        });
    });
    group.bench_function("acquire_for_release_for_allocation", |b| {
        b.iter(|| {
            let h = manager.acquire_for("job-1", &s.image).unwrap();
            manager.release_for("job-1", &h).unwrap();
        });
    });
    group.finish();
    manager.release_mount(&keep).unwrap();
    manager.force_unmount(&s.image).unwrap();

    let mut group = c.benchmark_group("first_mount");
    group.sample_size(20);
    group.bench_function("acquire_unmounted_small_image", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                manager.acquire_mount(&s.image).unwrap();
                total += start.elapsed();
                manager.force_unmount(&s.image).unwrap();
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
