//! Lenses: pure functions that resolve the live assertions of one (subject, predicate) group into
//! a winner (design §6). No I/O, no storage types: the query engine chooses the live set, a lens
//! only ranks it.
//!
//! Every ranking ends in (`ts`, log index), newest first, and log indexes are unique, so every
//! lens is a total order and two servers with the same data give the same winner:
//! - `latest`: newest `ts`, then highest log index.
//! - `trusted`: highest agent weight, then as `latest`.
//! - `confidence`: highest `confidence × weight`, then as `latest`.
//! - `consensus`: the object value with the most support (sum of the weights of the distinct
//!   agents asserting it); ties go to more distinct agents, then to the value asserted most
//!   recently. The winner is that value's newest assertion.
//!
//! Objects are compared as JSON values: key order and number spelling do not matter (`1`, `1.0`
//! and `1e0` are one value). A lens sees each object only as its [`ValueKey`], a hash of its
//! canonical form, so the index can carry it and a query reads only the winner's envelope.

use std::collections::HashMap;

use serde_json::Value;
use stemedb_core::AssertionId;

/// A lens that resolves a group (every lens but `raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// Newest assertion.
    Latest,
    /// Most trusted agent, then newest.
    Trusted,
    /// Value with the most weighted distinct agents.
    Consensus,
    /// Highest confidence × trust.
    Confidence,
}

/// One live assertion of a group, as a lens sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The assertion id.
    pub id: AssertionId,
    /// The agent's public key.
    pub agent: [u8; 32],
    /// Claimed time, Unix ms.
    pub ts: i64,
    /// Position in the log.
    pub log_index: u64,
    /// Claimed confidence in [0, 1].
    pub confidence: f64,
    /// The object value's key.
    pub value: ValueKey,
}

/// Identifies an object value: the first 16 bytes of BLAKE3 over its canonical text.
pub type ValueKey = [u8; 16];

/// The key of `v`.
pub fn value_key(v: &Value) -> ValueKey {
    let h = blake3::hash(canonical(v).as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

/// Most alternatives a resolution lists (design §6); `Resolution::alternatives_total` counts all.
pub const MAX_ALTERNATIVES: usize = 32;

/// What a lens decided about a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// Index of the winner in the candidate slice.
    pub winner: usize,
    /// True when some live candidate's object differs from the winner's.
    pub conflict: bool,
    /// Weight of the distinct agents whose object equals the winner's, over the weight of all
    /// distinct agents (by count when every weight is zero).
    pub agreement: f64,
    /// Indexes of the newest `MAX_ALTERNATIVES` other candidates, newest first.
    pub alternatives: Vec<usize>,
    /// How many other candidates there are in all.
    pub alternatives_total: usize,
}

fn recency(c: &Candidate) -> (i64, u64) {
    (c.ts, c.log_index)
}

/// Resolves `candidates` with `lens`, weighing agents with `weight`. `None` for an empty group.
pub fn resolve(
    lens: Resolver,
    candidates: &[Candidate],
    weight: &dyn Fn(&[u8; 32]) -> f64,
) -> Option<Resolution> {
    if candidates.is_empty() {
        return None;
    }
    let keys: Vec<ValueKey> = candidates.iter().map(|c| c.value).collect();
    let newest = |a: &usize, b: &usize| recency(&candidates[*a]).cmp(&recency(&candidates[*b]));
    let all = 0..candidates.len();
    let winner = match lens {
        Resolver::Latest => all.max_by(newest),
        Resolver::Trusted => all.max_by(|a, b| {
            weight(&candidates[*a].agent)
                .total_cmp(&weight(&candidates[*b].agent))
                .then_with(|| newest(a, b))
        }),
        Resolver::Confidence => all.max_by(|a, b| {
            let score = |i: usize| candidates[i].confidence * weight(&candidates[i].agent);
            score(*a).total_cmp(&score(*b)).then_with(|| newest(a, b))
        }),
        Resolver::Consensus => {
            let support = support_by_value(candidates, &keys, weight);
            // Rank values by weighted support, then distinct agents, then recency; the winner
            // is that value's newest assertion.
            support
                .values()
                .max_by(|a, b| {
                    a.weight
                        .total_cmp(&b.weight)
                        .then_with(|| a.agents.cmp(&b.agents))
                        .then_with(|| newest(&a.newest, &b.newest))
                })
                .map(|s| s.newest)
        }
    }?;
    let conflict = keys.iter().any(|k| *k != keys[winner]);
    let agreement = agreement(candidates, &keys, winner, weight);
    let mut alternatives: Vec<usize> = (0..candidates.len()).filter(|i| *i != winner).collect();
    let alternatives_total = alternatives.len();
    if alternatives.len() > MAX_ALTERNATIVES {
        // Only the newest few are listed: select them in linear time, then order those.
        alternatives.select_nth_unstable_by(MAX_ALTERNATIVES - 1, |a, b| newest(b, a));
        alternatives.truncate(MAX_ALTERNATIVES);
    }
    alternatives.sort_by(|a, b| newest(b, a));
    Some(Resolution {
        winner,
        conflict,
        agreement,
        alternatives,
        alternatives_total,
    })
}

struct Support {
    weight: f64,
    agents: usize,
    newest: usize,
}

fn support_by_value(
    candidates: &[Candidate],
    keys: &[ValueKey],
    weight: &dyn Fn(&[u8; 32]) -> f64,
) -> HashMap<ValueKey, Support> {
    let mut seen: HashMap<(ValueKey, [u8; 32]), ()> = HashMap::new();
    let mut out: HashMap<ValueKey, Support> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        let key = keys[i];
        let first_time = seen.insert((key, c.agent), ()).is_none();
        let s = out.entry(key).or_insert(Support {
            weight: 0.0,
            agents: 0,
            newest: i,
        });
        if first_time {
            s.weight += weight(&c.agent);
            s.agents += 1;
        }
        if recency(c) > recency(&candidates[s.newest]) {
            s.newest = i;
        }
    }
    out
}

fn agreement(
    candidates: &[Candidate],
    keys: &[ValueKey],
    winner: usize,
    weight: &dyn Fn(&[u8; 32]) -> f64,
) -> f64 {
    let mut agents: HashMap<[u8; 32], bool> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        let agrees = keys[i] == keys[winner];
        let e = agents.entry(c.agent).or_insert(false);
        *e |= agrees;
    }
    // Summed in agent order: floating-point sums depend on their order, and a hash map's
    // order differs from one map to the next, so the same group could answer two agreements.
    let mut agents: Vec<([u8; 32], bool)> = agents.into_iter().collect();
    agents.sort_unstable_by_key(|(a, _)| *a);
    let total: f64 = agents.iter().map(|(a, _)| weight(a)).sum();
    let behind: f64 = agents
        .iter()
        .filter(|(_, agrees)| *agrees)
        .map(|(a, _)| weight(a))
        .sum();
    if total > 0.0 {
        behind / total
    } else {
        let n = agents.iter().filter(|(_, a)| *a).count();
        n as f64 / agents.len().max(1) as f64
    }
}

/// A canonical text of a JSON value: object keys sorted, numbers by value (an integral number
/// in the exact range of f64 is written as an integer, every other number as its shortest f64).
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.push_str(&v.to_string());
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    out.push_str(&(f as i64).to_string());
                } else {
                    out.push_str(&format!("{f:?}"));
                }
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: u8 = 0xA;
    const B: u8 = 0xB;
    const C: u8 = 0xC;

    /// (agent, ts, log index, confidence, object)
    type Row = (u8, i64, u64, f64, Value);

    fn candidates(rows: &[Row]) -> Vec<Candidate> {
        rows.iter()
            .map(|(agent, ts, li, conf, obj)| Candidate {
                id: AssertionId::from_bytes([*li as u8; 32]),
                agent: [*agent; 32],
                ts: *ts,
                log_index: *li,
                confidence: *conf,
                value: value_key(obj),
            })
            .collect()
    }

    /// Resolves `rows` and returns (winner's log index, conflict, agreement, alternatives' log
    /// indexes).
    fn check(
        lens: Resolver,
        rows: &[Row],
        weights: &[(u8, f64)],
        expected: (u64, bool, f64, &[u64]),
    ) {
        let cs = candidates(rows);
        let w = |a: &[u8; 32]| {
            weights
                .iter()
                .find(|(k, _)| [*k; 32] == *a)
                .map_or(1.0, |(_, w)| *w)
        };
        let r = resolve(lens, &cs, &w).expect("non-empty");
        let alts: Vec<u64> = r.alternatives.iter().map(|i| cs[*i].log_index).collect();
        let got = (
            cs[r.winner].log_index,
            r.conflict,
            r.agreement,
            alts.as_slice(),
        );
        assert_eq!(got.0, expected.0, "{lens:?} winner in {rows:?}");
        assert_eq!(got.1, expected.1, "{lens:?} conflict in {rows:?}");
        assert!(
            (got.2 - expected.2).abs() < 1e-9,
            "{lens:?} agreement {} vs {} in {rows:?}",
            got.2,
            expected.2
        );
        assert_eq!(got.3, expected.3, "{lens:?} alternatives in {rows:?}");
    }

    /// Three agents disagree: A says "red" early with high confidence, B says "blue" latest with
    /// low confidence, C agrees with A in the middle with medium confidence.
    fn three_agents() -> Vec<Row> {
        vec![
            (A, 100, 0, 0.9, json!("red")),
            (B, 300, 1, 0.2, json!("blue")),
            (C, 200, 2, 0.5, json!("red")),
        ]
    }

    #[test]
    fn three_agent_conflict_each_lens_follows_its_definition() {
        let rows = three_agents();
        let third = 1.0 / 3.0;
        check(Resolver::Latest, &rows, &[], (1, true, third, &[2, 0]));
        check(
            Resolver::Consensus,
            &rows,
            &[],
            (2, true, 2.0 * third, &[1, 0]),
        );
        check(
            Resolver::Confidence,
            &rows,
            &[],
            (0, true, 2.0 * third, &[1, 2]),
        );
        // Equal weights: trusted falls back to latest.
        check(Resolver::Trusted, &rows, &[], (1, true, third, &[2, 0]));
    }

    #[test]
    fn weights_change_the_outcome() {
        let rows = three_agents();
        // B trusted 3×: consensus flips to blue (3 vs 2), and trusted picks B.
        check(
            Resolver::Consensus,
            &rows,
            &[(B, 3.0)],
            (1, true, 0.6, &[2, 0]),
        );
        check(
            Resolver::Trusted,
            &rows,
            &[(B, 3.0)],
            (1, true, 0.6, &[2, 0]),
        );
        // A trusted most: trusted picks A although it is oldest.
        check(
            Resolver::Trusted,
            &rows,
            &[(A, 2.0)],
            (0, true, 0.75, &[1, 2]),
        );
        // Confidence × weight: B at 0.2 × 5 = 1.0 beats A at 0.9.
        check(
            Resolver::Confidence,
            &rows,
            &[(B, 5.0)],
            (1, true, 5.0 / 7.0, &[2, 0]),
        );
        // Every weight zero: agreement falls back to counting agents.
        check(
            Resolver::Latest,
            &rows,
            &[(A, 0.0), (B, 0.0), (C, 0.0)],
            (1, true, 1.0 / 3.0, &[2, 0]),
        );
    }

    #[test]
    fn ties_break_by_ts_then_log_index() {
        // Same ts: the later log index wins.
        let rows = vec![(A, 5, 3, 0.5, json!(1)), (B, 5, 4, 0.5, json!(2))];
        check(Resolver::Latest, &rows, &[], (4, true, 0.5, &[3]));
        check(Resolver::Confidence, &rows, &[], (4, true, 0.5, &[3]));
        check(Resolver::Consensus, &rows, &[], (4, true, 0.5, &[3]));
        // An older ts with a later log index loses to the newer ts.
        let rows = vec![(A, 9, 3, 0.5, json!(1)), (B, 5, 4, 0.5, json!(2))];
        check(Resolver::Latest, &rows, &[], (3, true, 0.5, &[4]));
        // Consensus tie in support and agents: the most recently asserted value wins.
        let rows = vec![
            (A, 1, 0, 0.5, json!("x")),
            (B, 2, 1, 0.5, json!("y")),
            (C, 3, 2, 0.5, json!("x")),
            (0xD, 4, 3, 0.5, json!("y")),
        ];
        check(Resolver::Consensus, &rows, &[], (3, true, 0.5, &[2, 1, 0]));
    }

    #[test]
    fn agreement_and_conflict_compare_json_values() {
        // Same value spelled differently: no conflict, full agreement.
        let rows = vec![
            (A, 1, 0, 0.5, json!({"a": 1, "b": [1.0, "x"]})),
            (B, 2, 1, 0.5, json!({"b": [1, "x"], "a": 1.0})),
        ];
        check(Resolver::Latest, &rows, &[], (1, false, 1.0, &[0]));
        // One agent alone.
        check(
            Resolver::Consensus,
            &[(A, 1, 7, 0.1, json!(null))],
            &[],
            (7, false, 1.0, &[]),
        );
        // An agent counts once for consensus however often it repeats itself.
        let rows = vec![
            (A, 1, 0, 0.5, json!("x")),
            (A, 2, 1, 0.5, json!("x")),
            (A, 3, 2, 0.5, json!("x")),
            (B, 4, 3, 0.5, json!("y")),
            (C, 5, 4, 0.5, json!("y")),
        ];
        check(
            Resolver::Consensus,
            &rows,
            &[],
            (4, true, 2.0 / 3.0, &[3, 2, 1, 0]),
        );
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            (json!(1), "1"),
            (json!(1.0), "1"),
            (json!(-0.0), "0"),
            (json!(0.5), "0.5"),
            (json!(1e300), "1e300"),
            (
                json!({"b": 1, "a": [true, null, "é"]}),
                r#"{"a":[true,null,"é"],"b":1}"#,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(canonical(&v), want, "{v}");
        }
        assert_eq!(
            value_key(&json!({"a": [1, 2.0]})),
            value_key(&json!({"a": [1.0, 2]}))
        );
        assert_ne!(value_key(&json!("1")), value_key(&json!(1)));
        assert_eq!(resolve(Resolver::Latest, &[], &|_| 1.0), None);
    }
}
