//! Fuzz target: the envelope decoder and every check before the signature equation.
//!
//! Run: `cargo +nightly fuzz run envelope_decode -- -max_total_time=600` (from the repo root).
//! Properties checked besides "no panic": whatever decodes re-encodes to bytes that decode to the
//! same envelope, and the id is a function of the payload alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stemedb_core::{AssertionId, Envelope, PAYLOAD_TYPE, Prepared, pae};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        let again = Envelope::decode(&env.encode());
        assert_eq!(again.as_ref(), Ok(&env), "encode/decode round trip");
        let expected = AssertionId::of_pae(&pae(PAYLOAD_TYPE, env.payload()));
        assert_eq!(env.id(), expected, "id is BLAKE3 of the PAE");
        if let Ok(prepared) = Prepared::new(env) {
            let _ = prepared.verify();
        }
    }
    let _ = stemedb_core::Statement::from_payload(data);
});
