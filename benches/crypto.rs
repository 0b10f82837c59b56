//! Criterion benchmarks of signing, strict verification and batch verification.
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

    for size in [16usize, 64, 256] {
        let keys: Vec<_> = (0..16).map(agent_key).collect();
        let envs: Vec<Vec<u8>> = (0..size)
            .map(|i| {
                signed_assertion(&keys[i % keys.len()], i as u64)
                    .envelope()
                    .encode()
            })
            .collect();
        let mut g = c.benchmark_group(format!("verify_batch_{size}"));
        g.throughput(Throughput::Elements(size as u64));
        g.bench_function("decode_check_verify_batch", |b| {
            b.iter(|| {
                let prepared: Vec<Prepared> = envs
                    .iter()
                    .filter_map(|e| Prepared::from_bytes(e).ok())
                    .collect();
                verify_batch(prepared)
            })
        });
        g.bench_function("decode_check_verify_each_strict", |b| {
            b.iter(|| envs.iter().map(|e| check(e)).collect::<Vec<_>>())
        });
        g.finish();
    }
}

criterion_group!(benches, crypto);
criterion_main!(benches);
