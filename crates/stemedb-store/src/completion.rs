//! The answer to a submission: [`Store::submit`](crate::Store::submit) returns a [`Completion`]
//! that the caller awaits (it is a `Future`) or blocks on ([`Completion::wait`]). The commit
//! thread only fills it in; nothing of the caller runs on that thread.
//!
//! A completion can be split into parts ([`Completion::split`]): the server's verifier stage
//! submits the entries of many requests as one group and hands each request its own part.
//! If the store drops a submission without answering it (its commit thread stopped), every item
//! answers [`StoreError::Dropped`]: never a hang, never a success.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::{Outcome, StoreError};

/// One result per item of a submission, in order.
pub type Outcomes = Vec<Result<Outcome, StoreError>>;

struct Shared {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    // `Some` once answered; each part takes its own range out.
    results: Option<Vec<Option<Result<Outcome, StoreError>>>>,
    wakers: Vec<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is written whole under the lock, so a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The outcomes of a submission (or of a part of one), once the store has them.
#[must_use = "a submission's outcomes say whether each item is durable"]
pub struct Completion {
    shared: Arc<Shared>,
    start: usize,
    len: usize,
}

/// The commit thread's side of a [`Completion`].
pub(crate) struct Completer {
    shared: Option<Arc<Shared>>,
    len: usize,
}

/// A completion for `len` items and the completer that answers it.
pub(crate) fn pair(len: usize) -> (Completer, Completion) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        done: Condvar::new(),
    });
    (
        Completer {
            shared: Some(shared.clone()),
            len,
        },
        Completion {
            shared,
            start: 0,
            len,
        },
    )
}

impl Completer {
    /// Answers every item (missing results answer `Dropped`; extra ones are dropped).
    pub(crate) fn complete(mut self, results: Outcomes) {
        self.fill(results);
    }

    fn fill(&mut self, mut results: Outcomes) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        results.truncate(self.len);
        if results.len() < self.len {
            tracing::error!(
                answered = results.len(),
                items = self.len,
                "the store dropped a submission without answering every item"
            );
        }
        results.resize_with(self.len, || Err(StoreError::Dropped));
        let wakers = {
            let mut st = shared.lock();
            st.results = Some(results.into_iter().map(Some).collect());
            std::mem::take(&mut st.wakers)
        };
        shared.done.notify_all();
        for w in wakers {
            w.wake();
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.fill(Vec::new());
    }
}

impl Completion {
    /// Items this completion answers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it answers no item.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Splits into consecutive parts of `lens` items (which should add up to [`Self::len`]; a
    /// part past the end answers nothing), each awaited on its own.
    pub fn split(self, lens: &[usize]) -> Vec<Completion> {
        let mut start = self.start;
        let end = self.start + self.len;
        lens.iter()
            .map(|&n| {
                let s = start.min(end);
                let len = n.min(end - s);
                start = s + len;
                Completion {
                    shared: self.shared.clone(),
                    start: s,
                    len,
                }
            })
            .collect()
    }

    fn take(&self, st: &mut State) -> Option<Outcomes> {
        let results = st.results.as_mut()?;
        Some(
            (self.start..self.start + self.len)
                .map(|i| {
                    results
                        .get_mut(i)
                        .and_then(Option::take)
                        .unwrap_or(Err(StoreError::Dropped))
                })
                .collect(),
        )
    }

    /// Blocks until the store answers.
    pub fn wait(self) -> Outcomes {
        let mut st = self.shared.lock();
        loop {
            if let Some(out) = self.take(&mut st) {
                return out;
            }
            st = self
                .shared
                .done
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Future for Completion {
    type Output = Outcomes;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcomes> {
        let mut st = self.shared.lock();
        match self.take(&mut st) {
            Some(out) => Poll::Ready(out),
            None => {
                if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    st.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stemedb_core::AssertionId;

    fn outcome(i: u64) -> Result<Outcome, StoreError> {
        Ok(Outcome {
            id: AssertionId::from_bytes([i as u8; 32]),
            log_index: i,
            created: true,
        })
    }

    #[test]
    fn parts_get_their_own_items_and_a_dropped_completer_answers_dropped() {
        let (completer, completion) = pair(5);
        let parts = completion.split(&[2, 0, 3]);
        let waiter = std::thread::spawn(move || {
            parts
                .into_iter()
                .map(|p| {
                    p.wait()
                        .into_iter()
                        .map(|r| r.map(|o| o.log_index).ok())
                        .collect()
                })
                .collect::<Vec<Vec<Option<u64>>>>()
        });
        completer.complete((0..4).map(outcome).collect());
        let got = waiter.join().expect("waiter");
        // Four results for five items: the fifth answers Dropped.
        assert_eq!(
            got,
            vec![vec![Some(0), Some(1)], vec![], vec![Some(2), Some(3), None]]
        );
        let (completer, completion) = pair(2);
        drop(completer);
        let out = completion.wait();
        assert!(
            out.iter().all(|r| matches!(r, Err(StoreError::Dropped))),
            "{out:?}"
        );
    }
}
