//! Fixture plugin `faulty`: a cgroup and a readiness backend that commit a
//! real process-level fault on demand — the faults `catch_unwind` cannot
//! contain, which only the keeper/worker split keeps away from PID 1.
//!
//! Options (`[plugins.<kind>.options]`):
//! - `fault`: `segv` (a write through a null pointer), `abort`
//!   (`std::process::abort`), `exit` (`std::process::exit(3)`), `hang` (an
//!   endless loop that never returns), `stack_overflow` (unbounded
//!   recursion), `alloc_forever` (allocate and touch memory until the
//!   kernel says no), `panic` (a Rust panic, which the ABI layer contains).
//! - `at`: `"constructor"` or a method name (`create_hierarchy`,
//!   `signal_ready`, ...). Everything else succeeds trivially.
//!
//! With `NODEINIT_FAULTY_SEGV_ON_LOAD=1` in the environment the library's
//! ELF initialiser segfaults while `dlopen` runs it — before any nodeinit
//! code of the plugin: what `plugin inspect` must survive.
//!
//! The version string is `FAULTY_VERSION` at build time when set (so a test
//! can build a "new version" of the same plugin), else the crate version.
//! Test use only: never install it on a node.

use std::time::Duration;

use nodeinit_plugin_api::HostServices;
use nodeinit_tripwire::{Tripped, Tripwire};

/// The fault to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGSEGV: a write through a null pointer.
    Segv,
    /// SIGABRT: `std::process::abort()`.
    Abort,
    /// `std::process::exit(3)`.
    Exit,
    /// Never return.
    Hang,
    /// Recurse into the stack guard page (SIGSEGV).
    StackOverflow,
    /// Allocate and touch memory until allocation fails or the OOM killer strikes.
    AllocForever,
    /// A Rust panic (contained by the ABI layer: an error, not a crash).
    Panic,
}

/// Options.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultyOptions {
    /// Which fault.
    pub fault: Fault,
    /// Where: `constructor` or a method name.
    pub at: String,
}

/// Commits its fault where told.
#[derive(Debug)]
pub struct Faulty {
    fault: Fault,
    at: String,
}

#[inline(never)]
fn recurse(depth: u64, sink: &mut [u8; 256]) -> u64 {
    // Never true at run time; it keeps the recursion formally bounded.
    if depth == u64::MAX {
        return 0;
    }
    // The buffer keeps each frame large and the call not a tail call.
    let mut local = [0u8; 256];
    local[(depth % 256) as usize] = sink[(depth % 256) as usize].wrapping_add(1);
    std::hint::black_box(&mut local);
    recurse(depth + 1, &mut local) + u64::from(local[0])
}

fn commit(fault: Fault, method: &str) {
    tracing::warn!(target: "nodeinit_faulty", ?fault, method, "faulty commits its fault");
    match fault {
        Fault::Segv => {
            let null: *mut u8 = std::hint::black_box(std::ptr::null_mut());
            // SAFETY: deliberately not safe: this fixture exists to segfault.
            unsafe { std::ptr::write_volatile(null, 1) };
        }
        Fault::Abort => std::process::abort(),
        Fault::Exit => std::process::exit(3),
        Fault::Hang => loop {
            std::hint::spin_loop();
            std::thread::sleep(Duration::from_millis(50));
        },
        Fault::StackOverflow => {
            let mut seed = [0u8; 256];
            std::hint::black_box(recurse(0, &mut seed));
        }
        Fault::AllocForever => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touched, so the pages are real (no overcommit illusion).
                hoard.push(vec![0x5a; 64 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Fault::Panic => panic!("faulty was told to panic in {method}"),
    }
}

/// Runs from `.init_array` when the library is loaded.
extern "C" fn on_load() {
    if std::env::var_os("NODEINIT_FAULTY_SEGV_ON_LOAD").is_some() {
        commit(Fault::Segv, "load");
    }
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

impl Tripwire for Faulty {
    fn trip(&self, method: &str) {
        if self.at == method {
            commit(self.fault, method);
        }
    }
    fn ready(&self) -> bool {
        true
    }
}

impl Faulty {
    /// Plugin constructor (both kinds).
    ///
    /// # Errors
    ///
    /// Never; it faults instead when told to.
    pub fn from_plugin(
        _host: &HostServices,
        options: FaultyOptions,
    ) -> Result<Tripped<Self>, String> {
        let me = Self {
            fault: options.fault,
            at: options.at,
        };
        me.trip("constructor");
        Ok(Tripped(me))
    }
}

nodeinit_plugin_api::export_plugin! {
    name: "faulty",
    version: match option_env!("FAULTY_VERSION") { Some(v) => v, None => env!("CARGO_PKG_VERSION") },
    cgroup: Faulty::from_plugin,
    readiness: Faulty::from_plugin,
}
