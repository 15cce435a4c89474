//! The uenv shadow copies an automount trigger; it never fires it. On HPC
//! nodes `/apps` or `/scratch` are often autofs direct mounts of NFS: the
//! shadow of `/` clones every entry of `/`, and an `open_tree` without
//! `AT_NO_AUTOMOUNT` made autofs mount the share for every allocation —
//! and with the NFS server down, the setup thread hung in the mount and
//! every uenv bind after it waited. Here a real autofs direct mount, whose
//! daemon (this binary in a daemon role) fails every mount it is asked
//! for and says so: before the fix the shadow asked for one (every run)
//! and failed with ENOENT; now the daemon hears nothing and the shadow
//! holds the trigger itself, as the namespace's plain copy does.
//! One test in its own file: it makes this process's mount namespace
//! private to mount autofs there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use hpc_node::NamespaceType;
use nix::mount::{mount, MsFlags};
use nodeinit_namespaces::holder::NamespaceHolder;
use nodeinit_namespaces::mount_namespace::prepare_mount_point;

const DAEMON_ENV: &str = "NODEINIT_TEST_AUTOFS_DAEMON";

/// `AUTOFS_IOC_FAIL` (`_IO(0x93, 0x61)`): the mount waited for failed.
const AUTOFS_IOC_FAIL: libc::c_ulong = 0x9361;

/// The daemon: stdin is the autofs pipe; each request is failed and
/// reported on stdout as `request <name>`.
fn autofs_daemon(mount_root: &Path) -> ! {
    println!("daemon ready");
    std::io::stdout().flush().unwrap();
    let mut packet = [0u8; 512];
    loop {
        // One packet per read: the kernel writes each whole.
        let n = std::io::stdin().read(&mut packet).unwrap();
        assert!(n >= 300, "short autofs packet: {n} bytes");
        // autofs_v5_packet: hdr (8), wait_queue_token (u32), dev, ino (u64),
        // uid, gid, pid, tgid, len (u32), name.
        let token = u32::from_ne_bytes(packet[8..12].try_into().unwrap());
        let len = u32::from_ne_bytes(packet[40..44].try_into().unwrap()) as usize;
        let name = String::from_utf8_lossy(&packet[44..44 + len]).into_owned();
        // The daemon's group opens the trigger without triggering it.
        let root = std::fs::File::open(mount_root).unwrap();
        // SAFETY: an ioctl on an open descriptor of the autofs mount root,
        // its argument the token by value, as autofs(5)'s daemons pass it.
        let failed = unsafe {
            libc::ioctl(
                root.as_raw_fd(),
                AUTOFS_IOC_FAIL,
                libc::c_ulong::from(token),
            )
        };
        println!("request {name} (answered {failed})");
        std::io::stdout().flush().unwrap();
    }
}

/// `(mount point, fs type)` of every mount of process `pid`.
fn mounts_of(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?.to_owned();
            let fstype = right.split_whitespace().next()?.to_owned();
            Some((point, fstype))
        })
        .collect()
}

#[test]
fn the_shadow_copies_an_automount_trigger_without_firing_it() {
    if let Ok(root) = std::env::var(DAEMON_ENV) {
        autofs_daemon(Path::new(&root));
    }
    // Our own mount namespace, private: the autofs mount stays in here.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ancestor = tmp.path().join("node-root");
    let trigger = ancestor.join("apps");
    std::fs::create_dir_all(&trigger).unwrap();
    std::fs::create_dir(ancestor.join("etc")).unwrap();

    // The daemon, in a process group of its own: autofs never asks its
    // daemon's group (it is the one that mounts), so this process's
    // lookups are the ones that trigger.
    let (pipe_read, pipe_write) = nix::unistd::pipe().unwrap();
    let mut daemon = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_shadow_copies_an_automount_trigger_without_firing_it",
            "--nocapture",
        ])
        .env(DAEMON_ENV, &trigger)
        .stdin(Stdio::from(pipe_read))
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let options = format!(
        "fd={},pgrp={},minproto=5,maxproto=5,direct",
        pipe_write.as_raw_fd(),
        daemon.id()
    );
    mount(
        Some("nodeinit-test"),
        &trigger,
        Some("autofs"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .unwrap();
    drop(pipe_write);
    // Past the test harness's own lines.
    let mut said = std::io::BufReader::new(daemon.stdout.take().unwrap()).lines();
    while said.next().unwrap().unwrap() != "daemon ready" {}
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in said.map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    // A holder of a mount namespace (a copy of this one), and the uenv
    // mount point made under the shadow of `ancestor`.
    let holder = NamespaceHolder::spawn(&[NamespaceType::Mount]).unwrap();
    let mnt = holder.fd(NamespaceType::Mount).unwrap();
    let made = prepare_mount_point(mnt, &ancestor.join("user-environment"));
    let requests: Vec<String> = lines.try_iter().collect();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let seen = mounts_of(holder.pid().as_raw());
    holder.terminate().unwrap();
    let _ = nix::mount::umount2(&trigger, nix::mount::MntFlags::MNT_DETACH);

    assert!(
        made.is_ok(),
        "the shadow failed: {made:?}; the daemon heard {requests:?}"
    );
    assert_eq!(
        requests,
        Vec::<String>::new(),
        "the shadow fired the automount"
    );
    let trigger = trigger.to_string_lossy().into_owned();
    let at_trigger: Vec<&str> = seen
        .iter()
        .filter(|(point, _)| *point == trigger)
        .map(|(_, fstype)| fstype.as_str())
        .collect();
    // The host's trigger, then the shadow's copy of it above the tmpfs.
    assert_eq!(at_trigger, ["autofs", "autofs"], "{seen:#?}");
    assert!(
        seen.iter()
            .any(|(point, fstype)| *point == ancestor.to_string_lossy() && fstype == "tmpfs"),
        "no shadow over {}: {seen:#?}",
        ancestor.display()
    );
}
