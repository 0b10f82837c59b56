//! Property tests: envelopes round-trip, and no single-byte change of a signed envelope passes.

use proptest::prelude::*;
use serde_json::{Value, json};
use stemedb_core::{Envelope, check, sign, signing_key_from_seed};

fn segment() -> impl Strategy<Value = String> {
    // Every allowed segment but the two dot segments, which the rules refuse.
    "[A-Za-z0-9._~:@+-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn object() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

prop_compose! {
    fn signed_envelope()(
        seed in any::<[u8; 32]>(),
        segs in prop::collection::vec(segment(), 1..5),
        predicate in "[a-z][a-z0-9._/-]{0,20}",
        object in object(),
        ts in 0u64..(1 << 53),
        confidence in 0.0f64..=1.0,
    ) -> Vec<u8> {
        let key = signing_key_from_seed(&seed);
        let statement = json!({
            "v": 1, "subject": segs.join("/"), "predicate": predicate, "object": object,
            "agent": hex::encode(key.verifying_key().as_bytes()), "ts": ts,
            "confidence": confidence,
        });
        let payload = serde_json::to_vec(&statement).unwrap_or_default();
        match sign(&key, payload) {
            Ok(v) => v.envelope().encode(),
            Err(e) => panic!("generated statement must be valid: {e}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn encode_decode_round_trip(bytes in signed_envelope()) {
        let env = Envelope::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(env.encode(), bytes.clone());
        let verified = check(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(verified.id(), env.id());
        prop_assert_eq!(verified.envelope(), &env);
    }

    #[test]
    fn any_single_byte_change_fails(
        bytes in signed_envelope(),
        position in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        let mut changed = bytes.clone();
        changed[i] = replacement;
        prop_assert!(
            check(&changed).is_err(),
            "changing byte {} from {:?} to {:?} still verified",
            i, bytes[i] as char, replacement as char
        );
    }
}
