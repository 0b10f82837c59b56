//! The query engine on a real store: lenses, supersedes and retraction, time travel, match
//! modes, filters and pagination under concurrent writes.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use stemedb_core::{AssertionId, SigningKey, Verified, sign, signing_key_from_seed};
use stemedb_store::{Lens, NoObserver, Query, QueryError, Store, StoreOptions, SubjectMatch};

struct Db {
    store: Store,
    _tmp: tempfile::TempDir,
}

fn key(agent: u8) -> SigningKey {
    signing_key_from_seed(&[agent; 32])
}

fn agent_bytes(agent: u8) -> [u8; 32] {
    *key(agent).verifying_key().as_bytes()
}

/// A statement with `extra` fields merged in.
fn signed(
    agent: u8,
    subject: &str,
    predicate: &str,
    object: Value,
    ts: i64,
    extra: Value,
) -> Verified {
    let k = key(agent);
    let mut st = json!({
        "v": 1,
        "subject": subject,
        "predicate": predicate,
        "object": object,
        "agent": hex::encode(k.verifying_key().as_bytes()),
        "ts": ts,
    });
    if let (Some(m), Some(e)) = (st.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    sign(&k, serde_json::to_vec(&st).expect("json")).expect("valid statement")
}

impl Db {
    fn new() -> Db {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(tmp.path(), StoreOptions::default(), Arc::new(NoObserver)).expect("open");
        Db { store, _tmp: tmp }
    }

    fn put_all(&self, items: Vec<Verified>) -> Vec<AssertionId> {
        let items: Vec<_> = items
            .into_iter()
            .map(|v| {
                let raw = v.envelope().encode();
                stemedb_store::Entry::new(v, raw)
            })
            .collect();
        self.store
            .submit(items, 1)
            .wait()
            .into_iter()
            .map(|r| r.expect("stored").id)
            .collect()
    }

    fn put(&self, v: Verified) -> AssertionId {
        self.put_all(vec![v])[0]
    }

    fn query(&self, q: &Query) -> stemedb_store::Answer {
        self.store.query(q, &|_| 1.0).expect("query")
    }
}

fn q(subject: &str, lens: Lens) -> Query {
    Query {
        subject: Some(subject.into()),
        lens,
        limit: 100,
        ..Query::default()
    }
}

/// (winner object, conflict, agreement rounded to 3 places, number of alternatives) per result.
fn summary(db: &Db, query: &Query) -> Vec<(Value, bool, f64, usize)> {
    db.query(query)
        .results
        .into_iter()
        .map(|r| {
            (
                r.winner.object,
                r.conflict,
                (r.agreement * 1000.0).round() / 1000.0,
                r.alternatives.len(),
            )
        })
        .collect()
}

const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;

#[test]
fn three_agent_conflict_each_lens_gives_its_answer() {
    let db = Db::new();
    // A: red, oldest, most confident. B: blue, newest, least confident. C: red, in between.
    db.put(signed(
        A,
        "svc/api",
        "status",
        json!("red"),
        100,
        json!({"confidence": 0.9}),
    ));
    let b = db.put(signed(
        B,
        "svc/api",
        "status",
        json!("blue"),
        300,
        json!({"confidence": 0.2}),
    ));
    db.put(signed(
        C,
        "svc/api",
        "status",
        json!("red"),
        200,
        json!({"confidence": 0.5}),
    ));
    let cases = [
        (Lens::Latest, vec![(json!("blue"), true, 0.333, 2)]),
        (Lens::Trusted, vec![(json!("blue"), true, 0.333, 2)]),
        (Lens::Consensus, vec![(json!("red"), true, 0.667, 2)]),
        (Lens::Confidence, vec![(json!("red"), true, 0.667, 2)]),
    ];
    for (lens, want) in cases {
        assert_eq!(summary(&db, &q("svc/api", lens)), want, "{lens:?}");
    }
    let ans = db.query(&q("svc/api", Lens::Latest));
    assert_eq!(ans.results[0].winner.id, b);
    assert_eq!(ans.results[0].winner.agent, agent_bytes(B));
    assert_eq!(ans.results[0].subject, "svc/api");
    assert_eq!(ans.results[0].predicate, "status");
    // Confidence picks A's own assertion (0.9), consensus picks red's newest (C).
    let conf = db.query(&q("svc/api", Lens::Confidence));
    assert_eq!(conf.results[0].winner.agent, agent_bytes(A));
    let cons = db.query(&q("svc/api", Lens::Consensus));
    assert_eq!(cons.results[0].winner.agent, agent_bytes(C));
    // Raw: every assertion, in index order (ts ascending).
    let raw: Vec<Value> = db
        .query(&q("svc/api", Lens::Raw))
        .results
        .into_iter()
        .map(|r| r.winner.object)
        .collect();
    assert_eq!(raw, vec![json!("red"), json!("red"), json!("blue")]);
}

#[test]
fn supersedes_corrects_and_as_of_travels_back() {
    let db = Db::new();
    let old = db.put(signed(
        A,
        "db/primary",
        "region",
        json!("eu-west-1"),
        10,
        json!({}),
    ));
    let size_before = db.store.head().size;
    let fix = db.put(signed(
        A,
        "db/primary",
        "region",
        json!("eu-central-1"),
        5, // older ts: only the supersedes link makes it win.
        json!({"supersedes": [old.to_hex()]}),
    ));
    let now = db.query(&q("db/primary", Lens::Latest));
    assert_eq!(now.results.len(), 1);
    assert_eq!(now.results[0].winner.id, fix);
    assert!(!now.results[0].conflict, "the superseded value is not live");
    assert!(now.results[0].alternatives.is_empty());
    // As of before the correction: the old winner.
    let then = db.query(&Query {
        as_of: Some(size_before),
        ..q("db/primary", Lens::Latest)
    });
    assert_eq!(then.tree_size, size_before);
    assert_eq!(then.results[0].winner.id, old);
    // include_superseded brings the old one back as a live candidate.
    let all = db.query(&Query {
        include_superseded: true,
        ..q("db/primary", Lens::Latest)
    });
    assert_eq!(all.results[0].winner.id, old, "ts 10 is newer than ts 5");
    assert!(all.results[0].conflict);
    // Raw drops superseded assertions unless asked.
    assert_eq!(db.query(&q("db/primary", Lens::Raw)).results.len(), 1);
    let raw_all = db.query(&Query {
        include_superseded: true,
        ..q("db/primary", Lens::Raw)
    });
    assert_eq!(raw_all.results.len(), 2);
}

#[test]
fn retraction_leaves_no_value_and_agents_count_their_newest_only() {
    let db = Db::new();
    let a1 = db.put(signed(A, "x", "p", json!(1), 1, json!({})));
    db.put(signed(A, "x", "p", json!(2), 2, json!({})));
    db.put(signed(B, "x", "p", json!(1), 3, json!({})));
    // A's newest is 2; its older 1 is not a live alternative.
    assert_eq!(
        summary(&db, &q("x", Lens::Consensus)),
        vec![(json!(1), true, 0.5, 1)]
    );
    // B retracts its own assertion: B asserts nothing now; only A's 2 is live.
    let b1 = db.query(&q("x", Lens::Latest)).results[0].winner.id;
    db.put(signed(
        B,
        "x",
        "p",
        json!(null),
        4,
        json!({"supersedes": [b1.to_hex()], "retract": true}),
    ));
    assert_eq!(
        summary(&db, &q("x", Lens::Latest)),
        vec![(json!(2), false, 1.0, 0)]
    );
    // A retracts too: the group has no value and disappears.
    let a2 = db.query(&q("x", Lens::Latest)).results[0].winner.id;
    db.put(signed(
        A,
        "x",
        "p",
        json!(null),
        5,
        json!({"supersedes": [a2.to_hex()], "retract": true}),
    ));
    assert!(db.query(&q("x", Lens::Latest)).results.is_empty());
    // Raw resolves nothing: A's first assertion was never superseded, so it is the one raw
    // result; with include_superseded raw shows all five.
    let raw = db.query(&q("x", Lens::Raw));
    assert_eq!(raw.results.len(), 1);
    assert_eq!(raw.results[0].winner.id, a1);
    let all = db.query(&Query {
        include_superseded: true,
        ..q("x", Lens::Raw)
    });
    assert_eq!(all.results.len(), 5);
}

#[test]
fn match_modes_respect_segment_boundaries() {
    let db = Db::new();
    let subjects = [
        "fleet/eu",
        "fleet/eu/server-1/cpu",
        "fleet/eu/server-2/cpu",
        "fleet/eu2/server-1/cpu",
        "fleet/us/server-1/cpu",
        "fleet/us/xserver-1/cpu",
    ];
    db.put_all(
        subjects
            .iter()
            .enumerate()
            .map(|(i, s)| signed(A, s, "load", json!(i), 1, json!({})))
            .collect(),
    );
    let subjects_of = |subject: &str, m: SubjectMatch| -> Vec<String> {
        db.query(&Query {
            match_mode: m,
            ..q(subject, Lens::Latest)
        })
        .results
        .into_iter()
        .map(|r| r.subject)
        .collect()
    };
    assert_eq!(
        subjects_of("fleet/eu", SubjectMatch::Exact),
        vec!["fleet/eu"]
    );
    assert_eq!(
        subjects_of("fleet/eu", SubjectMatch::Prefix),
        vec!["fleet/eu", "fleet/eu/server-1/cpu", "fleet/eu/server-2/cpu"]
    );
    let mut tail = subjects_of("server-1/cpu", SubjectMatch::Tail);
    tail.sort();
    assert_eq!(
        tail,
        vec![
            "fleet/eu/server-1/cpu",
            "fleet/eu2/server-1/cpu",
            "fleet/us/server-1/cpu"
        ]
    );
    assert!(subjects_of("eu/server", SubjectMatch::Tail).is_empty());
    assert!(subjects_of("fleet/e", SubjectMatch::Prefix).is_empty());
}

#[test]
fn filters_narrow_the_live_set() {
    let db = Db::new();
    db.put_all(vec![
        signed(A, "h/1", "cpu", json!(10), 100, json!({})),
        signed(B, "h/1", "cpu", json!(20), 200, json!({})),
        signed(A, "h/1", "mem", json!(30), 300, json!({})),
        signed(A, "h/2", "cpu", json!(40), 400, json!({})),
    ]);
    let objects = |query: Query| -> Vec<Value> {
        db.query(&query)
            .results
            .into_iter()
            .map(|r| r.winner.object)
            .collect()
    };
    let base = Query {
        limit: 100,
        ..Query::default()
    };
    let cases = [
        (
            Query {
                predicate: Some("cpu".into()),
                ..base.clone()
            },
            vec![json!(20), json!(40)],
        ),
        (
            Query {
                agent: Some(agent_bytes(A)),
                ..base.clone()
            },
            vec![json!(10), json!(30), json!(40)],
        ),
        (
            Query {
                subject: Some("h".into()),
                match_mode: SubjectMatch::Prefix,
                predicate: Some("cpu".into()),
                until: Some(150),
                ..base.clone()
            },
            vec![json!(10)],
        ),
        (
            Query {
                since: Some(200),
                until: Some(300),
                ..base.clone()
            },
            vec![json!(20), json!(30)],
        ),
        (
            Query {
                subject: Some("cpu".into()),
                match_mode: SubjectMatch::Tail,
                ..base.clone()
            },
            vec![],
        ),
        (
            Query {
                subject: Some("1".into()),
                match_mode: SubjectMatch::Tail,
                predicate: Some("mem".into()),
                ..base.clone()
            },
            vec![json!(30)],
        ),
        (base.clone(), vec![json!(20), json!(30), json!(40)]),
    ];
    for (query, want) in cases {
        assert_eq!(objects(query.clone()), want, "{query:?}");
    }
}

#[test]
fn pagination_returns_each_result_once_while_writes_continue() {
    let db = Arc::new(Db::new());
    const N: usize = 10_000;
    for chunk in 0..(N / 1000) {
        db.put_all(
            (0..1000)
                .map(|i| {
                    let n = chunk * 1000 + i;
                    signed(A, &format!("page/s{n:05}"), "v", json!(n), 1, json!({}))
                })
                .collect(),
        );
    }
    // A writer keeps adding subjects, some sorting before and some after every page.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                db.put_all(vec![
                    signed(B, &format!("page/a{n:06}"), "v", json!(n), 2, json!({})),
                    signed(B, &format!("page/z{n:06}"), "v", json!(n), 2, json!({})),
                    signed(
                        B,
                        &format!("page/s{:05}", n % 10_000),
                        "v",
                        json!(-1),
                        2,
                        json!({}),
                    ),
                ]);
                n += 1;
            }
            n
        })
    };
    let mut seen = HashSet::new();
    let mut cursor = None;
    let mut pages = 0;
    let mut tree_size = None;
    loop {
        let ans = db.query(&Query {
            subject: Some("page".into()),
            match_mode: SubjectMatch::Prefix,
            lens: Lens::Raw,
            limit: 100,
            cursor: cursor.clone(),
            ..Query::default()
        });
        pages += 1;
        assert!(ans.results.len() <= 100);
        // Every page answers as of the first page's tree size.
        assert_eq!(*tree_size.get_or_insert(ans.tree_size), ans.tree_size);
        for r in ans.results {
            assert!(seen.insert(r.winner.id), "{} returned twice", r.subject);
        }
        match ans.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(written > 0, "the writer ran during pagination");
    // Exactly what the first page's snapshot held under the prefix: the 10,000 plus what the
    // writer had added by then.
    let snapshot = db.query(&Query {
        subject: Some("page".into()),
        match_mode: SubjectMatch::Prefix,
        lens: Lens::Raw,
        limit: 1000,
        as_of: tree_size,
        ..Query::default()
    });
    assert!(seen.len() >= N, "{} results", seen.len());
    assert!(pages >= N / 100);
    let mut total = snapshot.results.len();
    let mut c = snapshot.next_cursor;
    while let Some(cur) = c {
        let page = db.query(&Query {
            subject: Some("page".into()),
            match_mode: SubjectMatch::Prefix,
            lens: Lens::Raw,
            limit: 1000,
            as_of: tree_size,
            cursor: Some(cur),
            ..Query::default()
        });
        total += page.results.len();
        c = page.next_cursor;
    }
    assert_eq!(seen.len(), total);

    // The same under a resolving lens: one result per subject.
    let mut subjects = HashSet::new();
    let mut cursor = None;
    loop {
        let ans = db.query(&Query {
            subject: Some("page".into()),
            match_mode: SubjectMatch::Prefix,
            limit: 100,
            cursor: cursor.clone(),
            ..Query::default()
        });
        for r in ans.results {
            assert!(subjects.insert(r.subject.clone()), "{} twice", r.subject);
        }
        match ans.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(subjects.len(), N + 2 * written as usize);
}

#[test]
fn bad_cursors_and_parameters_are_refused() {
    let db = Db::new();
    db.put_all(
        (0..5)
            .map(|i| signed(A, &format!("c/{i}"), "p", json!(i), 1, json!({})))
            .collect(),
    );
    let first = db.query(&Query {
        subject: Some("c".into()),
        match_mode: SubjectMatch::Prefix,
        limit: 2,
        ..Query::default()
    });
    let cursor = first.next_cursor.expect("more pages");
    let cases = [
        Query {
            subject: Some("c".into()),
            match_mode: SubjectMatch::Prefix,
            lens: Lens::Raw,
            limit: 2,
            cursor: Some(cursor.clone()),
            ..Query::default()
        },
        Query {
            subject: Some("c".into()),
            match_mode: SubjectMatch::Prefix,
            limit: 2,
            cursor: Some("!!!".into()),
            ..Query::default()
        },
        Query {
            subject: Some("c".into()),
            match_mode: SubjectMatch::Prefix,
            limit: 2,
            cursor: Some("AQ".into()),
            ..Query::default()
        },
    ];
    for query in cases {
        assert!(
            matches!(
                db.store.query(&query, &|_| 1.0),
                Err(QueryError::BadCursor(_))
            ),
            "{query:?}"
        );
    }
    for query in [
        Query {
            limit: 0,
            ..Query::default()
        },
        Query {
            limit: 1001,
            ..Query::default()
        },
        Query {
            limit: 1,
            as_of: Some(6),
            ..Query::default()
        },
        Query {
            limit: 1,
            since: Some(2),
            until: Some(1),
            ..Query::default()
        },
    ] {
        assert!(
            matches!(
                db.store.query(&query, &|_| 1.0),
                Err(QueryError::BadParameter(_))
            ),
            "{query:?}"
        );
    }
    // The cursor continues its own query.
    let second = db.query(&Query {
        subject: Some("c".into()),
        match_mode: SubjectMatch::Prefix,
        limit: 2,
        cursor: Some(cursor),
        ..Query::default()
    });
    let subjects: Vec<String> = second.results.into_iter().map(|r| r.subject).collect();
    assert_eq!(subjects, vec!["c/2", "c/3"]);
}

#[test]
fn a_target_superseded_by_its_own_agent_before_it_arrives_or_in_the_same_batch_is_not_live() {
    let db = Db::new();
    // A supersedes its own assertion before that assertion reaches the store.
    let early = signed(A, "late/arrival", "p", json!("old"), 1, json!({}));
    let early_id = early.id();
    db.put(signed(
        A,
        "late/arrival",
        "p",
        json!("new"),
        2,
        json!({"supersedes": [early_id.to_hex()]}),
    ));
    db.put(early);
    // Raw lists every assertion that is not superseded: only the correction.
    let ans = db.query(&q("late/arrival", Lens::Raw));
    let objects: Vec<Value> = ans.results.into_iter().map(|r| r.winner.object).collect();
    assert_eq!(objects, vec![json!("new")]);
    // Target and correction in one batch, in either order.
    let t1 = signed(A, "batch/one", "p", json!(1), 5, json!({}));
    let c1 = signed(
        A,
        "batch/one",
        "p",
        json!(2),
        1,
        json!({"supersedes": [t1.id().to_hex()]}),
    );
    let t2 = signed(A, "batch/two", "p", json!(1), 5, json!({}));
    let c2 = signed(
        A,
        "batch/two",
        "p",
        json!(2),
        1,
        json!({"supersedes": [t2.id().to_hex()]}),
    );
    db.put_all(vec![t1, c1, c2, t2]);
    for subject in ["batch/one", "batch/two"] {
        let ans = db.query(&Query {
            include_superseded: false,
            ..q(subject, Lens::Raw)
        });
        let objects: Vec<Value> = ans.results.into_iter().map(|r| r.winner.object).collect();
        assert_eq!(
            objects,
            vec![json!(2)],
            "{subject}: the target is superseded"
        );
    }
}

/// Design §8: `supersedes` takes effect only between assertions of one agent. Mallory cannot
/// kill Alice's assertion, before it arrives, in the same batch, or after.
#[test]
fn another_agents_supersedes_never_takes_effect() {
    let db = Db::new();
    let alice = signed(A, "kill/me", "p", json!("alice"), 1, json!({}));
    let mallory = signed(
        B,
        "kill/me",
        "p",
        json!("mallory"),
        0,
        json!({"supersedes": [alice.id().to_hex()]}),
    );
    db.put(mallory);
    let alice_id = db.put(alice);
    let ans = db.query(&q("kill/me", Lens::Latest));
    assert_eq!(
        ans.results[0].winner.id, alice_id,
        "Alice's newer value wins"
    );
    assert_eq!(
        ans.results[0].alternatives.len(),
        1,
        "Mallory's is an alternative"
    );
    // The same in one batch, and after the target is stored.
    let t = signed(A, "kill/batch", "p", json!("alice"), 1, json!({}));
    let m = signed(
        B,
        "kill/batch",
        "p",
        json!("mallory"),
        0,
        json!({"supersedes": [t.id().to_hex()], "retract": true}),
    );
    db.put_all(vec![m, t]);
    let stored = signed(A, "kill/after", "p", json!("alice"), 1, json!({}));
    let stored_id = db.put(stored);
    db.put(signed(
        B,
        "kill/after",
        "p",
        json!(null),
        2,
        json!({"supersedes": [stored_id.to_hex()], "retract": true}),
    ));
    for subject in ["kill/batch", "kill/after"] {
        let ans = db.query(&q(subject, Lens::Latest));
        assert_eq!(ans.results[0].winner.object, json!("alice"), "{subject}");
        let raw = db.query(&q(subject, Lens::Raw));
        assert!(
            raw.results
                .iter()
                .any(|r| r.winner.object == json!("alice")),
            "{subject}: Alice's assertion is not superseded"
        );
    }
}

#[test]
fn a_scan_budget_stops_long_queries_and_leaves_short_ones_whole() {
    let db = Db::new();
    let items = (0..10i64)
        .map(|i| signed(A, "long", "p", json!(i), i, json!({})))
        .chain(std::iter::once(signed(
            B,
            "short",
            "p",
            json!("s"),
            1,
            json!({}),
        )))
        .collect();
    db.put_all(items);
    let long = q("long", Lens::Latest);
    let within = |query: &Query, rows| {
        db.store
            .query_within(query, &|_| 1.0, Some(rows))
            .expect("query")
    };
    // Ten rows: a budget of nine stops, ten is enough, and the answer equals the unbounded one.
    assert!(within(&long, 9).is_none());
    let whole = within(&long, 10).expect("within budget");
    assert_eq!(whole, db.query(&long));
    assert_eq!(whole.results[0].winner.object, json!(9));
    let short = within(&q("short", Lens::Latest), 1).expect("one row");
    assert_eq!(short.results[0].winner.object, json!("s"));
}

/// Design §6: a request examines at most `scan_budget` rows and answers what it has with a
/// cursor, even with no results; following the cursors gives exactly the unbounded answer.
#[test]
fn the_scan_budget_pages_a_long_scan_and_never_splits_a_group() {
    let db = Db::new();
    let mut items = Vec::new();
    for i in 0..60i64 {
        items.push(signed(
            A,
            &format!("fleet/s{i:03}"),
            "p",
            json!(i),
            i,
            json!({}),
        ));
        items.push(signed(
            B,
            &format!("fleet/s{i:03}"),
            "p",
            json!(i),
            i,
            json!({}),
        ));
    }
    // One crowded group of 45 agents.
    for agent in 0..45u8 {
        items.push(signed(
            agent + 10,
            "fleet/crowd",
            "p",
            json!(agent),
            1,
            json!({}),
        ));
    }
    db.put_all(items);
    let stranger = [0x5a; 32];
    // An agent with no rows: the agent index answers at once, no cursor.
    let none = db.query(&Query {
        subject: Some("fleet".into()),
        match_mode: SubjectMatch::Prefix,
        agent: Some(stranger),
        scan_budget: Some(10),
        ..q("fleet", Lens::Latest)
    });
    assert!(none.results.is_empty() && none.next_cursor.is_none());
    let base = Query {
        subject: Some("fleet".into()),
        match_mode: SubjectMatch::Prefix,
        limit: 1000,
        ..q("fleet", Lens::Latest)
    };
    let whole = db.query(&base);
    assert_eq!(whole.results.len(), 61);
    for budget in [1usize, 7, 10, 50] {
        let mut got = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = db.query(&Query {
                scan_budget: Some(budget),
                cursor: cursor.clone(),
                ..base.clone()
            });
            pages += 1;
            assert!(pages < 500, "budget {budget}: no progress");
            got.extend(page.results);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, whole.results, "budget {budget}");
        assert!(pages > 1, "budget {budget} made {pages} pages");
    }
    // A page that stops on the budget before any result still says where to go on (a prefix
    // query reads every group under the prefix and skips those of another predicate).
    let empty = db.query(&Query {
        predicate: Some("nope".into()),
        scan_budget: Some(5),
        ..base.clone()
    });
    assert!(empty.results.is_empty());
    assert!(empty.next_cursor.is_some(), "stopped early, so a cursor");
}

/// Design §6: a crowded group is resolved in linear time and lists at most 32 alternatives,
/// with the full count beside them.
#[test]
fn a_crowded_group_lists_32_alternatives_and_counts_all() {
    let db = Db::new();
    let items = (0..200u8)
        .map(|a| signed(a, "crowd", "p", json!(a % 3), i64::from(a), json!({})))
        .collect();
    db.put_all(items);
    for lens in [
        Lens::Latest,
        Lens::Consensus,
        Lens::Trusted,
        Lens::Confidence,
    ] {
        let ans = db.query(&q("crowd", lens));
        let r = &ans.results[0];
        assert_eq!(r.alternatives.len(), 32, "{lens:?}");
        assert_eq!(r.alternatives_total, 199, "{lens:?}");
        assert!(!r.alternatives.contains(&r.winner.id), "{lens:?}");
    }
    // Newest first: under `latest` the winner is agent 199's, then 198, 197, ...
    let ans = db.query(&q("crowd", Lens::Latest));
    let expected: Vec<AssertionId> = (167..199u8)
        .rev()
        .map(|a| signed(a, "crowd", "p", json!(a % 3), i64::from(a), json!({})).id())
        .collect();
    assert_eq!(ans.results[0].alternatives, expected);
}

/// A scan whose request is gone stops instead of running to its end.
#[test]
fn a_cancelled_scan_stops() {
    let db = Db::new();
    let items = (0..3000i64)
        .map(|i| signed(A, &format!("many/s{i:05}"), "p", json!(i), i, json!({})))
        .collect();
    db.put_all(items);
    let query = Query {
        subject: Some("many".into()),
        match_mode: SubjectMatch::Prefix,
        limit: 1000,
        ..q("many", Lens::Latest)
    };
    let gone = AtomicBool::new(true);
    let r = db.store.query_cancellable(&query, &|_| 1.0, &gone);
    assert!(matches!(r, Err(QueryError::Cancelled)), "{r:?}");
    let here = AtomicBool::new(false);
    let r = db
        .store
        .query_cancellable(&query, &|_| 1.0, &here)
        .expect("runs");
    assert_eq!(r.results.len(), 1000);
}
