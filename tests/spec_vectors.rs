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

const M_BEGIN: &str = "<!-- merkle-vectors:begin -->\n```json\n";
const M_END: &str = "```\n<!-- merkle-vectors:end -->";

/// Merkle vectors: leaves are the ids of the valid statement vectors; for every tree size the
/// root, every inclusion proof and every consistency proof; and a signed checkpoint.
fn compute_merkle(ids: &[String]) -> Value {
    use stemedb_merkle::{
        Frontier, NodeSource, NoteSigner, consistency_proof, inclusion_proof, leaf_hash,
    };
    struct Map(std::collections::HashMap<(u32, u64), [u8; 32]>);
    impl NodeSource for Map {
        type Error = String;
        fn node(&self, l: u32, i: u64) -> Result<[u8; 32], String> {
            self.0
                .get(&(l, i))
                .copied()
                .ok_or_else(|| "missing".to_string())
        }
    }
    let mut nodes = Map(Default::default());
    let mut f = Frontier::new();
    let mut trees = vec![json!({"size": 0, "root": hex::encode(f.root())})];
    let mut leaves = Vec::new();
    for id in ids {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(id, &mut raw).unwrap_or_else(|e| panic!("{e}"));
        let leaf = leaf_hash(&raw);
        leaves.push(json!({"id": id, "leaf_hash": hex::encode(leaf)}));
        for (l, i, h) in f.push(leaf) {
            nodes.0.insert((l, i), h);
        }
        let n = f.size();
        let inclusion: Vec<Value> = (0..n)
            .map(|i| {
                let p = inclusion_proof(&nodes, i, n).unwrap_or_default();
                json!({"leaf_index": i, "audit_path": p.iter().map(hex::encode).collect::<Vec<_>>()})
            })
            .collect();
        let consistency: Vec<Value> = (1..n)
            .map(|m| {
                let p = consistency_proof(&nodes, m, n).unwrap_or_default();
                json!({"from": m, "proof": p.iter().map(hex::encode).collect::<Vec<_>>()})
            })
            .collect();
        trees.push(json!({"size": n, "root": hex::encode(f.root()), "inclusion": inclusion, "consistency": consistency}));
    }
    let key = signing_key_from_seed(&[0x11; 32]);
    let signer = NoteSigner::new("example.org/stemedb-spec", key.clone());
    let cp = stemedb_merkle::Checkpoint {
        origin: "example.org/stemedb-spec".into(),
        size: f.size(),
        root: f.root(),
    };
    json!({
        "leaves": leaves,
        "trees": trees,
        "checkpoint": {
            "key_seed": hex::encode([0x11u8; 32]),
            "public_key": hex::encode(key.verifying_key().as_bytes()),
            "key_name": "example.org/stemedb-spec",
            "key_id": hex::encode(stemedb_merkle::key_id("example.org/stemedb-spec", key.verifying_key().as_bytes())),
            "vkey": signer.vkey(),
            "note": signer.sign(&cp),
        },
    })
}

#[test]
fn merkle_vectors_match_the_code() {
    let (doc, vectors) = read_vectors();
    let ids: Vec<String> = vectors["valid"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let computed = compute_merkle(&ids);
    let start = doc
        .find(M_BEGIN)
        .unwrap_or_else(|| panic!("{SPEC} has no merkle-vectors block"))
        + M_BEGIN.len();
    let end = doc[start..]
        .find(M_END)
        .unwrap_or_else(|| panic!("unterminated merkle block"))
        + start;
    if std::env::var_os("STEMEDB_BLESS").is_some() {
        let text = serde_json::to_string_pretty(&computed).unwrap_or_default();
        let new_doc = format!("{}{}\n{}", &doc[..start], text, &doc[end..]);
        std::fs::write(SPEC, new_doc).unwrap_or_else(|e| panic!("cannot write {SPEC}: {e}"));
        return;
    }
    let given: Value =
        serde_json::from_str(&doc[start..end]).unwrap_or_else(|e| panic!("merkle vectors: {e}"));
    assert_eq!(
        given, computed,
        "Merkle vectors differ from what the code computes"
    );
}
