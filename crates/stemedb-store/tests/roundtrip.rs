//! The store on real files: submit, read back, prove, reopen.

use std::sync::Arc;

use stemedb_core::{AssertionId, Verified, sign, signing_key_from_seed};
use stemedb_merkle::{leaf_hash, verify_consistency, verify_inclusion, verify_note};
use stemedb_store::{Entry, NoObserver, Outcome, Store, StoreError, StoreOptions};

fn assertion(n: u64) -> (Verified, Vec<u8>) {
    let key = signing_key_from_seed(&[(n % 3) as u8 + 1; 32]);
    let agent = hex::encode(key.verifying_key().as_bytes());
    let payload = format!(
        r#"{{"v":1,"subject":"fleet/eu/server-{n}/cpu","predicate":"load","object":{n},"agent":"{agent}","ts":{}}}"#,
        1_700_000_000_000u64 + n
    );
    let v = sign(&key, payload.into_bytes()).expect("valid");
    let raw = v.envelope().encode();
    (v, raw)
}

fn submit(store: &Store, items: Vec<(Verified, Vec<u8>)>) -> Vec<Result<Outcome, StoreError>> {
    store
        .submit(
            items
                .into_iter()
                .map(|(v, raw)| Entry::new(v, raw))
                .collect(),
            1,
        )
        .wait()
}

#[test]
fn submit_read_prove_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = StoreOptions::default();
    let mut ids: Vec<AssertionId> = Vec::new();
    let (size1, root1);
    {
        let store = Store::open(tmp.path(), opts.clone(), Arc::new(NoObserver)).expect("open");
        let batch: Vec<_> = (0..50).map(assertion).collect();
        let results = submit(&store, batch);
        for (i, r) in results.iter().enumerate() {
            let o = r.as_ref().expect("created");
            assert!(o.created);
            assert_eq!(o.log_index, i as u64);
            ids.push(o.id);
        }
        // Duplicates, within a batch and of stored ones, get the existing index.
        let again = submit(&store, vec![assertion(3), assertion(3), assertion(50)]);
        assert_eq!(
            again[0].as_ref().map(|o| (o.created, o.log_index)).ok(),
            Some((false, 3))
        );
        assert_eq!(
            again[1].as_ref().map(|o| (o.created, o.log_index)).ok(),
            Some((false, 3))
        );
        assert_eq!(
            again[2].as_ref().map(|o| (o.created, o.log_index)).ok(),
            Some((true, 50))
        );
        ids.push(again[2].as_ref().expect("created").id);
        let head = store.head();
        assert_eq!(head.size, 51);
        let got = store.get(&ids[7]).expect("read").expect("present");
        assert_eq!(got.envelope, assertion(7).1);
        assert_eq!(got.log_index, 7);
        let p = store
            .inclusion_proof(&ids[7], None)
            .expect("ok")
            .expect("found");
        let leaf = leaf_hash(ids[7].as_bytes());
        assert!(verify_inclusion(
            &leaf,
            p.leaf_index,
            p.tree_size,
            &p.path,
            &p.root
        ));
        let (_, note) = store.signed_checkpoint();
        let key = store.checkpoint_key();
        let cp = verify_note(&note, &key.key_name, &key.public_key).expect("signed");
        assert_eq!((cp.size, cp.root), (head.size, head.root));
        size1 = head.size;
        root1 = head.root;
    }
    // Reopen: everything is still there; the log grows consistently.
    let store = Store::open(tmp.path(), opts, Arc::new(NoObserver)).expect("reopen");
    assert_eq!(store.head().size, size1);
    assert_eq!(store.head().root, root1);
    for id in &ids {
        assert!(store.get(id).expect("read").is_some());
    }
    let results = submit(&store, (51..60).map(assertion).collect());
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().map(|o| o.created).unwrap_or(false))
    );
    let c = store.consistency_proof(size1, None).expect("proof");
    assert_eq!(c.to, 60);
    assert_eq!(c.from_root, root1);
    assert!(verify_consistency(
        size1,
        c.to,
        &c.from_root,
        &c.to_root,
        &c.proof
    ));
    assert!(store.consistency_proof(61, None).is_err());
}
