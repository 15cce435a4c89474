//! Fuzzing of the message decoder on the stable toolchain: coverage-free but
//! structure-aware. Inputs are arbitrary bytes, JSON-shaped text, and
//! mutations (bit flips, insertions, deletions, splices, token swaps with
//! hostile values, deep nesting) of a kept seed corpus of real messages
//! (`tests/corpus/*.json`). Properties: the decoder never panics; whatever it
//! accepts re-encodes to bytes it accepts again as the same message.
//!
//! `mutated_corpus_for_a_bounded_time` runs for `NODEINIT_FUZZ_SECONDS`
//! (default 10; CI sets 60). Every crash found becomes a regression test at
//! the end of this file (none so far: serde_json's recursion limit already
//! stops deep nesting, which is pinned below).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hpc_node::{NamespaceRequest, NamespaceType};
use nodeinit_handoff::protocol::{
    decode, encode, DecodeError, Message, WireRequest, MAX_MESSAGE_BYTES,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn corpus() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let mut bytes = std::fs::read(e.unwrap().path()).unwrap();
            while bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            bytes
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 8, "seed corpus missing in {}", dir.display());
    // All but the hostile seed are valid messages.
    let valid = seeds.iter().filter(|s| decode(s).is_ok()).count();
    assert_eq!(valid, seeds.len() - 1, "a seed message no longer decodes");
    seeds
}

/// Values that break parsers and validators.
const HOSTILE: &[&str] = &[
    "null",
    "true",
    "0",
    "-1",
    "1e999",
    "18446744073709551616",
    "1.5",
    "\"\"",
    "[]",
    "{}",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\u001b[2J\"",
    "\"../../etc\"",
    "\"a/b\"",
    "[\"Pid\",\"Pid\"]",
    "[\"Uts\"]",
    "\"x\"",
    "2",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Splice(usize, usize, usize),
    Token(usize, usize),
    Nest(usize),
}

fn apply(seed: &[u8], other: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(at, bit) => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= 1 << (bit % 8);
                }
            }
            Mutation::Insert(at, b) => bytes.insert((at % len).min(bytes.len()), b),
            Mutation::Delete(at, n) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n % 16).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Splice(at, from, n) => {
                let at = (at % len).min(bytes.len());
                let from = from % other.len().max(1);
                let end = (from + n % 64).min(other.len());
                let chunk = other[from.min(end)..end].to_vec();
                bytes.splice(at..at, chunk);
            }
            Mutation::Token(at, which) => {
                // Replace the JSON value after the `at`-th colon.
                let colons: Vec<usize> = bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b':')
                    .map(|(i, _)| i)
                    .collect();
                if let Some(&c) = colons.get(at % colons.len().max(1)) {
                    let end = bytes[c + 1..]
                        .iter()
                        .position(|b| matches!(b, b',' | b'}'))
                        .map_or(bytes.len(), |p| c + 1 + p);
                    bytes.splice(c + 1..end, HOSTILE[which % HOSTILE.len()].bytes());
                }
            }
            Mutation::Nest(depth) => {
                let depth = depth % 300;
                let mut nested = vec![b'['; depth];
                nested.extend(vec![b']'; depth]);
                let at = bytes.iter().position(|b| *b == b':').map_or(0, |p| p + 1);
                bytes.splice(at..at, nested.into_iter().chain(*b","));
            }
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(a, f, n)| Mutation::Splice(a, f, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, w)| Mutation::Token(a, w)),
        any::<usize>().prop_map(Mutation::Nest),
    ]
}

/// The properties every input must satisfy.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(message) = decode(bytes) {
        let again = encode(&message);
        match decode(&again) {
            Ok(back) => {
                prop_assert_eq!(back.type_name(), message.type_name());
                prop_assert_eq!(encode(&back), again, "encoding is stable");
            }
            Err(e) => prop_assert!(
                false,
                "accepted {:?} but not its re-encoding: {}",
                String::from_utf8_lossy(bytes),
                e
            ),
        }
    }
    Ok(())
}

#[test]
fn mutated_corpus_for_a_bounded_time() {
    let seeds = corpus();
    let seconds: u64 = std::env::var("NODEINIT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let n = seeds.len();
    let strategy = (0..n, 0..n, proptest::collection::vec(mutation(), 1..8));
    let inputs = std::cell::Cell::new(0u64);
    while Instant::now() < deadline {
        // A fresh runner each round: a new random seed, a new batch of cases.
        let mut runner = TestRunner::new(Config {
            cases: 2000,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strategy, |(s, o, mutations)| {
                inputs.set(inputs.get() + 1);
                check(&apply(&seeds[s], &seeds[o], &mutations))
            })
            .unwrap();
    }
    eprintln!(
        "decoder fuzz: {} mutated inputs in {seconds} s",
        inputs.get()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check(&bytes)?;
    }

    #[test]
    fn json_like_text_never_panics(text in r#"\{("(v|type|allocation_id|namespaces|uenv_image|cgroup_scope|kind|message)":(1|2|-1|1e999|null|true|"[a-z_./]{0,12}"|\[("Pid"|"Net"|"Mount"|1|null)?(,"Pid")?\]|\{\}),?){0,7}\}"#) {
        check(text.as_bytes())?;
    }

    #[test]
    fn valid_requests_round_trip(
        id in "[A-Za-z0-9][A-Za-z0-9._-]{0,127}",
        namespaces in proptest::sample::subsequence(vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount], 1..=3),
        image in proptest::option::of("[a-z0-9-]{1,32}\\.sqfs"),
        scope in proptest::option::of("[a-z][a-z0-9.-]{0,20}(/[a-z0-9][a-z0-9.@:-]{0,20}){0,3}"),
    ) {
        let uenv_image = if namespaces.contains(&NamespaceType::Mount) { image } else { None };
        let request = NamespaceRequest { allocation_id: id.clone(), namespaces: namespaces.clone(), uenv_image: uenv_image.clone() };
        let cgroup_scope = scope.as_deref().map(|s| nodeinit_handoff::protocol::CgroupScope::parse(s).unwrap());
        match decode(&encode(&Message::NamespaceRequest(WireRequest { request, cgroup_scope: cgroup_scope.clone() }))) {
            Ok(Message::NamespaceRequest(WireRequest { request: back, cgroup_scope: back_scope })) => {
                prop_assert_eq!(back.allocation_id, id);
                prop_assert_eq!(back.namespaces, namespaces);
                prop_assert_eq!(back.uenv_image, uenv_image);
                prop_assert_eq!(back_scope, cgroup_scope);
            }
            other => prop_assert!(false, "round trip failed: {:?}", other),
        }
    }
}

#[test]
fn oversized_input_is_rejected_by_size_before_parsing() {
    let bytes = vec![b'{'; MAX_MESSAGE_BYTES + 1];
    assert_eq!(
        decode(&bytes).unwrap_err(),
        DecodeError::TooLarge {
            len: MAX_MESSAGE_BYTES + 1
        }
    );
    assert_eq!(decode(b"").unwrap_err(), DecodeError::Empty);
}

/// Regression: nesting deeper than serde_json's recursion limit is an
/// error, not a stack overflow (a 64 KiB message can nest 32768 deep).
#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let depth = MAX_MESSAGE_BYTES / 2 - 64;
    let mut bytes = br#"{"v":1,"type":"namespace_request","allocation_id":"#.to_vec();
    bytes.extend(vec![b'['; depth]);
    bytes.extend(vec![b']'; depth]);
    bytes.push(b'}');
    match decode(&bytes) {
        Err(DecodeError::InvalidJson { reason }) => {
            assert!(reason.contains("recursion limit"), "{reason}")
        }
        other => panic!("expected a recursion-limit error, got {other:?}"),
    }
}

/// A `cgroup_scope` of the wrong type or shape is `invalid_request` with its rule.
#[test]
fn bad_cgroup_scopes_name_the_rule() {
    let with = |scope: &str| {
        format!(
            r#"{{"v":1,"type":"namespace_request","allocation_id":"a","namespaces":["Pid"],"cgroup_scope":{scope}}}"#
        )
    };
    assert_eq!(
        decode(with("7").as_bytes()).unwrap_err(),
        DecodeError::CgroupScopeNotAString
    );
    for bad in [r#""../etc""#, r#""/workload.slice""#, r#""a//b""#, r#""""#] {
        let err = decode(with(bad).as_bytes()).unwrap_err();
        assert!(
            matches!(err, DecodeError::BadCgroupScope(_)),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("cgroup_scope"), "{err}");
    }
    assert!(decode(with("null").as_bytes()).is_ok());
}
