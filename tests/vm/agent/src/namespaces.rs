//! The namespaces nodeinit hands over, entered and looked into.
//!
//! Owns the handoff check: ask the provider, through `nodeinit_handoff`'s
//! consumer client with its local fallback disabled, for pid, net and mount
//! namespaces with the test uenv image, check the image is mounted on the
//! host under `UENV_MOUNT_BASE`, that each FD is a namespace other than the
//! agent's own, and that the uenv file reads back from inside the received
//! mount namespace. The `setns` happens on a helper thread that first
//! unshares its filesystem attributes (the kernel refuses a mount-namespace
//! switch to a thread sharing them), so the agent itself never moves.
//! Must never keep an FD it received after the check: `release` ends the
//! allocation on the provider.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hpc_node::mount::paths::UENV_MOUNT_BASE;
use hpc_node::{NamespaceRequest, NamespaceType};
use nix::sched::{setns, unshare, CloneFlags};
use nodeinit_handoff::client::ClientConfig;
use nodeinit_handoff::{GrantSource, GrantedNamespaces, HandoffClient};

/// The image the test puts in the initramfs's image directory.
pub const UENV_IMAGE: &str = "vmtest.sqfs";
/// A file inside it, and its content.
pub const UENV_FILE: &str = "hello.txt";
/// What `UENV_FILE` holds (the harness writes it when it builds the image).
pub const UENV_CONTENT: &str = "hello from the vmtest uenv";

/// The client: the provider must answer, no local fallback.
pub fn client() -> HandoffClient {
    HandoffClient::new(ClientConfig {
        fallback: false,
        reply_timeout: Duration::from_secs(60),
        ..ClientConfig::default()
    })
}

/// Requests the namespaces; returns what the provider granted.
pub fn request(client: &HandoffClient, allocation_id: &str) -> Result<GrantedNamespaces, String> {
    let request = NamespaceRequest {
        allocation_id: allocation_id.to_owned(),
        namespaces: vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount],
        uenv_image: Some(UENV_IMAGE.to_owned()),
    };
    let granted = client
        .request(&request)
        .map_err(|e| format!("namespace request {request:?} failed: {e}"))?;
    if granted.source != GrantSource::Provider {
        return Err(format!(
            "namespaces came from {:?}, not the provider",
            granted.source
        ));
    }
    if granted.response.fd_types.len() != granted.fds.len() {
        return Err(format!(
            "response lists fd_types {:?} but carried {} FDs",
            granted.response.fd_types,
            granted.fds.len()
        ));
    }
    Ok(granted)
}

/// The image is mounted on the host at `UENV_MOUNT_BASE/<stem>`.
pub fn host_mount() -> Result<String, String> {
    let stem = UENV_IMAGE.trim_end_matches(".sqfs");
    let mount_point = Path::new(UENV_MOUNT_BASE).join(stem);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let line = mountinfo
        .lines()
        .find(|line| line.split_whitespace().nth(4) == Some(&*mount_point.to_string_lossy()))
        .ok_or_else(|| {
            format!(
                "{} is not a mount point (see /proc/self/mountinfo)",
                mount_point.display()
            )
        })?;
    if !line.contains(" - squashfs ") {
        return Err(format!(
            "{} is mounted but not squashfs: {line}",
            mount_point.display()
        ));
    }
    let content = read_trimmed(&mount_point.join(UENV_FILE))?;
    if content != UENV_CONTENT {
        return Err(format!(
            "{}/{UENV_FILE} holds {content:?}",
            mount_point.display()
        ));
    }
    Ok(format!(
        "{} is squashfs and holds {UENV_FILE}",
        mount_point.display()
    ))
}

/// Every FD is a namespace of its type, different from the agent's own.
pub fn fds_are_new_namespaces(granted: &GrantedNamespaces) -> Result<String, String> {
    let response = &granted.response;
    let mut seen = Vec::new();
    for (kind, fd) in response.fd_types.iter().zip(&granted.fds) {
        let own = format!("/proc/self/ns/{}", proc_name(*kind));
        let own_inode = std::fs::metadata(&own)
            .map_err(|e| format!("stat {own}: {e}"))?
            .ino();
        let received = nix::sys::stat::fstat(fd.as_raw_fd())
            .map_err(|e| format!("fstat of the {kind:?} FD failed: {e}"))?
            .st_ino;
        if received == own_inode {
            return Err(format!(
                "the {kind:?} FD is the agent's own namespace (inode {own_inode})"
            ));
        }
        seen.push(format!("{kind:?}:{received}"));
    }
    Ok(format!(
        "fd_types {:?}, inodes [{}]",
        response.fd_types,
        seen.join(" ")
    ))
}

/// Reads the uenv file through the received mount namespace.
pub fn uenv_inside(granted: &GrantedNamespaces) -> Result<String, String> {
    let uenv_path = granted.response.uenv_mount_path.clone().ok_or_else(|| {
        "response has no uenv_mount_path although uenv_image was requested".to_owned()
    })?;
    let mount_fd = granted
        .fd(NamespaceType::Mount)
        .ok_or_else(|| format!("no Mount FD among fd_types {:?}", granted.response.fd_types))?;
    let file = PathBuf::from(&uenv_path).join(UENV_FILE);
    let content = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<String, String> {
                unshare(CloneFlags::CLONE_FS)
                    .map_err(|e| format!("unshare(CLONE_FS) failed: {e}"))?;
                setns(mount_fd, CloneFlags::CLONE_NEWNS)
                    .map_err(|e| format!("setns(mount namespace) failed: {e}"))?;
                read_trimmed(&file)
            })
            .join()
            .map_err(|_| "the setns thread panicked".to_owned())?
    })?;
    if content == UENV_CONTENT {
        Ok(format!(
            "{uenv_path}/{UENV_FILE} inside the namespace holds {content:?}"
        ))
    } else {
        Err(format!(
            "{uenv_path}/{UENV_FILE} inside the namespace holds {content:?}, expected {UENV_CONTENT:?}"
        ))
    }
}

/// Ends the allocation on the provider (`allocation_ended` → `ack`).
pub fn release(client: &HandoffClient, granted: GrantedNamespaces) -> Result<String, String> {
    let allocation = granted.response.allocation_id.clone();
    client
        .release(granted)
        .map(|()| format!("allocation {allocation} ended, provider acknowledged"))
        .map_err(|e| format!("ending allocation {allocation} failed: {e}"))
}

fn proc_name(kind: NamespaceType) -> &'static str {
    match kind {
        NamespaceType::Pid => "pid",
        NamespaceType::Net => "net",
        NamespaceType::Mount => "mnt",
    }
}

fn read_trimmed(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|text| text.trim_end().to_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}
