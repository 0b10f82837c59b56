//! The verifier stage for small write requests (issue 17): one thread takes every single-envelope
//! request that is waiting, verifies their signatures together a chunk at a time (one field
//! inversion for each chunk, `verify_batch`), screens each (parse, decode, strict verify,
//! content defense), and submits everything they accept to the store as one submission, so a
//! burst of single POSTs costs one thread wake-up in and one commit-queue hand-off, not one per
//! request.
//!
//! The router owns the stage; its thread starts on the first write, holds only a weak reference
//! to the server's state, and stops when the router (and with it the channel) is dropped.
//! Larger bodies (batches) are screened on blocking threads, in parallel.

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{OnceLock, Weak};

use axum::body::Bytes;

use crate::ingest::{
    AssertRequest, Screened, Slot, Submitted, chunk_len, parse, prepare, screen, screen_parsed,
    submit_screened,
};
use crate::problem::Problem;
use crate::state::{AppState, Inner};

/// Bodies up to this size go through the stage (an envelope is at most 128 KiB).
pub const STAGE_MAX_BODY_BYTES: usize = 160 * 1024;
/// Most requests screened together.
const STAGE_MAX_REQUESTS: usize = 512;
/// Requests that may wait for the stage before senders wait.
const STAGE_QUEUE: usize = 4096;

struct Pending {
    body: Bytes,
    reply: tokio::sync::oneshot::Sender<Result<Screened, Problem>>,
}

/// The stage: a channel to its thread, started on first use.
pub(crate) struct Verifier {
    state: Weak<Inner>,
    // `None` inside: the thread could not start; writes then use blocking threads.
    tx: OnceLock<Option<SyncSender<Pending>>>,
}

impl Verifier {
    /// The stage of `state` (its thread starts on the first write).
    pub(crate) fn new(state: &AppState) -> Verifier {
        Verifier {
            state: state.downgrade(),
            tx: OnceLock::new(),
        }
    }

    fn sender(&self) -> Option<&SyncSender<Pending>> {
        self.tx
            .get_or_init(|| {
                let (tx, rx) = sync_channel(STAGE_QUEUE);
                let state = self.state.clone();
                let spawned = std::thread::Builder::new()
                    .name("stemedb-verify".into())
                    .spawn(move || run(&state, &rx));
                match spawned {
                    Ok(_) => Some(tx),
                    Err(e) => {
                        tracing::warn!(error = %e,
                            "no verifier thread: single writes use blocking threads");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Screens `body` in the stage and submits what it accepts with whatever else is waiting.
    pub(crate) async fn screen(&self, body: Bytes) -> Result<Screened, Problem> {
        let Some(tx) = self.sender() else {
            return self.screen_on_a_blocking_thread(body).await;
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        let tx = tx.clone();
        let unsent = match tx.try_send(Pending { body, reply }) {
            Ok(()) => None,
            // A full queue: wait on a blocking thread, not on the async worker.
            Err(std::sync::mpsc::TrySendError::Full(p)) => {
                tokio::task::spawn_blocking(move || tx.send(p).err().map(|e| e.0))
                    .await
                    .unwrap_or(None)
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(p)) => Some(p),
        };
        if let Some(p) = unsent {
            // The stage's thread is gone (it can only have panicked): writes go on without it.
            tracing::error!("the verifier stage stopped; screening on blocking threads");
            return self.screen_on_a_blocking_thread(p.body).await;
        }
        rx.await.unwrap_or_else(|_| Err(Problem::internal()))
    }

    async fn screen_on_a_blocking_thread(&self, body: Bytes) -> Result<Screened, Problem> {
        let Some(inner) = self.state.upgrade() else {
            return Err(Problem::internal());
        };
        let st = AppState::from_inner(inner);
        tokio::task::spawn_blocking(move || {
            let mut s = screen(&st, &body)?;
            submit_screened(&st, &mut s);
            Ok(s)
        })
        .await
        .unwrap_or_else(|_| Err(Problem::internal()))
    }
}

fn run(state: &Weak<Inner>, rx: &Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < STAGE_MAX_REQUESTS {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let Some(inner) = state.upgrade() else {
            return;
        };
        screen_and_submit_together(&AppState::from_inner(inner), batch);
    }
}

/// Screens each request, then submits every accepted entry as one submission and splits the
/// outcomes back to the requests in order.
fn screen_and_submit_together(st: &AppState, batch: Vec<Pending>) {
    let (bodies, replies): (Vec<Bytes>, Vec<_>) =
        batch.into_iter().map(|p| (p.body, p.reply)).unzip();
    let parsed: Vec<Result<AssertRequest, Problem>> =
        bodies.iter().map(|body| parse(st, body)).collect();
    // The single-envelope requests' signatures are verified together, a chunk (up to 64
    // envelopes, 64 KiB) at a time, when the first of the chunk comes up: so at most one
    // chunk's decoded statements are alive at once. Every request is screened in arrival order.
    let singles: Vec<usize> = (0..bodies.len())
        .filter(|&i| matches!(parsed[i], Ok(AssertRequest::Single)))
        .collect();
    let mut next_single = 0;
    let mut prepared: Vec<Option<Slot>> = (0..bodies.len()).map(|_| None).collect();
    let mut entries = Vec::new();
    let mut submitted = Submitted::new();
    // Requests with entries to log, with how many, in submission order.
    let mut waiting = Vec::new();
    for (i, (reply, request)) in replies.into_iter().zip(parsed).enumerate() {
        if singles.get(next_single) == Some(&i) {
            let rest = &singles[next_single..];
            let chunk = &rest[..chunk_len(rest.iter().map(|&j| bodies[j].len())).min(rest.len())];
            let envelopes: Vec<_> = chunk
                .iter()
                .map(|&j| (&bodies[j], 0..bodies[j].len()))
                .collect();
            for (&j, slot) in chunk.iter().zip(prepare(st, &envelopes)) {
                prepared[j] = Some(slot);
            }
            next_single += chunk.len();
        }
        let slot = prepared[i].take();
        match request.and_then(|r| screen_parsed(st, &bodies[i], r, slot, &mut submitted)) {
            Ok(mut s) => {
                let mine = s.take_entries();
                if mine.is_empty() {
                    // Refused, quarantined or a duplicate: its answer is known now.
                    let _ = reply.send(Ok(s));
                    continue;
                }
                waiting.push((reply, s, mine.len()));
                entries.extend(mine);
            }
            Err(problem) => {
                let _ = reply.send(Err(problem));
            }
        }
    }
    if waiting.is_empty() {
        return;
    }
    // One submission for everything accepted; each request awaits its own part of it.
    let lens: Vec<usize> = waiting.iter().map(|(_, _, n)| *n).collect();
    let parts = st
        .store()
        .submit(entries, stemedb_store::now_ms())
        .split(&lens);
    for ((reply, mut s, _), part) in waiting.into_iter().zip(parts) {
        s.attach(part);
        let _ = reply.send(Ok(s));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use stemedb_core::{sign, signing_key_from_seed};
    use stemedb_store::{Store, StoreOptions};

    use super::*;
    use crate::ingest::{Ingested, Item};
    use crate::metrics::Metrics;
    use crate::state::Limits;

    fn envelope(seed: u8, extra: serde_json::Value) -> (String, Bytes) {
        let k = signing_key_from_seed(&[seed; 32]);
        let mut st = json!({
            "v": 1, "subject": "stage/own", "predicate": "p", "object": seed,
            "agent": hex::encode(k.verifying_key().as_bytes()), "ts": 1_000,
        });
        if let (Some(m), Some(e)) = (st.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        let v = sign(&k, st.to_string().into_bytes()).expect("valid statement");
        (v.id().to_hex(), Bytes::from(v.envelope().encode()))
    }

    /// Two single POSTs screened in one pass of the stage are one submission: a link from
    /// another agent to the assertion of the request before it is held for review (design §8),
    /// as if the target had been posted first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_link_to_an_earlier_request_in_the_same_pass_is_held() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new().expect("metrics");
        let store = Store::open(
            tmp.path(),
            StoreOptions::default(),
            Arc::new(metrics.clone()),
        )
        .expect("store");
        let st = AppState::new(metrics, Arc::new(store), Limits::defaults());
        let (target, target_env) = envelope(1, json!({}));
        let (link, link_env) = envelope(2, json!({"supersedes": [target], "retract": true}));
        let (tx1, rx1) = tokio::sync::oneshot::channel();
        let (tx2, rx2) = tokio::sync::oneshot::channel();
        let pass = vec![
            Pending {
                body: target_env,
                reply: tx1,
            },
            Pending {
                body: link_env,
                reply: tx2,
            },
        ];
        let s = st.clone();
        tokio::task::spawn_blocking(move || screen_and_submit_together(&s, pass))
            .await
            .expect("the pass ran");
        let first = rx1.await.expect("answered").expect("screened");
        assert!(
            matches!(first.items[..], [Item::Accepted { .. }]),
            "the target is logged"
        );
        let second = rx2.await.expect("answered").expect("screened");
        match &second.items[..] {
            [Item::Done(Ok(Ingested::Quarantined(id)))] => assert_eq!(id.to_hex(), link),
            _ => panic!("the other agent's link was not held"),
        }
        let store = st.store();
        let id = stemedb_core::AssertionId::parse(&link).expect("id");
        assert!(store.quarantined(&id).expect("read").is_some());
        assert!(store.get(&id).expect("read").is_none());
    }
}
