//! Structure-aware fuzzing of the config loader on the stable toolchain
//! (issue 12: "fuzz the config parser"): whatever bytes a config file holds,
//! the loader returns a config or a `ConfigError` — it never panics — and
//! every error names the file and carries no raw control character, so a
//! hostile config cannot forge console lines through an error message.
//!
//! Two engines, both deterministic per seed:
//! - proptest over arbitrary bytes and over TOML-shaped text;
//! - a mutation loop over a seed corpus of real configs (`config/*.toml`,
//!   the built-in default, and the configs the tests and the VM use), run for
//!   `NODEINIT_FUZZ_SECONDS` seconds (default 3; CI sets 60). Every input that
//!   ever broke a property is kept in `regressions()` below.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodeinit::config::{load_from_bytes, ConfigError, BUILTIN_CONFIG};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng};

const FILE: &str = "/etc/nodeinit/fuzz.toml";

/// The properties every outcome must have.
fn check(bytes: &[u8]) {
    let outcome = load_from_bytes(bytes, Path::new(FILE));
    if let Err(e) = outcome {
        let text = e.to_string();
        assert!(
            text.starts_with(FILE),
            "error does not name the file first: {text:?} for input {:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            !text.chars().any(|c| c.is_control()),
            "error carries a raw control character: {text:?} for input {:?}",
            String::from_utf8_lossy(bytes)
        );
        if let ConfigError::Invalid { location, .. } | ConfigError::NotUtf8 { location, .. } = &e {
            assert!(location.line >= 1, "line 0 in {text:?}");
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
            assert!(
                location.line <= lines,
                "line {} beyond the file's {lines} lines: {text:?}",
                location.line
            );
        }
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seeds: Vec<Vec<u8>> = [
        "config/pact.toml",
        "config/lattice.toml",
        "config/sandbox.toml",
    ]
    .iter()
    .map(|p| std::fs::read(repo.join(p)).expect("seed config is readable"))
    .collect();
    seeds.push(BUILTIN_CONFIG.as_bytes().to_vec());
    seeds.push(
        br#"[host]
plugin_dir = "/usr/lib/nodeinit/plugins"
on_failure = "poweroff"
node_id = "nid000042"
[plugins.cgroup]
path = "cgroupfs"
required = true
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[plugins.cgroup.options]
controllers = ["cpu", "memory", "io", "pids"]
[plugins.mount]
path = "/usr/lib/nodeinit/plugins/libnodeinit_squashfs.so"
[plugins.mount.options]
image_dirs = ["/images"]
[boot]
mounts = ["base.sqfs"]
[handoff]
agent = "command"
exec = "/usr/bin/agent"
args = ["--mode", "supervise"]
mode = "supervise"
grace_secs = 5
[handoff.socket]
group = 990
uids = [990]
gids = [990]
"#
        .to_vec(),
    );
    seeds
}

/// Tokens that steer mutations towards interesting TOML.
const DICTIONARY: &[&[u8]] = &[
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"=",
    b"\"",
    b"'",
    b"'''",
    b"\"\"\"",
    b"\n",
    b"\r\n",
    b"#",
    b",",
    b"{",
    b"}",
    b".",
    b"\\u001b",
    b"\\u0000",
    b"\x1b[2J",
    b"\x1b]0;x\x07",
    b"\r",
    b"\t",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xae",
    b"[host]",
    b"[plugins.cgroup]",
    b"[plugins.bogus]",
    b"[handoff]",
    b"[boot]",
    b"path = ",
    b"required = ",
    b"on_failure = ",
    b"mode = ",
    b"agent = ",
    b"exec = ",
    b"args = ",
    b"mounts = ",
    b"sha256 = ",
    b"1e999",
    b"-1",
    b"18446744073709551616",
    b"true",
    b"1979-05-27T07:32:00Z",
    b"\"../../etc/passwd\"",
    b"\"relative\"",
    b"inf",
    b"nan",
];

fn mutate(rng: &mut TestRng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.random_range(0..4) {
        let len = data.len().max(1);
        let at = rng.random_range(0..len).min(data.len());
        match rng.random_range(0..6) {
            0 => {
                if let Some(b) = data.get_mut(at) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
            1 => {
                let end = (at + rng.random_range(1..32)).min(data.len());
                data.drain(at..end);
            }
            2 => {
                let token = DICTIONARY[rng.random_range(0..DICTIONARY.len())];
                data.splice(at..at, token.iter().copied());
            }
            3 => {
                // Duplicate a line: duplicate keys and tables.
                let start = data[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = data[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |i| at + i + 1);
                let line = data[start..end].to_vec();
                data.splice(end..end, line);
            }
            4 => {
                let byte = rng.random::<u8>();
                data.insert(at, byte);
            }
            _ => {
                // Truncate: a file cut short by a full disk.
                data.truncate(at);
            }
        }
    }
    data
}

/// Inputs that once broke a property, kept as regression tests.
fn regressions() -> Vec<&'static [u8]> {
    vec![
        // An unknown key spelled with an escape: serde's message echoed it raw.
        b"[host]\n\"evil\\u001b[2Jkey\" = 1\n",
        b"[plugins.\"x\\u001b]0;t\\u0007\"]\npath = \"a\"\n",
        b"[handoff]\nagent = \"pa\\rct\"\n",
        b"[host]\nplugin_dir = \"/x\\u001b[31m\"\n",
    ]
}

#[test]
fn regression_inputs_keep_their_properties() {
    for input in regressions() {
        check(input);
    }
}

#[test]
fn mutated_real_configs_never_panic_and_errors_stay_clean() {
    let secs = std::env::var("NODEINIT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(3);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let seeds = corpus();
    for seed in &seeds {
        check(seed);
    }
    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut cases = 0u64;
    while Instant::now() < deadline {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(&mut rng, seed);
        check(&input);
        cases += 1;
    }
    eprintln!("config fuzz: {cases} mutated configs in {secs} s");
    assert!(cases > 0, "the fuzz loop ran no case");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn toml_shaped_text(text in r#"(\[(host|boot|handoff|plugins\.(cgroup|mount|namespace|readiness|x))\]\n(([a-z_]{1,12}|"[^"\n]{0,8}") = ("[^"\n]{0,16}"|-?[0-9]{1,20}|true|\[("[a-z]{0,4}",?){0,3}\])\n){0,4}){0,5}"#) {
        check(text.as_bytes());
    }
}

#[test]
fn corpus_files_exist() {
    // The seeds are real files: a renamed example must not silently shrink the corpus.
    let repo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for p in [
        "config/pact.toml",
        "config/lattice.toml",
        "config/sandbox.toml",
    ] {
        assert!(repo.join(p).is_file(), "{p} is missing");
    }
}
