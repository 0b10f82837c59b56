//! The test vectors in `docs/spec.md` are what the code computes.
//!
//! Each valid vector gives a key seed and statement bytes; this test recomputes the public key,
//! PAE, signature, id and envelope and compares every field. Each invalid vector gives envelope
//! bytes and the error code they must produce. To regenerate the valid vectors after a deliberate
//! format change (a version bump), run with `STEMEDB_BLESS=1` and review the diff.

use serde_json::{Value, json};
use stemedb_core::{PAYLOAD_TYPE, check, pae, sign, signing_key_from_seed};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/spec.md");
const BEGIN: &str = "<!-- test-vectors:begin -->\n```json\n";
const END: &str = "```\n<!-- test-vectors:end -->";

fn compute(seed_hex: &str, statement: &str) -> Value {
    let seed: [u8; 32] = hex::decode(seed_hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .unwrap_or_else(|| panic!("seed {seed_hex} is not 32 bytes of hex"));
    let key = signing_key_from_seed(&seed);
    let signed = sign(&key, statement.as_bytes().to_vec())
        .unwrap_or_else(|e| panic!("vector statement must be valid: {e}"));
    let pae = pae(PAYLOAD_TYPE, statement.as_bytes());
    json!({
        "seed": seed_hex,
        "public_key": hex::encode(key.verifying_key().as_bytes()),
        "statement": statement,
        "pae": String::from_utf8(pae).unwrap_or_default(),
        "signature": hex::encode(signed.envelope().sig()),
        "id": signed.id().to_hex(),
        "envelope": String::from_utf8(signed.envelope().encode()).unwrap_or_default(),
    })
}

fn read_vectors() -> (String, Value) {
    let doc = std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("cannot read {SPEC}: {e}"));
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{SPEC} has no test-vectors block"))
        + BEGIN.len();
    let end = doc[start..]
        .find(END)
        .unwrap_or_else(|| panic!("{SPEC}: unterminated test-vectors block"))
        + start;
    let vectors: Value = serde_json::from_str(&doc[start..end])
        .unwrap_or_else(|e| panic!("test vectors are not JSON: {e}"));
    (doc, vectors)
}

#[test]
fn spec_vectors_match_the_code() {
    let (doc, vectors) = read_vectors();
    let valid = vectors["valid"].as_array().cloned().unwrap_or_default();
    assert!(
        valid.len() >= 3,
        "the spec must carry at least 3 valid vectors"
    );
    let recomputed: Vec<Value> = valid
        .iter()
        .map(|v| {
            compute(
                v["seed"].as_str().unwrap_or_default(),
                v["statement"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    if std::env::var_os("STEMEDB_BLESS").is_some() {
        let mut blessed = vectors.clone();
        blessed["valid"] = Value::Array(recomputed.clone());
        let text = serde_json::to_string_pretty(&blessed).unwrap_or_default();
        let start = doc.find(BEGIN).unwrap_or(0) + BEGIN.len();
        let end = doc[start..].find(END).unwrap_or(0) + start;
        let new_doc = format!("{}{}\n{}", &doc[..start], text, &doc[end..]);
        std::fs::write(SPEC, new_doc).unwrap_or_else(|e| panic!("cannot write {SPEC}: {e}"));
    }
    for (given, computed) in valid.iter().zip(&recomputed) {
        assert_eq!(
            given, computed,
            "vector differs from what the code computes"
        );
        let envelope = computed["envelope"].as_str().unwrap_or_default();
        let verified = check(envelope.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Some(verified.id().to_hex().as_str()),
            computed["id"].as_str()
        );
    }
    let invalid = vectors["invalid"].as_array().cloned().unwrap_or_default();
    assert!(!invalid.is_empty(), "the spec must carry invalid vectors");
    for v in invalid {
        let envelope = v["envelope"].as_str().unwrap_or_default();
        let code = check(envelope.as_bytes()).map(|_| ()).map_err(|e| e.code());
        assert_eq!(
            code,
            Err(v["code"].as_str().unwrap_or_default()),
            "{}",
            v["why"]
        );
    }
}
