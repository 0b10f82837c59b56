//! Shared helpers for StemeDB's benchmarks: deterministic keys and signed envelopes.

use stemedb_core::{SigningKey, Verified, sign, signing_key_from_seed};

/// A deterministic signing key for benchmark agent `n`.
pub fn agent_key(n: u32) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&n.to_le_bytes());
    seed[31] = 0x5e;
    signing_key_from_seed(&seed)
}

/// A signed assertion of typical size (about 480 bytes of envelope) from agent `agent`.
pub fn signed_assertion(key: &SigningKey, n: u64) -> Verified {
    signed_assertion_about(key, n, n)
}

/// The subject of server `server`: `fleet/eu-west/rack-{server % 97}/server-{server}/cpu`.
pub fn subject_of(server: u64) -> String {
    format!("fleet/eu-west/rack-{}/server-{server}/cpu", server % 97)
}

/// Assertion `n` (value `n % 100`, ts `1.7e12 + n`) about server `server`.
pub fn signed_assertion_about(key: &SigningKey, n: u64, server: u64) -> Verified {
    let agent = hex_of(key.verifying_key().as_bytes());
    let payload = format!(
        r#"{{"v":1,"subject":"{}","predicate":"load.p99","object":{{"value":{},"unit":"percent"}},"agent":"{agent}","ts":{},"confidence":0.9}}"#,
        subject_of(server),
        n % 100,
        1_700_000_000_000u64 + n
    );
    match sign(key, payload.into_bytes()) {
        Ok(v) => v,
        Err(e) => panic!("benchmark statement must be valid: {e}"),
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
