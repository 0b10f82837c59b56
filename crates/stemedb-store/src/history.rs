//! The history of one (subject, predicate) group: every assertion of it in log order, with
//! what became of each (design §12, the MCP `history` tool; `GET /v1/history`).
//!
//! The group's rows are contiguous in `subject.idx` but ordered by claimed `ts`, so listing
//! them in log order reads the group's keys (keys only, no envelope) and sorts the log indexes.
//! That read is bounded by the scan budget: a group with more rows than the budget is refused
//! with [`QueryError::GroupTooLarge`], and `lens=raw&include_superseded=true` pages through it
//! in time order instead (decision 0020).

use std::ops::Bound;

use serde_json::Value;
use stemedb_core::AssertionId;

use crate::keys::{self, IndexKind};
use crate::query::{QueryError, as_of_size};
use crate::{MAX_LIMIT, Store, StoreError};

/// What became of an assertion, as of the answer's tree size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryStatus {
    /// Nothing of its own agent supersedes it.
    Live,
    /// A later assertion of its own agent corrects it.
    Superseded,
    /// A retraction of its own agent withdraws it.
    Retracted,
    /// It is itself a retraction.
    Retraction,
}

/// One assertion of a group's history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryEntry {
    /// Its id.
    pub id: AssertionId,
    /// Its position in the log.
    pub log_index: u64,
    /// The signing agent's public key, hex.
    pub agent: String,
    /// Claimed time, Unix ms.
    pub ts: i64,
    /// Claimed confidence.
    pub confidence: f64,
    /// The object.
    pub object: Value,
    /// Start of the validity interval, Unix ms (inclusive; absent: open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<i64>,
    /// End of the validity interval, Unix ms (exclusive; absent: open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<i64>,
    /// The ids it corrects or retracts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<AssertionId>,
    /// What became of it.
    pub status: HistoryStatus,
    /// The assertion of its own agent that superseded or retracted it (for a retraction: the
    /// one that corrected the retraction, if any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<AssertionId>,
}

/// A page of a group's history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct History {
    /// The tree size the answer describes.
    pub tree_size: u64,
    /// The group's assertions with a log index above `after`, in log order.
    pub entries: Vec<HistoryEntry>,
    /// The log index to pass as `after` for the next page; `None` on the last.
    pub next_after: Option<u64>,
}

impl Store {
    /// The history of (`subject`, `predicate`) as of tree size `as_of` (default: now): the
    /// assertions with a log index above `after`, at most `limit`, in log order. Reads at most
    /// `budget` index keys.
    pub fn history(
        &self,
        subject: &str,
        predicate: &str,
        as_of: Option<u64>,
        after: Option<u64>,
        limit: usize,
        budget: usize,
    ) -> Result<History, QueryError> {
        if limit == 0 || limit > MAX_LIMIT {
            return Err(QueryError::BadParameter(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let tree_size = as_of_size(as_of, self.head().size)?;
        let mut prefix = keys::subject_prefix(subject.split('/'), true);
        prefix.extend_from_slice(predicate.as_bytes());
        prefix.push(keys::SEGMENT_END);
        let end = crate::query::prefix_end(&prefix);
        let view = self.view()?;
        let table = view.index_tables(IndexKind::Subject)?;
        let end: Bound<&[u8]> = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        let keys = view.index_keys(
            table,
            IndexKind::Subject,
            Bound::Included(prefix.as_slice()),
            end,
        )?;
        let mut indexes = Vec::new();
        for (examined, key) in keys.enumerate() {
            if examined >= budget.max(1) {
                return Err(QueryError::GroupTooLarge(format!(
                    "{subject} {predicate} has more than {budget} assertions; page through it \
                     with /v1/query?lens=raw&include_superseded=true&subject=…&predicate=…"
                )));
            }
            let key = key?;
            let (ts, li) = keys::key_suffix(&key)
                .ok_or_else(|| StoreError::Corrupt("index key shorter than 16 bytes".into()))?;
            if li < tree_size && after.is_none_or(|a| li > a) {
                indexes.push((li, ts));
            }
        }
        indexes.sort_unstable();
        let more = indexes.len() > limit;
        indexes.truncate(limit);
        let by_seq = view.by_seq()?;
        let row_of = |li: u64| by_seq.row(li);
        let mut entries = Vec::with_capacity(indexes.len());
        for &(li, ts) in &indexes {
            let row = row_of(li)?;
            let (status, superseded_by) = if row.retract {
                // A retraction its agent later corrected names the correction too.
                let by = if row.superseded_at < tree_size {
                    Some(row_of(row.superseded_at)?.id)
                } else {
                    None
                };
                (HistoryStatus::Retraction, by)
            } else if row.superseded_at < tree_size {
                let by = row_of(row.superseded_at)?;
                let status = if by.retract {
                    HistoryStatus::Retracted
                } else {
                    HistoryStatus::Superseded
                };
                (status, Some(by.id))
            } else {
                (HistoryStatus::Live, None)
            };
            let stored = self.load_object(&row)?;
            entries.push(HistoryEntry {
                id: row.id,
                log_index: li,
                agent: hex::encode(row.agent),
                ts,
                confidence: row.confidence,
                object: stored.object,
                valid_from: stored.valid_from,
                valid_until: stored.valid_until,
                supersedes: stored.supersedes,
                status,
                superseded_by,
            });
        }
        Ok(History {
            tree_size,
            next_after: more.then(|| indexes.last().map(|(li, _)| *li)).flatten(),
            entries,
        })
    }
}
