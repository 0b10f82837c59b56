//! The write pipeline of `POST /v1/assert`: parse the body once (borrowed raw values, no value
//! tree); decode, check and breaker-gate its envelopes a chunk at a time and verify each chunk's
//! signatures together (strict Ed25519, `verify_batch`); then, one envelope at a time and in
//! order, gate it again and screen it (content defense), quarantine what trips a rule, and hand
//! the rest to the store. The handler (`api.rs`) and the verifier stage (`verifier.rs`) both
//! run it; it runs on a blocking thread, never on an async worker.

use std::collections::HashMap;

use axum::body::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use stemedb_core::{AssertionId, Envelope, Prepared, Verified, verify_batch};
use stemedb_store::{Completion, Entry, Outcome, QuarantineEntry, now_ms};

use crate::config::MAX_BATCH_ITEMS;
use crate::defense::Verdict;
use crate::problem::Problem;
use crate::state::AppState;

/// What a `/v1/assert` body holds.
pub(crate) enum AssertRequest {
    /// The whole body is one envelope.
    Single,
    /// A batch: the byte range of each envelope in the body.
    Batch(Vec<std::ops::Range<usize>>),
}

/// Top-level keys read from a `/v1/assert` body before it is refused as malformed.
const MAX_TOP_LEVEL_KEYS: usize = 16;

/// The top level of a body: each key with its value's raw text, borrowed from the body (no
/// value tree is built, so a large body costs no more than its bytes).
struct TopLevel<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    // An envelope has three keys and a batch one: a body of millions of keys
                    // stops here instead of costing a pair for each (design §7).
                    if out.len() == MAX_TOP_LEVEL_KEYS {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_TOP_LEVEL_KEYS} keys"
                        )));
                    }
                    out.push((k, m.next_value::<&'de RawValue>()?));
                }
                Ok(TopLevel(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads a `/v1/assert` body once, without building a value tree of it. Runs on a blocking
/// thread: a 16 MiB body takes milliseconds to scan.
fn parse_assert_body(body: &[u8], single_limit: usize) -> Result<AssertRequest, Problem> {
    let top: TopLevel<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::bad_request(
            "malformed_envelope",
            "the body must be an envelope object or {\"assertions\": [...]}",
        ),
        _ => Problem::bad_request("malformed_json", format!("the body is not JSON: {e}")),
    })?;
    let Some((_, items)) = top.0.iter().find(|(k, _)| k == "assertions") else {
        if body.len() > single_limit {
            return Err(Problem::too_large(
                "too_large",
                format!("a single-envelope body is limited to {single_limit} bytes"),
            ));
        }
        return Ok(AssertRequest::Single);
    };
    if top.0.len() != 1 {
        return Err(Problem::bad_request(
            "malformed_batch",
            "a batch body has exactly one key, \"assertions\"",
        ));
    }
    let too_many = std::cell::Cell::new(false);
    let items = batch_items(items.get(), &too_many).map_err(|e| {
        if too_many.get() {
            Problem::too_large(
                "too_large",
                format!("a batch holds 1 to {MAX_BATCH_ITEMS} envelopes, this one has more"),
            )
        } else {
            Problem::bad_request(
                "malformed_batch",
                format!("\"assertions\" must be an array of envelopes: {e}"),
            )
        }
    })?;
    if items.is_empty() {
        return Err(Problem::bad_request(
            "malformed_batch",
            format!("a batch holds 1 to {MAX_BATCH_ITEMS} envelopes, this one has none"),
        ));
    }
    let base = body.as_ptr() as usize;
    let ranges = items
        .iter()
        .map(|r| {
            let start = r.get().as_ptr() as usize - base;
            start..start + r.get().len()
        })
        .collect();
    Ok(AssertRequest::Batch(ranges))
}

/// The raw items of a batch's `"assertions"` array. It stops at the first item past
/// [`MAX_BATCH_ITEMS`] (setting `too_many`), so an array of millions of tiny items costs no
/// more memory than the cap allows (design §7: bodies in flight within about twice their bytes).
fn batch_items<'a>(
    text: &'a str,
    too_many: &std::cell::Cell<bool>,
) -> Result<Vec<&'a RawValue>, serde_json::Error> {
    struct Items<'c>(&'c std::cell::Cell<bool>);
    impl<'de> serde::de::Visitor<'de> for Items<'_> {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of envelopes")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                if out.len() == MAX_BATCH_ITEMS {
                    self.0.set(true);
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_BATCH_ITEMS} items"
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let items = serde::Deserializer::deserialize_seq(&mut de, Items(too_many))?;
    de.end()?;
    Ok(items)
}

/// What became of one accepted envelope.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ingested {
    /// In the log (new or already there).
    Stored(Outcome),
    /// Held in quarantine until an operator decides.
    Quarantined(AssertionId),
}

pub(crate) fn outcome_json(o: &Ingested) -> Value {
    match o {
        Ingested::Stored(o) => json!({
            "id": o.id.to_hex(),
            "status": if o.created { "created" } else { "duplicate" },
            "log_index": o.log_index,
        }),
        Ingested::Quarantined(id) => json!({"id": id.to_hex(), "status": "quarantined"}),
    }
}

/// What the pipeline has decided about one envelope of a body.
pub(crate) enum Item {
    /// Nothing yet (only while screening; an item left so answers an internal error).
    Open,
    /// Refused, quarantined, or already in the log: its answer is known.
    Done(Result<Ingested, Problem>),
    /// Accepted for the log: its answer is the store's outcome for its entry (the entries are
    /// in the order of these items).
    Accepted {
        /// Who signed it (a stored write counts as a success for the agent's breaker).
        agent: [u8; 32],
    },
}

/// What screening a body decided: one [`Item`] per envelope, the entries of the accepted ones,
/// and, once they are submitted, their outcomes.
pub(crate) struct Screened {
    pub(crate) items: Vec<Item>,
    pub(crate) single: bool,
    entries: Vec<Entry>,
    outcomes: Option<Completion>,
}

impl Screened {
    /// Takes the accepted entries to submit; [`Screened::attach`] then gives them their
    /// outcomes.
    pub(crate) fn take_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }

    /// Where the accepted entries' outcomes come from.
    pub(crate) fn attach(&mut self, outcomes: Completion) {
        self.outcomes = Some(outcomes);
    }

    /// Waits for the store and answers every item, in order; a stored write counts as a
    /// success for its agent's breaker.
    pub(crate) async fn answers(self, st: &AppState) -> Vec<Result<Ingested, Problem>> {
        let mut outcomes = match self.outcomes {
            Some(c) => c.await,
            None => Vec::new(),
        }
        .into_iter();
        let defense = st.defense();
        self.items
            .into_iter()
            .map(|item| match item {
                Item::Done(r) => r,
                Item::Open => Err(Problem::server_error("internal", "no result")),
                Item::Accepted { agent } => {
                    let o = outcomes
                        .next()
                        .unwrap_or(Err(stemedb_store::StoreError::Closed));
                    if o.is_ok()
                        && let Some(t) = defense.record(&agent, None, false)
                    {
                        st.breaker_changed(t);
                    }
                    o.map(Ingested::Stored).map_err(Problem::from)
                }
            })
            .collect()
    }
}

/// Submits a screened body's entries to the store on its own (one submission).
pub(crate) fn submit_screened(st: &AppState, screened: &mut Screened) {
    let entries = screened.take_entries();
    if entries.is_empty() {
        return;
    }
    let outcomes = st.store().submit(entries, now_ms());
    screened.attach(outcomes);
}

/// Envelopes whose signatures are verified together: one field inversion for the chunk's
/// recomputed points instead of one each (≈ 4 µs an envelope: the verification ceiling rose
/// 14%, decision 0001). A chunk's decoded statements are alive at once, so it stays small
/// (request memory, decision 0018).
pub(crate) const VERIFY_CHUNK: usize = 64;
/// Envelope bytes past which a chunk ends early: a statement's value tree can take many times
/// its text (a 60 KiB array of zeros is about 1 MiB of values), so large envelopes are verified
/// one or two at a time and a chunk costs at most a few MiB.
const VERIFY_CHUNK_BYTES: usize = 64 * 1024;

/// How many of `sizes` (envelope lengths, from the first) go into the next chunk: at least one,
/// at most [`VERIFY_CHUNK`], and no more once they reach [`VERIFY_CHUNK_BYTES`].
pub(crate) fn chunk_len(sizes: impl Iterator<Item = usize>) -> usize {
    let mut n = 0;
    let mut bytes = 0;
    for size in sizes.take(VERIFY_CHUNK) {
        if n > 0 && bytes + size > VERIFY_CHUNK_BYTES {
            break;
        }
        n += 1;
        bytes += size;
    }
    n.max(1)
}

/// Where one envelope stands after [`prepare`].
pub(crate) enum Slot {
    /// Taken (its answer is being written).
    Taken,
    /// It did not decode or pass the checks before its signature.
    Failed(Problem),
    /// Its signature was verified with its chunk.
    Checked {
        agent: [u8; 32],
        result: stemedb_core::Result<Verified>,
    },
    /// Its agent's breaker was open: not verified (an open breaker refuses before the costly
    /// check), unless the gate lets it through when its turn comes.
    Held { agent: [u8; 32], prepared: Prepared },
}

/// Decodes and checks each envelope (`body[range]`), passes each through its agent's breaker,
/// and verifies the signatures of those let through in one `verify_batch`.
pub(crate) fn prepare(st: &AppState, envelopes: &[(&Bytes, std::ops::Range<usize>)]) -> Vec<Slot> {
    let defense = st.defense();
    let mut slots = Vec::with_capacity(envelopes.len());
    let mut batch = Vec::with_capacity(envelopes.len());
    let mut batched = Vec::with_capacity(envelopes.len());
    for (j, (body, range)) in envelopes.iter().enumerate() {
        let prepared = match Envelope::decode(&body[range.clone()]).and_then(Prepared::new) {
            Ok(p) => p,
            Err(e) => {
                slots.push(Slot::Failed(Problem::from_core(&e)));
                continue;
            }
        };
        let agent = *prepared.statement().agent();
        match defense.gate(&agent) {
            Ok(Some(t)) => st.breaker_changed(t),
            Ok(None) => {}
            Err(_) => {
                slots.push(Slot::Held { agent, prepared });
                continue;
            }
        }
        batched.push((j, agent));
        batch.push(prepared);
        slots.push(Slot::Taken);
    }
    for ((j, agent), result) in batched.into_iter().zip(verify_batch(batch)) {
        slots[j] = Slot::Checked { agent, result };
    }
    slots
}

/// Parses a `/v1/assert` body: one envelope, or a batch and where each of its envelopes is.
pub(crate) fn parse(st: &AppState, body: &Bytes) -> Result<AssertRequest, Problem> {
    parse_assert_body(body, st.limits().single_body)
}

/// Parses, decodes, verifies and screens one body (blocking: run it off the async workers);
/// quarantines what trips a rule. The entries to log are left in `Screened::entries`.
pub(crate) fn screen(st: &AppState, body: &Bytes) -> Result<Screened, Problem> {
    screen_parsed(st, body, parse(st, body)?, None, &mut Submitted::new())
}

/// The agents of the assertions accepted so far for one submission to the store (one body, or
/// one pass of the verifier stage), by id: if the store logs them, they enter the log before
/// anything screened after them in that submission, so for the screen of a later `supersedes`
/// they count as in the log (design §8: a link from another agent to an assertion in the log is
/// held for review; if the submission fails, the hold was only stricter than needed).
pub(crate) type Submitted = HashMap<AssertionId, [u8; 32]>;

/// [`screen`] of a body already parsed (`request`), with the slot of a single envelope already
/// prepared (`Some`, by the verifier stage, together with other requests' envelopes), and what
/// the same submission accepted before this body (`submitted`, which this body's accepted
/// assertions join).
pub(crate) fn screen_parsed(
    st: &AppState,
    body: &Bytes,
    request: AssertRequest,
    mut single_slot: Option<Slot>,
    submitted: &mut Submitted,
) -> Result<Screened, Problem> {
    let store = st.store();
    let (ranges, single) = match request {
        AssertRequest::Single => (
            vec![std::ops::Range {
                start: 0,
                end: body.len(),
            }],
            true,
        ),
        AssertRequest::Batch(r) => (r, false),
    };
    let defense = st.defense();
    let n = ranges.len();
    let mut items: Vec<Item> = (0..n).map(|_| Item::Open).collect();
    let mut entries = Vec::with_capacity(n);
    let mut held: Vec<QuarantineEntry> = Vec::new();
    let mut held_positions = Vec::new();
    let received = now_ms();
    // Chunk by chunk: decode and check each envelope, verify the chunk's signatures together
    // (`verify_batch`: one field inversion for the chunk), then screen each in order.
    let mut slots: Vec<Slot> = Vec::new();
    let mut chunk_start = 0;
    for (i, range) in ranges.iter().enumerate() {
        if i == chunk_start + slots.len() {
            // The previous chunk's holds are stored (and counted against their agents) before
            // the next chunk is gated and verified, so a breaker they open refuses the rest of
            // this body: at most one chunk is held past the threshold.
            store_held(st, &mut held, &mut held_positions, &mut items);
            chunk_start = i;
            slots = match single_slot.take() {
                Some(slot) if n == 1 => vec![slot],
                _ => {
                    let len = chunk_len(ranges[i..].iter().map(|r| r.len()));
                    let chunk: Vec<_> = ranges[i..n.min(i + len)]
                        .iter()
                        .map(|r| (body, r.clone()))
                        .collect();
                    prepare(st, &chunk)
                }
            };
        }
        let raw = &body[range.clone()];
        let slot = slots
            .get_mut(i - chunk_start)
            .map_or(Slot::Taken, |s| std::mem::replace(s, Slot::Taken));
        let (agent, checked) = match slot {
            // A short chunk (never expected) leaves the item open: an internal error.
            Slot::Taken => continue,
            Slot::Failed(problem) => {
                items[i] = Item::Done(Err(problem));
                continue;
            }
            Slot::Checked { agent, result } => (agent, Ok(result)),
            Slot::Held { agent, prepared } => (agent, Err(prepared)),
        };
        // The gate again, in order: an earlier envelope of this body may have opened the
        // breaker since the chunk was prepared.
        match defense.gate(&agent) {
            Ok(Some(t)) => st.breaker_changed(t),
            Ok(None) => {}
            Err(problem) => {
                items[i] = Item::Done(Err(problem));
                continue;
            }
        }
        // Held back at the first gate, let through now: verified on its own.
        let verified = match checked.unwrap_or_else(Prepared::verify) {
            Ok(v) => v,
            Err(e) => {
                items[i] = Item::Done(Err(Problem::from_core(&e)));
                continue;
            }
        };
        let agent = *verified.statement().agent();
        let payload_len = verified.envelope().payload().len();
        let agent_of = |id: &AssertionId| match submitted.get(id) {
            Some(owner) => Ok(Some(*owner)),
            None => store.agent_of(id),
        };
        match defense.screen(verified.statement(), payload_len, &agent_of) {
            Verdict::Accept => {
                submitted.insert(verified.id(), agent);
                entries.push(Entry::new(verified, body.slice(range.clone())));
                items[i] = Item::Accepted { agent };
            }
            Verdict::Quarantine(reasons) => {
                // Already released into the log: it is a duplicate, not news (and not held
                // against the agent).
                match store.log_index_of(&verified.id()) {
                    Ok(Some(log_index)) => {
                        items[i] = Item::Done(Ok(Ingested::Stored(Outcome {
                            id: verified.id(),
                            log_index,
                            created: false,
                        })));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        items[i] = Item::Done(Err(Problem::from(e)));
                        continue;
                    }
                }
                held.push(QuarantineEntry {
                    id: verified.id(),
                    agent: hex::encode(agent),
                    reasons,
                    received_at_ms: received,
                    envelope: String::from_utf8_lossy(raw.trim_ascii()).into_owned(),
                });
                held_positions.push(i);
            }
            Verdict::Refuse(problem) => {
                // Counted once per id: replaying one signed envelope cannot open its
                // agent's breaker.
                if let Some(t) = defense.record(&agent, Some(verified.id()), true) {
                    st.breaker_changed(t);
                }
                items[i] = Item::Done(Err(problem));
            }
        }
    }
    store_held(st, &mut held, &mut held_positions, &mut items);
    Ok(Screened {
        items,
        single,
        entries,
        outcomes: None,
    })
}

/// Stores the quarantine holds screened so far (one write for all of them), answers their
/// items, and counts each newly held id against its agent's breaker; empties `held`.
fn store_held(
    st: &AppState,
    held: &mut Vec<QuarantineEntry>,
    held_positions: &mut Vec<usize>,
    items: &mut [Item],
) {
    if held.is_empty() {
        return;
    }
    let defense = st.defense();
    let positions = std::mem::take(held_positions);
    let entries = std::mem::take(held);
    match st.store().quarantine(&entries) {
        Ok(new) => {
            for ((i, e), is_new) in positions.into_iter().zip(&entries).zip(new) {
                if is_new {
                    tracing::info!(id = %e.id, agent = %e.agent, reasons = ?e.reasons, "quarantined");
                    // Only a newly held id counts against its agent: a replay of one
                    // already held (by anyone) does not.
                    if let Ok(agent) = stemedb_core::parse_agent(&e.agent)
                        && let Some(t) = defense.record(&agent, Some(e.id), true)
                    {
                        st.breaker_changed(t);
                    }
                }
                items[i] = Item::Done(Ok(Ingested::Quarantined(e.id)));
            }
            st.refresh_quarantine_size();
        }
        Err(e) => {
            let p = Problem::from(e);
            for i in positions {
                items[i] = Item::Done(Err(p.clone()));
            }
        }
    }
}
