//! Property tests for the message decoder: whatever bytes a peer sends, the
//! decoder returns a message or a `DecodeError` — it never panics — and
//! valid requests survive an encode/decode round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hpc_node::{NamespaceRequest, NamespaceType};
use nodeinit_handoff::protocol::{decode, encode, DecodeError, Message, MAX_MESSAGE_BYTES};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn json_like_text_never_panics(text in r#"\{("(v|type|allocation_id|namespaces|uenv_image|kind|message)":(1|2|-1|1e999|null|true|"[a-z_./]{0,12}"|\[("Pid"|"Net"|"Mount"|1|null)?(,"Pid")?\]|\{\}),?){0,6}\}"#) {
        let _ = decode(text.as_bytes());
    }

    #[test]
    fn valid_requests_round_trip(
        id in "[A-Za-z0-9][A-Za-z0-9._-]{0,127}",
        namespaces in proptest::sample::subsequence(vec![NamespaceType::Pid, NamespaceType::Net, NamespaceType::Mount], 1..=3),
        image in proptest::option::of("[a-z0-9-]{1,32}\\.sqfs"),
    ) {
        let uenv_image = if namespaces.contains(&NamespaceType::Mount) { image } else { None };
        let request = NamespaceRequest { allocation_id: id.clone(), namespaces: namespaces.clone(), uenv_image: uenv_image.clone() };
        match decode(&encode(&Message::NamespaceRequest(request.into()))) {
            Ok(Message::NamespaceRequest(nodeinit_handoff::protocol::WireRequest { request: back, cgroup_scope: None })) => {
                prop_assert_eq!(back.allocation_id, id);
                prop_assert_eq!(back.namespaces, namespaces);
                prop_assert_eq!(back.uenv_image, uenv_image);
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
