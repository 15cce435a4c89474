//! Every bad plugin file the loader must survive, each with its specific
//! error. Cases where a wrong check would crash the process (truncated
//! files: SIGBUS inside dlopen) run in a child `nodeinit plugin inspect`, and
//! assert it exited normally with the error, not by a signal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hpc_node::{CgroupError, CgroupManager, ReadinessError, ReadinessGate};
use nodeinit::config::Sha256Pin;
use nodeinit::loader::{load_plugin, LoadFailure};
use nodeinit_plugin_api::{ErrorKind, HostServices, OpenError, PluginFault, ReadinessProvider};
use object::read::elf::{FileHeader, ProgramHeader};

struct Fixtures {
    null: PathBuf,
    panicky: PathBuf,
    noroot: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let built = nodeinit_tests::plugin_artifacts(&[
            "nodeinit-null",
            "nodeinit-panicky",
            "nodeinit-noroot",
        ]);
        Fixtures {
            null: built["nodeinit-null"].clone(),
            panicky: built["nodeinit-panicky"].clone(),
            noroot: built["nodeinit-noroot"].clone(),
        }
    })
}

/// A private 0700 directory with a copy of `src` named `name`, mode 0644.
fn staged(src: &Path, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join(name);
    fs::copy(src, &dst).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).unwrap();
    (dir, dst)
}

fn staged_bytes(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("libnodeinit_bad.so");
    fs::write(&dst, bytes).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).unwrap();
    (dir, dst)
}

fn failure(path: &Path) -> LoadFailure {
    match load_plugin(path, None) {
        Ok(p) => panic!("{} loaded as plugin {}", path.display(), p.library.name()),
        Err(e) => {
            assert_eq!(e.path, path);
            e.failure
        }
    }
}

/// Runs `nodeinit plugin inspect path` in a child; returns its stdout after
/// checking it exited with status 1 (not killed by a signal).
fn inspect_in_child(path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nodeinit"))
        .args(["plugin", "inspect"])
        .arg(path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        None,
        "inspect was killed by a signal: {out:?}"
    );
    assert_eq!(out.status.code(), Some(1), "inspect should refuse: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// End offset of the last PT_LOAD segment of an ELF file.
fn last_pt_load_end(bytes: &[u8]) -> u64 {
    let header = object::elf::FileHeader64::<object::Endianness>::parse(bytes).unwrap();
    let endian = header.endian().unwrap();
    header
        .program_headers(endian, bytes)
        .unwrap()
        .iter()
        .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
        .map(|p| p.p_offset(endian) + p.p_filesz(endian))
        .max()
        .unwrap()
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = failure(&dir.path().join("libnodeinit_nothere.so"));
    assert_eq!(f, LoadFailure::Missing);
    assert_eq!(
        f.to_string(),
        "no such file: check the plugin path or [host].plugin_dir"
    );
}

#[test]
fn directory() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("libnodeinit_dir.so");
    fs::create_dir(&sub).unwrap();
    assert_eq!(failure(&sub), LoadFailure::NotRegular("a directory".into()));
}

#[test]
fn empty_file() {
    let (_d, p) = staged_bytes(b"");
    assert_eq!(failure(&p), LoadFailure::NotElf("the file is empty".into()));
}

#[test]
fn text_file() {
    let (_d, p) = staged_bytes(b"[host]\nplugin_dir = \"/usr/lib\"\n");
    let f = failure(&p);
    assert!(
        matches!(&f, LoadFailure::NotElf(why) if why.starts_with("not a 64-bit ELF file (31 bytes")),
        "{f:?}"
    );
}

#[test]
fn random_bytes() {
    // Deterministic pseudo-random bytes (xorshift), 64 KiB.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let (_d, p) = staged_bytes(&bytes);
    let f = failure(&p);
    assert!(
        matches!(&f, LoadFailure::NotElf(why) if why.starts_with("not a 64-bit ELF file")),
        "{f:?}"
    );
}

fn truncated_case(keep: impl Fn(&[u8]) -> usize, what: &str) {
    let bytes = fs::read(&fixtures().null).unwrap();
    let n = keep(&bytes);
    let (_d, p) = staged_bytes(&bytes[..n]);
    let f = failure(&p);
    assert!(
        matches!(&f, LoadFailure::Truncated(why) if why.contains(what) && why.contains(&format!("the file has {n} bytes"))),
        "{f:?}"
    );
    let report = inspect_in_child(&p);
    assert!(
        report.contains("loadable:   no: truncated or corrupt"),
        "{report}"
    );
}

#[test]
fn truncated_at_4k() {
    truncated_case(|_| 4096, "PT_LOAD");
}

#[test]
fn truncated_at_half() {
    // Half of a debug build keeps every segment (debug info is at the end)
    // but loses the section header table.
    truncated_case(|b| b.len() / 2, "section header table");
}

#[test]
fn truncated_one_byte_short_of_last_pt_load() {
    truncated_case(
        |b| usize::try_from(last_pt_load_end(b)).unwrap() - 1,
        "PT_LOAD",
    );
}

#[test]
fn elf_for_another_machine() {
    let mut bytes = fs::read(&fixtures().null).unwrap();
    bytes[18..20].copy_from_slice(&object::elf::EM_AARCH64.to_le_bytes());
    let (_d, p) = staged_bytes(&bytes);
    let f = failure(&p);
    assert_eq!(f, LoadFailure::WrongMachine(object::elf::EM_AARCH64));
    assert!(f
        .to_string()
        .starts_with("ELF built for another machine (e_machine 183)"));
    assert!(inspect_in_child(&p).contains("another machine"));
}

#[test]
fn pie_executable() {
    let (_d, p) = staged(Path::new("/bin/true"), "libnodeinit_true.so");
    assert_eq!(failure(&p), LoadFailure::Executable);
    assert!(inspect_in_child(&p).contains("an executable (has PT_INTERP)"));
}

#[test]
fn cdylib_without_root_module() {
    let (_d, p) = staged(&fixtures().noroot, "libnodeinit_noroot.so");
    let f = failure(&p);
    assert!(
        matches!(&f, LoadFailure::Library(OpenError::NotAPlugin(why)) if why.contains("NODEINIT_PLUGIN_INTERFACE not found")),
        "{f:?}"
    );
}

#[test]
fn symlink_to_valid_plugin_is_refused() {
    let (dir, real) = staged(&fixtures().null, "libnodeinit_null.so");
    let link = dir.path().join("libnodeinit_link.so");
    symlink(&real, &link).unwrap();
    assert_eq!(failure(&link), LoadFailure::Symlink);
    // The real file itself loads.
    assert_eq!(load_plugin(&real, None).unwrap().library.name(), "null");
}

#[test]
fn world_writable_plugin_file() {
    let (_d, p) = staged(&fixtures().null, "libnodeinit_null.so");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o646)).unwrap();
    assert_eq!(
        failure(&p),
        LoadFailure::Unsafe("file is world-writable (mode 646): chmod o-w it".into())
    );
}

#[test]
fn group_writable_plugin_directory() {
    let (d, p) = staged(&fixtures().null, "libnodeinit_null.so");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o770)).unwrap();
    assert_eq!(
        failure(&p),
        LoadFailure::Unsafe("directory is group-writable (mode 770): chmod g-w it".into())
    );
}

#[test]
fn sha256_pin_mismatch_and_match() {
    let (_d, p) = staged(&fixtures().null, "libnodeinit_null.so");
    let wrong = Sha256Pin::try_from("0".repeat(64)).unwrap();
    let actual = nodeinit::loader::sha256_hex(&fs::File::open(&p).unwrap()).unwrap();
    match load_plugin(&p, Some(&wrong)) {
        Err(e) => assert_eq!(
            e.failure,
            LoadFailure::PinMismatch {
                expected: "0".repeat(64),
                actual: actual.clone()
            }
        ),
        Ok(_) => panic!("pin mismatch loaded"),
    }
    let right = Sha256Pin::try_from(actual.clone()).unwrap();
    assert_eq!(
        load_plugin(&p, Some(&right)).unwrap().sha256.as_deref(),
        Some(actual.as_str())
    );
}

#[test]
fn two_plugins_in_one_process_answer_with_their_own_names() {
    let null = load_plugin(&fixtures().null, None).unwrap();
    let panicky = load_plugin(&fixtures().panicky, None).unwrap();
    assert_eq!(null.library.name(), "null");
    assert_eq!(panicky.library.name(), "panicky");
    // And their backends are really theirs: null's readiness obeys signal_ready,
    // panicky's (told nothing) is never ready.
    let a = null
        .library
        .readiness(HostServices::new("null", None), "{}")
        .unwrap();
    let b = panicky
        .library
        .readiness(HostServices::new("panicky", None), "{}")
        .unwrap();
    a.signal_ready("n1").unwrap();
    assert!(a.is_ready());
    assert!(!b.is_ready());
}

#[test]
fn constructor_panic_is_an_error_and_the_host_lives() {
    let lib = load_plugin(&fixtures().panicky, None).unwrap().library;
    let err = lib
        .cgroup(
            HostServices::new("panicky", None),
            r#"{"panic_in":["constructor"]}"#,
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PANICKED);
    assert_eq!(
        err.message.as_str(),
        "cgroup constructor in plugin panicky: panicky was told to panic in constructor"
    );
    assert_eq!(
        err.field("panic"),
        Some("panicky was told to panic in constructor")
    );
}

#[test]
fn method_panic_is_an_error_and_the_backend_keeps_working() {
    let lib = load_plugin(&fixtures().panicky, None).unwrap().library;
    let cg = lib
        .cgroup(
            HostServices::new("panicky", None),
            r#"{"panic_in":["create_hierarchy"]}"#,
        )
        .unwrap();
    let CgroupError::Io(io) = cg.create_hierarchy().unwrap_err() else {
        panic!("not Io")
    };
    let fault = PluginFault::find(&io).unwrap();
    assert_eq!(fault.kind, ErrorKind::PANICKED);
    assert_eq!(io.to_string(), "plugin panicked: create_hierarchy in plugin panicky: panicky was told to panic in create_hierarchy");
    // Other methods still answer.
    assert!(cg
        .is_scope_empty(&hpc_node::CgroupHandle { path: "x".into() })
        .unwrap());

    let rd = lib
        .readiness(
            HostServices::new("panicky", None),
            r#"{"panic_in":["signal_ready"]}"#,
        )
        .unwrap();
    let err = rd.signal_ready("n").unwrap_err();
    assert!(
        matches!(&err, ReadinessError::BootFailed { reason } if reason.contains("panicky was told to panic in signal_ready")),
        "{err:?}"
    );
}

#[test]
fn unknown_option_names_plugin_and_key() {
    let lib = load_plugin(&fixtures().null, None).unwrap().library;
    let err = lib
        .mount(HostServices::new("null", None), r#"{"fial":["x"]}"#)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::INVALID_OPTIONS);
    assert!(
        err.message.starts_with(
            "plugin null: invalid options for the mount backend: unknown field `fial`"
        ),
        "{}",
        err.message
    );
}

#[test]
fn missing_backend_kind_is_not_provided() {
    let lib = load_plugin(&fixtures().panicky, None).unwrap().library;
    let err = lib
        .mount(HostServices::new("panicky", None), "{}")
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NOT_PROVIDED);
    assert_eq!(
        err.message.as_str(),
        "plugin panicky provides no mount backend (it provides: cgroup, readiness)"
    );
}

/// Issue 12, item 9, static form: `<tmp>/w` world-writable without the sticky
/// bit, `w/link -> ../good`, the plugin in the root-owned 0755 `good`. Before
/// the fix it loaded (only the immediate parent was checked, by path, after
/// the open): 1 of 1. After it the walk refuses the writable ancestor.
#[test]
fn plugin_path_through_a_world_writable_directory_is_refused() {
    let (base, real) = staged(&fixtures().null, "libnodeinit_null.so");
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let good = base.path().join("good");
    fs::create_dir(&good).unwrap();
    fs::rename(&real, good.join("libnodeinit_null.so")).unwrap();
    let writable = base.path().join("w");
    fs::create_dir(&writable).unwrap();
    fs::set_permissions(&writable, fs::Permissions::from_mode(0o777)).unwrap();
    symlink("../good", writable.join("link")).unwrap();
    let through = writable.join("link/libnodeinit_null.so");
    assert_eq!(
        failure(&through),
        LoadFailure::Unsafe(format!(
            "ancestor directory {} is world-writable without the sticky bit (mode 777): chmod o-w it",
            writable.display()
        ))
    );
    // Sticky does not make a link in it trustworthy: whoever owns the link
    // (in real life the other user) may repoint it.
    fs::set_permissions(&writable, fs::Permissions::from_mode(0o1777)).unwrap();
    assert_eq!(
        failure(&through),
        LoadFailure::Unsafe(format!(
            "path component {} is a symbolic link in {}, which others may write (mode 1777); point the config at the real path",
            writable.join("link").display(),
            writable.display()
        ))
    );
    // A link in a directory nobody else may write is followed (merged /usr).
    fs::set_permissions(&writable, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(load_plugin(&through, None).unwrap().library.name(), "null");
}

/// Issue 12, item 9, racing form: a thread exchanges (`RENAME_EXCHANGE`)
/// `w/d` — a root-owned 0755 directory holding the null plugin — with `w/x`, a
/// world-writable directory holding the panicky plugin, while the loader loads
/// `w/d/libnodeinit_plugin.so` 400 times; `w` itself is sticky and
/// world-writable like `/tmp`, 200 directories deep. Before the fix the file
/// was opened through one directory and the other one checked by path: the
/// plugin from the world-writable directory was loaded 4 and 16 of 400 times
/// (two runs; 0 of 400 with a shallow path, the window being narrower).
/// After the fix the directory checked is the descriptor the file is opened
/// from: never, and every refusal names that directory's mode.
#[test]
fn rename_exchange_never_loads_from_a_writable_directory() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const LOADS: usize = 400;
    const DEPTH: usize = 200;
    let (base, _) = staged(&fixtures().null, "unused");
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // A deep path: each lookup walks it again, which widens the old code's
    // window between opening through `d` and checking `d` by name.
    let deep = (0..DEPTH).fold(base.path().to_path_buf(), |p, _| p.join("p"));
    fs::create_dir_all(&deep).unwrap();
    let w = deep.join("w");
    fs::create_dir(&w).unwrap();
    fs::set_permissions(&w, fs::Permissions::from_mode(0o1777)).unwrap();
    let (d, x) = (w.join("d"), w.join("x"));
    for (dir, src, mode) in [
        (&d, &fixtures().null, 0o755),
        (&x, &fixtures().panicky, 0o777),
    ] {
        fs::create_dir(dir).unwrap();
        let dst = dir.join("libnodeinit_plugin.so");
        fs::copy(src, &dst).unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, d, x) = (std::sync::Arc::clone(&stop), d.clone(), x.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            for _ in 0..100_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if nix::fcntl::renameat2(
                    None,
                    &d,
                    None,
                    &x,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .is_ok()
                {
                    swaps += 1;
                }
                // Without a pause the lookups nearly always see one state.
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
            swaps
        })
    };
    let plugin = d.join("libnodeinit_plugin.so");
    let (mut from_writable, mut good, mut refused) = (0, 0, 0);
    let mut unexpected = Vec::new();
    for _ in 0..LOADS {
        match load_plugin(&plugin, None) {
            Ok(loaded) if loaded.library.name() == "panicky" => from_writable += 1,
            Ok(_) => good += 1,
            Err(e) => {
                refused += 1;
                let expected = LoadFailure::Unsafe(
                    "directory is world-writable (mode 777): chmod o-w it".to_owned(),
                );
                if e.failure != expected {
                    unexpected.push(e.to_string());
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = attacker.join().unwrap();
    eprintln!("plugin dir race: {swaps} swaps, {good} good loads, {refused} refused, {from_writable} from the world-writable directory");
    assert!(swaps > 0);
    assert_eq!(
        from_writable, 0,
        "loaded from the writable directory {from_writable} of 40 times"
    );
    assert!(unexpected.is_empty(), "{unexpected:?}");
}
