//! Loading the kernel modules an initramfs ships (loop, squashfs, virtio
//! drivers, ...): PID 1 has no modprobe. The list is
//! `/lib/modules/<release>/modules.load`, one path per line relative to that
//! directory, dependencies first — as `tests/vm/mkinitramfs.sh` writes it.
//!
//! Modules that do not depend on each other (by `modules.dep` next to the
//! list) are inserted concurrently, in waves: a module is inserted once
//! every listed module it depends on was tried; a wave's modules go in
//! together, one thread each, as many at once as there are CPUs to spare
//! (see [`concurrent_inserts`]). Without
//! `modules.dep`, or for a module it does not name, the list order is kept
//! (the module waits for every one before it).
//!
//! Owns only `finit_module(2)` of listed files; never resolves dependencies
//! beyond the list (the list holds the closure) and never unloads.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// What loading the list did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ModulesLoaded {
    /// Modules loaded now, in list order.
    pub loaded: Vec<String>,
    /// Modules the kernel already had (`EEXIST`).
    pub present: Vec<String>,
    /// `path: error` for each that failed.
    pub failed: Vec<String>,
    /// Modules not tried because loading was cancelled.
    pub not_tried: Vec<String>,
}

/// The list file of the running kernel, under `root` (normally `/`).
pub fn list_path(root: &Path) -> Option<PathBuf> {
    let release = nix::sys::utsname::uname()
        .ok()?
        .release()
        .to_string_lossy()
        .into_owned();
    Some(root.join("lib/modules").join(release).join("modules.load"))
}

/// One listed module.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    /// `kernel/fs/squashfs/squashfs.ko`, as in the list.
    relative: String,
    /// `squashfs`.
    name: String,
    /// Its wave: 0 needs no listed module, n needs one of wave n-1.
    wave: usize,
}

/// The modules of `text` (a `modules.load`) in waves, by `dep_text` (the
/// `modules.dep` next to it, when there is one).
fn plan(text: &str, dep_text: Option<&str>) -> Vec<Listed> {
    let deps: HashMap<&str, Vec<&str>> = dep_text
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(m, d)| (m.trim(), d.split_whitespace().collect()))
                .collect()
        })
        .unwrap_or_default();
    let mut out: Vec<Listed> = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let wave = match deps.get(line) {
            // Its listed dependencies (modules.dep holds the closure; ones
            // not listed are built in or already loaded).
            Some(needs) => out
                .iter()
                .filter(|m| needs.contains(&m.relative.as_str()))
                .map(|m| m.wave + 1)
                .max()
                .unwrap_or(0),
            // Unknown to modules.dep: after everything before it.
            None => out.iter().map(|m| m.wave + 1).max().unwrap_or(0),
        };
        let name = Path::new(line)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".ko").next())
            .map_or_else(|| line.to_owned(), str::to_owned);
        out.push(Listed {
            relative: line.to_owned(),
            name,
            wave,
        });
    }
    out
}

/// Loads every module named in `list` (paths relative to its directory).
/// `Ok(None)` when there is no list.
///
/// # Errors
///
/// The list exists but cannot be read.
pub fn load_listed(list: &Path) -> Result<Option<ModulesLoaded>, String> {
    load_listed_until(list, &AtomicBool::new(false))
}

/// [`load_listed`], trying no further wave once `cancel` is set (a required
/// boot phase failed: the node stops, more modules help nobody). A module
/// being inserted is never interrupted.
///
/// # Errors
///
/// The list exists but cannot be read.
pub fn load_listed_until(
    list: &Path,
    cancel: &AtomicBool,
) -> Result<Option<ModulesLoaded>, String> {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", list.display())),
    };
    let dir = list.parent().unwrap_or(Path::new("/"));
    let dep_text = std::fs::read_to_string(dir.join("modules.dep")).ok();
    let modules = plan(&text, dep_text.as_deref());
    let waves = modules.iter().map(|m| m.wave + 1).max().unwrap_or(0);
    let parallel = concurrent_inserts();
    let mut results: Vec<Option<Result<(), Errno>>> = vec![None; modules.len()];
    for wave in 0..waves {
        if cancel.load(Ordering::Acquire) {
            break;
        }
        let now: Vec<usize> = (0..modules.len())
            .filter(|i| modules[*i].wave == wave)
            .collect();
        let done: Vec<(usize, Result<(), Errno>)> = match now.as_slice() {
            [one] => vec![(*one, load_one(&dir.join(&modules[*one].relative)))],
            many => many
                .chunks(parallel)
                .flat_map(|chunk| insert_together(dir, &modules, chunk))
                .collect(),
        };
        for (i, result) in done {
            results[i] = Some(result);
        }
    }
    let mut out = ModulesLoaded::default();
    for (module, result) in modules.iter().zip(results) {
        match result {
            Some(Ok(())) => out.loaded.push(module.name.clone()),
            Some(Err(Errno::EEXIST)) => out.present.push(module.name.clone()),
            Some(Err(e)) => out.failed.push(format!(
                "{}: {}",
                dir.join(&module.relative).display(),
                describe(e)
            )),
            None => out.not_tried.push(module.name.clone()),
        }
    }
    Ok(Some(out))
}

/// How many modules of one wave are inserted at once: one per CPU beyond
/// the one the rest of the boot (config, the worker's plugins) runs on. On a
/// two-CPU node (the VM test) that is one at a time: measured under QEMU,
/// six concurrent inserts next to the worker took the modules phase from
/// 0.97 s to 1.32 s (module loading's cross-CPU TLB and text-patching
/// synchronisation stalls the other CPU), while a real node's dozens of
/// CPUs take a whole wave at once.
fn concurrent_inserts() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1)
}

/// Inserts `chunk` (indices into `modules`), one thread each beyond the first.
fn insert_together(
    dir: &Path,
    modules: &[Listed],
    chunk: &[usize],
) -> Vec<(usize, Result<(), Errno>)> {
    if let [one] = chunk {
        return vec![(*one, load_one(&dir.join(&modules[*one].relative)))];
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunk
            .iter()
            .map(|i| {
                let path = dir.join(&modules[*i].relative);
                (*i, scope.spawn(move || load_one(&path)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(i, h)| (i, h.join().unwrap_or(Err(Errno::EINTR))))
            .collect()
    })
}

fn load_one(path: &Path) -> Result<(), Errno> {
    let file = File::open(path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))?;
    let no_params: &CStr = c"";
    finit_module(&file, no_params, ModuleInitFlags::empty())
}

fn describe(e: Errno) -> String {
    let hint = match e {
        Errno::ENOENT => "the file is not in the image",
        Errno::ENOEXEC => "not a module for this kernel (wrong kernel version or compressed)",
        Errno::EKEYREJECTED | Errno::EBADMSG => "signature rejected (module signing is enforced)",
        Errno::EPERM => "module loading is disabled (CAP_SYS_MODULE or kernel.modules_disabled)",
        Errno::ENOSYS => "this kernel was built without module support",
        Errno::EINTR => "the loading thread panicked",
        _ => "see dmesg",
    };
    format!("{e} ({hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_list_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_listed(&dir.path().join("modules.load")), Ok(None));
    }

    #[test]
    fn a_missing_or_bogus_module_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.load"),
            "# comment\nkernel/nosuch.ko\nbogus.ko\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("bogus.ko"), b"not an ELF module").unwrap();
        let out = load_listed(&dir.path().join("modules.load"))
            .unwrap()
            .unwrap();
        assert!(out.loaded.is_empty() && out.present.is_empty() && out.not_tried.is_empty());
        assert_eq!(out.failed.len(), 2);
        assert_eq!(
            out.failed[0],
            format!("{}/kernel/nosuch.ko: ENOENT: No such file or directory (the file is not in the image)", dir.path().display())
        );
        // ENOEXEC where the kernel takes modules; ENOSYS on one built without
        // (like the development VM). Real loading is proven in the VM test.
        let bogus = format!("{}/bogus.ko: ", dir.path().display());
        assert!(
            out.failed[1].starts_with(&format!("{bogus}ENOEXEC: Exec format error (not a module for this kernel"))
                || out.failed[1] == format!("{bogus}ENOSYS: Function not implemented (this kernel was built without module support)"),
            "{}",
            out.failed[1]
        );
    }

    /// The VM image's list and dependencies (Debian 6.1, mkinitramfs.sh).
    const VM_LIST: &str = "kernel/drivers/block/loop.ko\n\
        kernel/fs/squashfs/squashfs.ko\n\
        kernel/drivers/virtio/virtio.ko\n\
        kernel/drivers/virtio/virtio_ring.ko\n\
        kernel/drivers/virtio/virtio_pci_modern_dev.ko\n\
        kernel/drivers/virtio/virtio_pci_legacy_dev.ko\n\
        kernel/drivers/virtio/virtio_pci.ko\n\
        kernel/drivers/block/virtio_blk.ko\n";
    const VM_DEP: &str = "kernel/drivers/block/loop.ko:\n\
        kernel/fs/squashfs/squashfs.ko:\n\
        kernel/drivers/virtio/virtio.ko:\n\
        kernel/drivers/virtio/virtio_ring.ko:\n\
        kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
        kernel/drivers/virtio/virtio_pci_legacy_dev.ko:\n\
        kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
        kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n";

    fn waves(list: &[Listed]) -> Vec<(&str, usize)> {
        list.iter().map(|m| (m.name.as_str(), m.wave)).collect()
    }

    #[test]
    fn independent_modules_share_a_wave_and_dependencies_come_first() {
        let plan = plan(VM_LIST, Some(VM_DEP));
        assert_eq!(
            waves(&plan),
            [
                ("loop", 0),
                ("squashfs", 0),
                ("virtio", 0),
                ("virtio_ring", 0),
                ("virtio_pci_modern_dev", 0),
                ("virtio_pci_legacy_dev", 0),
                ("virtio_pci", 1),
                ("virtio_blk", 1),
            ]
        );
    }

    #[test]
    fn without_modules_dep_the_list_order_is_kept() {
        let plan = plan(VM_LIST, None);
        let got: Vec<usize> = plan.iter().map(|m| m.wave).collect();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        // A module modules.dep does not know waits for all before it.
        let partial = plan_with_unknown();
        assert_eq!(waves(&partial), [("a", 0), ("b", 0), ("c", 1)]);
    }

    fn plan_with_unknown() -> Vec<Listed> {
        plan("a.ko\nb.ko\nc.ko\n", Some("a.ko:\nb.ko:\n"))
    }

    #[test]
    fn modules_inserted_together_each_get_their_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let modules = plan("a.ko\nb.ko\n", Some("a.ko:\nb.ko:\n"));
        std::fs::write(dir.path().join("b.ko"), b"not an ELF module").unwrap();
        let got = insert_together(dir.path(), &modules, &[0, 1]);
        assert_eq!(got[0], (0, Err(Errno::ENOENT)));
        assert_eq!(got[1].0, 1);
        // ENOEXEC where the kernel takes modules, ENOSYS where it has none.
        assert!(
            matches!(got[1].1, Err(Errno::ENOEXEC) | Err(Errno::ENOSYS)),
            "{got:?}"
        );
        assert!(concurrent_inserts() >= 1);
    }

    #[test]
    fn a_cancelled_load_tries_nothing_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("modules.load"), "a.ko\nb.ko\n").unwrap();
        let out = load_listed_until(&dir.path().join("modules.load"), &AtomicBool::new(true))
            .unwrap()
            .unwrap();
        assert_eq!(out.not_tried, ["a", "b"]);
        assert!(out.loaded.is_empty() && out.failed.is_empty());
    }

    #[test]
    fn modules_of_one_wave_are_all_tried_and_reported_in_list_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.load"),
            "x/one.ko\nx/two.ko\nx/three.ko\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "x/one.ko:\nx/two.ko:\nx/three.ko: x/one.ko\n",
        )
        .unwrap();
        let out = load_listed(&dir.path().join("modules.load"))
            .unwrap()
            .unwrap();
        let names: Vec<&str> = out
            .failed
            .iter()
            .map(|f| f.split(": ").next().unwrap_or(""))
            .collect();
        let d = dir.path().display();
        assert_eq!(
            names,
            [
                format!("{d}/x/one.ko"),
                format!("{d}/x/two.ko"),
                format!("{d}/x/three.ko")
            ]
        );
    }
}
