//! Criterion micro-benchmarks of the write and query hot paths other than signatures
//! (`crypto.rs` has those): WAL append with one fsync per group (real file, real fsync), Merkle
//! append and inclusion proof, index key and lens-row encoding, lens resolution.
//! Run: `cargo bench -p stemedb-benches --bench hot_paths`.

use std::convert::Infallible;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use stemedb_core::{AssertionId, Statement};
use stemedb_merkle::{Frontier, Hash, NodeSource, inclusion_proof, leaf_hash};
use stemedb_store::Pointer;
use stemedb_store::keys::{IndexKind, IndexValue, index_key};
use stemedb_store::lens::{Candidate, Resolver, resolve};
use stemedb_wal::{Record, Wal, WalOptions};

fn statement(n: u64) -> (AssertionId, Statement, Vec<u8>) {
    let key = stemedb_benches::agent_key(7);
    let v = stemedb_benches::signed_assertion_about(&key, n, n % 250_000);
    let raw = v.envelope().encode();
    let (id, _, st) = v.into_parts();
    (id, st, raw)
}

fn wal(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal");
    let (_, _, raw) = statement(1);
    for group in [1usize, 64, 1024] {
        let bodies: Vec<Vec<u8>> = (0..group).map(|_| raw.clone()).collect();
        g.throughput(Throughput::Elements(group as u64));
        g.bench_function(format!("append_group_fsync/{group}"), |b| {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("wal");
            let records: Vec<Record<'_>> =
                bodies.iter().map(|b| Record { kind: 1, body: b }).collect();
            b.iter(|| wal.append_group(&records).expect("append"));
        });
    }
    g.finish();
}

struct Nodes(Vec<Vec<Hash>>);

impl NodeSource for Nodes {
    type Error = Infallible;
    fn node(&self, level: u32, index: u64) -> Result<Hash, Infallible> {
        Ok(self.0[level as usize][index as usize])
    }
}

fn merkle(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle");
    let leaves: Vec<Hash> = (0..1_000_000u64)
        .map(|i| leaf_hash(blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    g.throughput(Throughput::Elements(1024));
    g.bench_function("append_1024", |b| {
        b.iter_batched_ref(
            Frontier::new,
            |f| {
                for l in &leaves[..1024] {
                    std::hint::black_box(f.push(*l));
                }
            },
            BatchSize::SmallInput,
        )
    });
    let mut f = Frontier::new();
    let mut nodes = Nodes(vec![Vec::new(); 64]);
    for l in &leaves {
        for (level, index, h) in f.push(*l) {
            let lv = &mut nodes.0[level as usize];
            debug_assert_eq!(lv.len() as u64, index);
            lv.push(h);
        }
    }
    g.throughput(Throughput::Elements(1));
    let size = leaves.len() as u64;
    let mut i = 0u64;
    g.bench_function("inclusion_proof_1m", |b| {
        b.iter(|| {
            i = (i + 7_919) % size;
            inclusion_proof(&nodes, i, size).expect("proof")
        })
    });
    g.finish();
}

fn index(c: &mut Criterion) {
    let mut g = c.benchmark_group("index");
    let (id, st, _) = statement(42);
    let fields = stemedb_store::Fields::of(&st);
    g.throughput(Throughput::Elements(1));
    g.bench_function("four_index_keys", |b| {
        b.iter(|| {
            for kind in [
                IndexKind::Subject,
                IndexKind::ReversedSubject,
                IndexKind::Predicate,
                IndexKind::Agent,
            ] {
                std::hint::black_box(index_key(kind, &fields, 123_456));
            }
        })
    });
    let row = IndexValue {
        id,
        agent: *st.agent(),
        confidence: st.confidence(),
        retract: st.retract(),
        pointer: Pointer {
            segment: 3,
            offset: 1 << 20,
            len: 560,
        },
        value: stemedb_store::lens::value_key(st.object()),
        superseded_at: u64::MAX,
        valid_from: st.valid_from(),
        valid_until: st.valid_until(),
        validity_known: true,
    };
    g.bench_function("lens_row_encode_decode", |b| {
        b.iter(|| IndexValue::decode(&row.encode()).expect("decode"))
    });
    g.bench_function("object_value_key", |b| {
        b.iter(|| stemedb_store::lens::value_key(st.object()))
    });
    g.finish();
}

fn lens(c: &mut Criterion) {
    let mut g = c.benchmark_group("lens");
    for n in [4usize, 64] {
        let candidates: Vec<Candidate> = (0..n)
            .map(|i| Candidate {
                id: AssertionId::from_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                agent: *blake3::hash(&(i % 16).to_le_bytes()).as_bytes(),
                ts: 1_700_000_000_000 + (i as i64 * 37) % 1000,
                log_index: i as u64,
                confidence: 0.5 + (i % 5) as f64 / 10.0,
                value: [(i % 3) as u8; 16],
            })
            .collect();
        let weight = |a: &[u8; 32]| f64::from(a[0]) / 255.0;
        for (name, r) in [
            ("latest", Resolver::Latest),
            ("trusted", Resolver::Trusted),
            ("consensus", Resolver::Consensus),
            ("confidence", Resolver::Confidence),
        ] {
            g.bench_function(format!("{name}/{n}"), |b| {
                b.iter(|| resolve(r, &candidates, &weight).expect("winner"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, wal, merkle, index, lens);
criterion_main!(benches);
