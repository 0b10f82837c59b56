//! Criterion benchmarks of signing, strict verification, bulk verification and the primitives
//! under them.
//!
//! Run: `cargo bench -p stemedb-benches --bench crypto`. Figures go to `docs/performance.md`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use stemedb_benches::{agent_key, signed_assertion};
use stemedb_core::{Prepared, check, sign, verify_batch};

fn crypto(c: &mut Criterion) {
    let key = agent_key(1);
    let one = signed_assertion(&key, 1);
    let payload = one.envelope().payload().to_vec();
    let encoded = one.envelope().encode();

    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| {
        b.iter_batched(|| payload.clone(), |p| sign(&key, p), BatchSize::SmallInput)
    });
    g.bench_function("decode_check_verify_strict", |b| b.iter(|| check(&encoded)));
    g.bench_function("decode_check_only", |b| {
        b.iter(|| Prepared::from_bytes(&encoded))
    });
    g.finish();

    // The bulk path ingest uses: decode and check every envelope, then `verify_batch`.
    let keys: Vec<_> = (0..16).map(agent_key).collect();
    let envs: Vec<Vec<u8>> = (0..256)
        .map(|i| {
            signed_assertion(&keys[i % keys.len()], i as u64)
                .envelope()
                .encode()
        })
        .collect();
    let mut g = c.benchmark_group("bulk_256");
    g.throughput(Throughput::Elements(envs.len() as u64));
    g.bench_function("decode_check_verify_batch", |b| {
        b.iter(|| {
            let prepared: Vec<Prepared> = envs
                .iter()
                .filter_map(|e| Prepared::from_bytes(e).ok())
                .collect();
            verify_batch(prepared)
        })
    });
    g.finish();
}

/// The primitives under the envelope functions, to see where the time goes, and the two
/// ingredients of the rejected "batch equation plus torsion check" design (decision 0001).
fn primitives(c: &mut Criterion) {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use ed25519_dalek::{Signature, Signer as _};

    let keys: Vec<_> = (0..16).map(agent_key).collect();
    let msgs: Vec<Vec<u8>> = (0..64)
        .map(|i| format!("message {i}").into_bytes())
        .collect();
    let sigs: Vec<Signature> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| keys[i % 16].sign(m))
        .collect();
    let vks: Vec<_> = (0..64).map(|i| keys[i % 16].verifying_key()).collect();
    let r = CompressedEdwardsY(sigs[0].r_bytes().to_owned());
    let mut g = c.benchmark_group("primitives");
    g.throughput(Throughput::Elements(1));
    g.bench_function("dalek_verify_strict", |b| {
        b.iter(|| vks[0].verify_strict(&msgs[0], &sigs[0]))
    });
    g.bench_function("decompress_point", |b| b.iter(|| r.decompress()));
    let p = r.decompress().unwrap_or_default();
    g.bench_function("compress_point", |b| b.iter(|| p.compress()));
    g.bench_function("torsion_check_vartime", |b| {
        b.iter(|| {
            EdwardsPoint::vartime_double_scalar_mul_basepoint(&-Scalar::ONE, &p, &Scalar::ZERO) + p
        })
    });
    g.finish();
    let mut g = c.benchmark_group("primitives_batch_64");
    g.throughput(Throughput::Elements(64));
    let m: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    g.bench_function("dalek_verify_batch_alone", |b| {
        b.iter(|| ed25519_dalek::verify_batch(&m, &sigs, &vks))
    });
    g.finish();
}

criterion_group!(benches, crypto, primitives);
criterion_main!(benches);
