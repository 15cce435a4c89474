//! Issue 12, item 10: the readiness socket was chmod'ed (0666) by path after
//! bind, so an attacker swapping a symlink in at the socket path between the
//! two made the chmod hit the link's target. Here a real attacker thread
//! replaces the socket with a symlink to a 0600 victim file as soon as the
//! socket appears, while the gate is started and stopped 2000 times. Before
//! the fix the victim became world-writable in 5 of 2000 cycles (one run;
//! 1 of 200 and 2 of 2000 in others). After it: never; the socket is bound and chmod'ed inside a
//! private directory and renamed into place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nodeinit_readiness::ReadinessProvider;
use nodeinit_readiness::{FileReadiness, ReadinessOptions};

const CYCLES: usize = 2000;
/// Upper bound of attacker iterations.
const ATTACKER_ITERATIONS: u64 = 200_000_000;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn symlink_swapped_in_at_the_socket_path_never_gets_chmodded() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let socket_path = dir.path().join("pact/ready.sock");
    std::fs::create_dir_all(socket_path.parent().unwrap()).unwrap();
    let options = ReadinessOptions {
        file: dir.path().join("pact/ready"),
        write_file: false,
        socket: true,
        socket_path: socket_path.clone(),
        sd_notify: false,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, socket_path, victim) = (Arc::clone(&stop), socket_path.clone(), victim.clone());
        let staged = dir.path().join("pact/.evil");
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            for _ in 0..ATTACKER_ITERATIONS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let is_socket = socket_path
                    .symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_socket());
                if is_socket {
                    let _ = std::fs::remove_file(&staged);
                    if symlink(&victim, &staged).is_ok()
                        && std::fs::rename(&staged, &socket_path).is_ok()
                    {
                        swaps += 1;
                    }
                }
            }
            swaps
        })
    };

    let (mut chmodded, mut in_the_way) = (0, 0);
    for _ in 0..CYCLES {
        let gate = FileReadiness::new(options.clone()).unwrap();
        let result = gate.signal_ready("nid1");
        if mode(&victim) != 0o600 {
            chmodded += 1;
            std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if let Err(e) = result {
            // The attacker's link from the last cycle is in the way: refused, as it should be.
            let text = e.to_string();
            assert!(text.contains("a non-socket file is in the way"), "{text}");
            in_the_way += 1;
        }
        drop(gate);
        // A link the attacker left is not ours to keep for the next cycle.
        if socket_path
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(&socket_path).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = attacker.join().unwrap();
    eprintln!("readiness socket race: {swaps} swaps, victim chmodded in {chmodded} of {CYCLES} cycles, {in_the_way} refused (link in the way)");
    assert!(swaps > 0, "the attacker never swapped");
    assert_eq!(
        chmodded, 0,
        "victim made mode 0666 in {chmodded} of {CYCLES} cycles"
    );
    assert_eq!(mode(&victim), 0o600);
    assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
}
