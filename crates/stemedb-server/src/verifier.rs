//! The verifier stage for small write requests (issue 17): one thread takes every single-envelope
//! request that is waiting, screens each (parse, decode, strict verify, content defense), and
//! submits everything they accept to the store as one submission, so a burst of single POSTs
//! costs one thread wake-up in and one commit-queue hand-off, not one per request.
//!
//! The thread holds only a weak reference to the server's state and stops when the state is
//! dropped (its channel closes). Larger bodies (batches) are screened on blocking threads as
//! before, in parallel.

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Weak};

use axum::body::Bytes;

use crate::api::{Screened, screen};
use crate::app::{AppState, Inner};
use crate::problem::Problem;

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

/// The stage's handle.
pub(crate) struct Verifier {
    tx: SyncSender<Pending>,
}

impl Verifier {
    /// Starts the stage's thread for `state` (held weakly).
    pub(crate) fn start(state: Weak<Inner>) -> Option<Verifier> {
        let (tx, rx) = sync_channel(STAGE_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("stemedb-verify".into())
            .spawn(move || run(&state, &rx));
        match spawned {
            Ok(_) => Some(Verifier { tx }),
            Err(e) => {
                tracing::warn!(error = %e, "no verifier thread: single writes use blocking threads");
                None
            }
        }
    }

    /// Screens `body` in the stage and submits what it accepts with whatever else is waiting.
    pub(crate) async fn screen(&self, body: Bytes) -> Result<Screened, Problem> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        // A full queue: wait on a blocking thread, not on the async worker.
        let tx = self.tx.clone();
        let sent = match tx.try_send(Pending { body, reply }) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(p)) => {
                tokio::task::spawn_blocking(move || tx.send(p).map_err(|_| ()))
                    .await
                    .unwrap_or(Err(()))
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(()),
        };
        if sent.is_err() {
            return Err(Problem::internal());
        }
        rx.await.unwrap_or_else(|_| Err(Problem::internal()))
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
        let st = AppState::from_inner(inner);
        screen_and_submit_together(&st, batch);
    }
}

/// Screens each request, then submits every accepted entry as one submission and splits the
/// outcomes back to the requests in order.
fn screen_and_submit_together(st: &AppState, batch: Vec<Pending>) {
    let mut entries = Vec::new();
    let mut parts = Vec::new();
    for p in batch {
        match screen(st, &p.body) {
            Ok(mut s) => {
                if s.entries.is_empty() {
                    let _ = p.reply.send(Ok(s));
                    continue;
                }
                let (mine, tx) = s.take_entries();
                parts.push((mine.len(), tx));
                entries.extend(mine);
                let _ = p.reply.send(Ok(s));
            }
            Err(problem) => {
                let _ = p.reply.send(Err(problem));
            }
        }
    }
    if entries.is_empty() {
        return;
    }
    st.store().submit(
        entries,
        crate::api::now_ms(),
        Box::new(move |outcomes| {
            let mut it = outcomes.into_iter();
            for (n, tx) in parts {
                let mine: Vec<_> = it.by_ref().take(n).collect();
                let _ = tx.send(mine);
            }
        }),
    );
}

/// The stage of `state`, started on first use.
pub(crate) fn of(inner: &Arc<Inner>) -> Option<&Verifier> {
    inner
        .verifier
        .get_or_init(|| Verifier::start(Arc::downgrade(inner)))
        .as_ref()
}
