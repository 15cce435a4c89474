//! 8 threads × 1000 random acquire/release: counts never go negative and the
//! table, the state file and the kernel agree at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{path_str, Fixture, DEADLINE};
use hpc_node::{MountError, MountHandle, MountManager};
use nodeinit_plugin_api::AllocationMounts;
use nodeinit_squashfs::SquashfsManager;

const THREADS: usize = 8;
const OPS: usize = 1000;

#[test]
fn eight_threads_random_acquire_release_agree_with_state_and_kernel() {
    let fx = Fixture::new();
    let images = [
        fx.make_image("s1.sqfs", &[("f", b"1")]),
        fx.make_image("s2.sqfs", &[("f", b"2")]),
    ];
    // A short hold so mounts come and go while the threads run.
    let manager = Arc::new(SquashfsManager::new(fx.config(Duration::from_millis(5))).unwrap());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let manager = Arc::clone(&manager);
            let images = images.clone();
            std::thread::spawn(move || {
                let id = format!("t{t}");
                let mut held = [0u32; 2];
                let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (t as u64 + 1);
                for _ in 0..OPS {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let which = usize::from(rng & 2 != 0);
                    let image = path_str(&images[which]).to_owned();
                    if rng & 1 == 0 {
                        let handle = manager.acquire_for(&id, &image).unwrap();
                        let f =
                            std::fs::read_to_string(format!("{}/f", handle.mount_point)).unwrap();
                        assert_eq!(f, (which + 1).to_string());
                        held[which] += 1;
                    } else {
                        let handle = MountHandle {
                            image_path: image,
                            mount_point: String::new(),
                        };
                        match (manager.release_for(&id, &handle), held[which]) {
                            (Ok(()), n) if n > 0 => held[which] -= 1,
                            (Err(MountError::RefcountInconsistency { detail, .. }), 0) => {
                                assert!(
                                    detail.contains(&format!("allocation {id} holds no reference")),
                                    "{detail}"
                                );
                            }
                            (result, n) => panic!("release with {n} held gave {result:?}"),
                        }
                    }
                }
                held
            })
        })
        .collect();
    let mut expected: [BTreeMap<String, u32>; 2] = Default::default();
    for (t, worker) in workers.into_iter().enumerate() {
        let held = worker.join().unwrap();
        for which in 0..2 {
            if held[which] > 0 {
                expected[which].insert(format!("t{t}"), held[which]);
            }
        }
    }
    for which in 0..2 {
        let image = path_str(&images[which]);
        let total: u32 = expected[which].values().sum();
        if total == 0 {
            assert!(manager.wait_unmounted(image, DEADLINE));
            assert_eq!(manager.refcount(image), None);
        } else {
            assert_eq!(manager.refcount(image), Some(u64::from(total)));
        }
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manager.state_file_path()).unwrap()).unwrap();
    let mut in_state: [BTreeMap<String, u32>; 2] = Default::default();
    for mount in state["mounts"].as_array().unwrap() {
        let which = images
            .iter()
            .position(|i| path_str(i) == mount["image"])
            .unwrap();
        in_state[which] = serde_json::from_value(mount["holders"].clone()).unwrap();
        let kernel = fx.mounts_at(mount["mount_point"].as_str().unwrap());
        assert_eq!(
            kernel.len(),
            1,
            "state lists a mount the kernel lacks (or has twice): {kernel:?}"
        );
    }
    assert_eq!(in_state, expected);
    assert_eq!(fx.mounts().len(), state["mounts"].as_array().unwrap().len());

    for image in &images {
        manager.force_unmount(path_str(image)).unwrap();
    }
    fx.wait_clean().unwrap();
}
