//! The query engine (design §6): pick an index and a key range from the filters, scan one read
//! transaction, choose each group's live assertions, and let a lens resolve them.
//!
//! The live set of a (subject, predicate) group, as of tree size N, is built from the rows with
//! log index < N that pass the `agent`, `since` and `until` filters:
//! 1. A row whose id is the target of a `supersedes` by an assertion of the same agent with log
//!    index < N drops out (each row records the earliest such log index, so this costs no
//!    lookup; links from other agents never take effect, decision 0016).
//! 2. Each agent's newest remaining row (by `ts`, then log index) is that agent's current
//!    belief; its older rows drop out. A retraction as an agent's newest row means the agent
//!    asserts no value.
//!
//! With `include_superseded` both steps are skipped: every row except retractions is live. The
//! `raw` lens skips step 1 only: every assertion is a result, superseded ones and retractions only
//! with `include_superseded`.
//!
//! Pagination is keyset: a cursor holds the tree size of the first page (every later page answers
//! as of the same size, so concurrent writes neither repeat nor skip results), a hash of the
//! query's filters, and the last key returned.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redb::TableDefinition;
use serde_json::Value;
use stemedb_core::AssertionId;

use crate::keys::{self, IndexKind, IndexValue};
use crate::lens::{self, Candidate, Resolver};
use crate::memtable::View;
use crate::{AGENT_IDX, CONCEPT_PATH_IDX, PREDICATE_IDX, SUBJECT_IDX, Store, StoreError};

/// Default results per page.
pub const DEFAULT_LIMIT: usize = 100;
/// Most results per page.
pub const MAX_LIMIT: usize = 1000;
/// Default index rows one request may examine (design §6); `Query::scan_budget`.
pub const DEFAULT_SCAN_BUDGET: usize = 10_000;
/// How often (in rows) a long scan checks whether its request is gone.
const CANCEL_CHECK_ROWS: usize = 512;
/// When a query resolves a (subject, predicate) group from each agent's newest row instead of
/// reading all of it ([`Store::newest_per_agent`], decision 0017).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargeGroups {
    /// Rows of one group read first (`usize::MAX`: never look up per agent).
    pub rows: usize,
    /// Distinct agents in the store past which a large group is read row by row after all.
    pub max_agents: usize,
    /// Rows walked back from one agent's newest row of the group before the group is read row
    /// by row after all (every one of them dropped out: as of an old tree size, say).
    pub walk: usize,
}

impl Default for LargeGroups {
    fn default() -> Self {
        LargeGroups {
            rows: 4_096,
            max_agents: 256,
            walk: 256,
        }
    }
}

/// What one large group's lookups may spend, and the store's agents once listed.
struct Lookups<'a> {
    allowed: usize,
    cancelled: Option<&'a AtomicBool>,
    agents: &'a mut Option<Option<Vec<[u8; 32]>>>,
}
const CURSOR_VERSION: u8 = 1;

/// How `subject` matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectMatch {
    /// The subject itself.
    #[default]
    Exact,
    /// The subject and everything below it, on segment boundaries.
    Prefix,
    /// Every subject ending in these segments.
    Tail,
}

impl SubjectMatch {
    /// Parses `exact`, `prefix` or `tail`.
    pub fn parse(s: &str) -> Option<SubjectMatch> {
        match s {
            "exact" => Some(SubjectMatch::Exact),
            "prefix" => Some(SubjectMatch::Prefix),
            "tail" => Some(SubjectMatch::Tail),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SubjectMatch::Exact => "exact",
            SubjectMatch::Prefix => "prefix",
            SubjectMatch::Tail => "tail",
        }
    }
}

/// A lens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lens {
    /// Newest assertion.
    #[default]
    Latest,
    /// Most trusted agent, then newest.
    Trusted,
    /// Value with the most weighted distinct agents.
    Consensus,
    /// Highest confidence × trust.
    Confidence,
    /// Every assertion, unresolved.
    Raw,
}

impl Lens {
    /// Every lens name, in documentation order.
    pub const NAMES: [&'static str; 5] = ["latest", "trusted", "consensus", "confidence", "raw"];

    /// Parses a lens name.
    pub fn parse(s: &str) -> Option<Lens> {
        match s {
            "latest" => Some(Lens::Latest),
            "trusted" => Some(Lens::Trusted),
            "consensus" => Some(Lens::Consensus),
            "confidence" => Some(Lens::Confidence),
            "raw" => Some(Lens::Raw),
            _ => None,
        }
    }

    /// The lens name.
    pub fn name(self) -> &'static str {
        match self {
            Lens::Latest => "latest",
            Lens::Trusted => "trusted",
            Lens::Consensus => "consensus",
            Lens::Confidence => "confidence",
            Lens::Raw => "raw",
        }
    }

    fn resolver(self) -> Option<Resolver> {
        match self {
            Lens::Latest => Some(Resolver::Latest),
            Lens::Trusted => Some(Resolver::Trusted),
            Lens::Consensus => Some(Resolver::Consensus),
            Lens::Confidence => Some(Resolver::Confidence),
            Lens::Raw => None,
        }
    }
}

/// A query (design §6). `subject` and `predicate` must satisfy the statement rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// Concept path.
    pub subject: Option<String>,
    /// How `subject` matches.
    pub match_mode: SubjectMatch,
    /// Only this predicate.
    pub predicate: Option<String>,
    /// Only this agent's assertions.
    pub agent: Option<[u8; 32]>,
    /// The lens.
    pub lens: Lens,
    /// Answer as the store was at this tree size.
    pub as_of: Option<u64>,
    /// Only assertions with `ts` ≥ this, Unix ms.
    pub since: Option<i64>,
    /// Only assertions with `ts` ≤ this, Unix ms.
    pub until: Option<i64>,
    /// Keep superseded assertions (and every agent's older ones) in the live set.
    pub include_superseded: bool,
    /// Valid time, Unix ms: only assertions whose validity interval `[valid_from, valid_until)`
    /// contains it (a missing bound is open). Applied to every row before a lens resolves its
    /// group, so each agent's newest assertion *that held then* is its belief (design §6).
    pub valid_at: Option<i64>,
    /// `valid_at` is "now" (set by `current=true`): the server's clock when each page runs. A
    /// cursor continues a `current` query as such, not at the first page's instant.
    pub current: bool,
    /// Results per page, 1..=`MAX_LIMIT`.
    pub limit: usize,
    /// Where the previous page stopped.
    pub cursor: Option<String>,
    /// Most index rows this request may examine; past it the page ends early with a cursor
    /// (`None`: no budget). A (subject, predicate) group is never split: one larger than the
    /// budget is resolved whole when it is the first group of its page.
    pub scan_budget: Option<usize>,
}

/// Why a query was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The cursor is not one this server made for this query.
    #[error("bad cursor: {0}")]
    BadCursor(String),
    /// A parameter is out of range.
    #[error("{0}")]
    BadParameter(String),
    /// The (subject, predicate) group holds more assertions than one request may read.
    #[error("{0}")]
    GroupTooLarge(String),
    /// The request was abandoned (its caller went away) and the scan stopped.
    #[error("the query was cancelled")]
    Cancelled,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The assertion a lens chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Winner {
    /// Its id.
    pub id: AssertionId,
    /// Its position in the log.
    pub log_index: u64,
    /// The object value.
    pub object: Value,
    /// The agent's public key.
    pub agent: [u8; 32],
    /// Claimed time, Unix ms.
    pub ts: i64,
    /// Claimed confidence.
    pub confidence: f64,
    /// Start of its validity interval, Unix ms (inclusive; `None`: open).
    pub valid_from: Option<i64>,
    /// End of its validity interval, Unix ms (exclusive; `None`: open).
    pub valid_until: Option<i64>,
}

/// One result: a resolved group, or with `raw` one assertion.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupResult {
    /// Subject concept path.
    pub subject: String,
    /// Predicate.
    pub predicate: String,
    /// The winner.
    pub winner: Winner,
    /// True when live alternatives disagree with the winner.
    pub conflict: bool,
    /// Share of weight behind the winner's value.
    pub agreement: f64,
    /// The other live assertions, newest first, at most `lens::MAX_ALTERNATIVES`.
    pub alternatives: Vec<AssertionId>,
    /// How many other live assertions there are in all.
    pub alternatives_total: usize,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The tree size the answer is as of.
    pub tree_size: u64,
    /// Results in index order.
    pub results: Vec<GroupResult>,
    /// Cursor of the next page, if there may be one.
    pub next_cursor: Option<String>,
}

/// One index row: `ts`, log index, value.
type Row = (i64, u64, IndexValue);

pub(crate) struct Plan {
    kind: IndexKind,
    prefix: Vec<u8>,
    // Check each group's predicate (the index does not narrow by it).
    filter_predicate: Option<Vec<u8>>,
}

pub(crate) fn plan(q: &Query) -> Plan {
    let pred = q.predicate.as_deref();
    match q.subject.as_deref() {
        // One agent's assertions at or below a subject: the agent index holds exactly them, in
        // the same group order as the subject index.
        Some(subject) if q.agent.is_some() && q.match_mode != SubjectMatch::Tail => {
            let mut prefix = q.agent.map(|a| a.to_vec()).unwrap_or_default();
            let exact = q.match_mode == SubjectMatch::Exact;
            prefix.extend_from_slice(&keys::subject_prefix(subject.split('/'), exact));
            let mut filter_predicate = pred.map(|p| p.as_bytes().to_vec());
            if exact && let Some(p) = pred {
                prefix.extend_from_slice(p.as_bytes());
                prefix.push(0x00);
                filter_predicate = None;
            }
            Plan {
                kind: IndexKind::Agent,
                prefix,
                filter_predicate,
            }
        }
        Some(subject) => {
            let segs = subject.split('/');
            let (kind, mut prefix) = match q.match_mode {
                SubjectMatch::Exact => (IndexKind::Subject, keys::subject_prefix(segs, true)),
                SubjectMatch::Prefix => (IndexKind::Subject, keys::subject_prefix(segs, false)),
                SubjectMatch::Tail => (
                    IndexKind::ReversedSubject,
                    keys::subject_prefix(segs.rev(), false),
                ),
            };
            let mut filter_predicate = pred.map(|p| p.as_bytes().to_vec());
            if q.match_mode == SubjectMatch::Exact
                && let Some(p) = pred
            {
                prefix.extend_from_slice(p.as_bytes());
                prefix.push(0x00);
                filter_predicate = None;
            }
            Plan {
                kind,
                prefix,
                filter_predicate,
            }
        }
        None => match (pred, q.agent) {
            (Some(p), _) => {
                let mut prefix = p.as_bytes().to_vec();
                prefix.push(0x00);
                Plan {
                    kind: IndexKind::Predicate,
                    prefix,
                    filter_predicate: None,
                }
            }
            (None, Some(agent)) => Plan {
                kind: IndexKind::Agent,
                prefix: agent.to_vec(),
                filter_predicate: None,
            },
            (None, None) => Plan {
                kind: IndexKind::Subject,
                prefix: Vec::new(),
                filter_predicate: None,
            },
        },
    }
}

pub(crate) fn table_of(kind: IndexKind) -> TableDefinition<'static, &'static [u8], ()> {
    match kind {
        IndexKind::Subject => SUBJECT_IDX,
        IndexKind::ReversedSubject => CONCEPT_PATH_IDX,
        IndexKind::Predicate => PREDICATE_IDX,
        IndexKind::Agent => AGENT_IDX,
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: no bound).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// 8 bytes naming the query's filters; a cursor only continues the query it came from.
fn query_hash(q: &Query) -> [u8; 8] {
    let text = format!(
        "{:?}|{}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{}|{:?}|{}",
        q.subject,
        q.match_mode.name(),
        q.predicate,
        q.agent.map(hex::encode),
        q.lens.name(),
        q.as_of,
        q.since,
        q.until,
        q.include_superseded,
        if q.current { None } else { q.valid_at },
        q.current
    );
    let h = blake3::hash(text.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.as_bytes()[..8]);
    out
}

/// The fields of a stored statement a result shows beyond its index row.
#[derive(serde::Deserialize)]
pub(crate) struct StoredObject {
    /// What the signed statement names; a winner's must match the index key it was found by.
    pub(crate) subject: String,
    pub(crate) predicate: String,
    pub(crate) ts: i64,
    pub(crate) object: Value,
    #[serde(default)]
    pub(crate) valid_from: Option<i64>,
    #[serde(default)]
    pub(crate) valid_until: Option<i64>,
    #[serde(default)]
    pub(crate) supersedes: Vec<AssertionId>,
}

/// The tree size an answer describes: `as_of` (at most the head) or the head.
pub(crate) fn as_of_size(as_of: Option<u64>, head: u64) -> Result<u64, QueryError> {
    match as_of {
        Some(n) if n > head => Err(QueryError::BadParameter(format!(
            "as_of {n} is larger than the current tree size {head}"
        ))),
        Some(n) => Ok(n),
        None => Ok(head),
    }
}

struct Cursor {
    tree_size: u64,
    after: Vec<u8>,
}

fn encode_cursor(kind: IndexKind, hash: [u8; 8], tree_size: u64, after: &[u8]) -> String {
    let mut b = Vec::with_capacity(18 + after.len());
    b.push(CURSOR_VERSION);
    b.push(kind.tag());
    b.extend_from_slice(&tree_size.to_be_bytes());
    b.extend_from_slice(&hash);
    b.extend_from_slice(after);
    URL_SAFE_NO_PAD.encode(b)
}

fn decode_cursor(s: &str, kind: IndexKind, hash: [u8; 8]) -> Result<Cursor, QueryError> {
    let bad = |why: &str| QueryError::BadCursor(why.to_string());
    let b = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad("not base64url"))?;
    if b.len() < 18 || b[0] != CURSOR_VERSION {
        return Err(bad("not a cursor of this server version"));
    }
    if b[1] != kind.tag() || b[10..18] != hash {
        return Err(bad("the cursor belongs to a different query"));
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&b[2..10]);
    Ok(Cursor {
        tree_size: u64::from_be_bytes(size),
        after: b[18..].to_vec(),
    })
}

impl Store {
    /// Runs `q`, weighing agents with `weight`.
    pub fn query(
        &self,
        q: &Query,
        weight: &dyn Fn(&[u8; 32]) -> f64,
    ) -> Result<Answer, QueryError> {
        self.query_cancellable(q, weight, &AtomicBool::new(false))
    }

    /// Runs `q` on a thread that may block; stops with `QueryError::Cancelled` soon after
    /// `cancelled` turns true (the request it serves is gone).
    pub fn query_cancellable(
        &self,
        q: &Query,
        weight: &dyn Fn(&[u8; 32]) -> f64,
        cancelled: &AtomicBool,
    ) -> Result<Answer, QueryError> {
        self.run_query(q, weight, None, Some(cancelled))?
            .ok_or_else(|| {
                QueryError::Store(StoreError::Corrupt(
                    "a query without an inline limit stopped on one".into(),
                ))
            })
    }

    /// Runs `q` unless it would read more than `max_rows` index rows, in which case it stops
    /// early and answers `None` (so a caller can run cheap queries in place and move the rest to
    /// a thread that may block). `None` as the budget means no limit.
    pub fn query_within(
        &self,
        q: &Query,
        weight: &dyn Fn(&[u8; 32]) -> f64,
        max_rows: Option<usize>,
    ) -> Result<Option<Answer>, QueryError> {
        self.run_query(q, weight, max_rows, None)
    }

    fn run_query(
        &self,
        q: &Query,
        weight: &dyn Fn(&[u8; 32]) -> f64,
        max_rows: Option<usize>,
        cancelled: Option<&AtomicBool>,
    ) -> Result<Option<Answer>, QueryError> {
        if q.scan_budget == Some(0) {
            return Err(QueryError::BadParameter(
                "the scan budget must be at least one row".into(),
            ));
        }
        if q.limit == 0 || q.limit > MAX_LIMIT {
            return Err(QueryError::BadParameter(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        if let (Some(since), Some(until)) = (q.since, q.until)
            && since > until
        {
            return Err(QueryError::BadParameter(format!(
                "since ({since}) is after until ({until})"
            )));
        }
        if q.current && q.valid_at.is_some() {
            return Err(QueryError::BadParameter(
                "give valid_at or current, not both".into(),
            ));
        }
        let valid_at = if q.current {
            Some(crate::now_ms())
        } else {
            q.valid_at
        };
        let head = self.head();
        let plan = plan(q);
        // Only a cursor needs the filters' hash (most queries have one page).
        let (tree_size, after) = match &q.cursor {
            Some(c) => {
                let c = decode_cursor(c, plan.kind, query_hash(q))?;
                if c.tree_size > head.size {
                    return Err(QueryError::BadCursor(
                        "the cursor is from a larger tree than this server holds".into(),
                    ));
                }
                (c.tree_size, Some(c.after))
            }
            None => (as_of_size(q.as_of, head.size)?, None),
        };
        let view = self.view()?;
        let table = view.index_tables(plan.kind)?;
        let by_seq = view.by_seq()?;
        let row_of = |li: u64| by_seq.row(li);

        let start: Bound<&[u8]> = match &after {
            Some(a) if a.as_slice() >= plan.prefix.as_slice() => Bound::Excluded(a.as_slice()),
            _ => Bound::Included(plan.prefix.as_slice()),
        };
        let end_key = prefix_end(&plan.prefix);
        let end: Bound<&[u8]> = match &end_key {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        let mut range = view.index_keys(table, plan.kind, start, end)?;
        // A large group is resolved from each agent's newest row when the lens needs only
        // those (not `raw`, not `include_superseded`) and the plan reads `subject.idx` (or
        // `agent.idx`, whose groups are one agent's).
        let per_agent = q.lens != Lens::Raw
            && !q.include_superseded
            && match plan.kind {
                IndexKind::Subject => q.agent.is_none(),
                IndexKind::Agent => true,
                IndexKind::ReversedSubject | IndexKind::Predicate => false,
            };
        // Index keys read so far (and a large group's lookups, counted as keys).
        let mut read = 0usize;
        // Keys read of the group being read, and where to resume once a large group was
        // resolved per agent (past its remaining rows).
        let mut group_rows = 0usize;
        let mut skip_past: Option<Vec<u8>> = None;
        // The store's agents, listed by the first large group of the request (`None` inside:
        // too many to look each up).
        let mut agents: Option<Option<Vec<[u8; 32]>>> = None;

        let budget = q.scan_budget.unwrap_or(usize::MAX);
        let mut results: Vec<GroupResult> = Vec::new();
        // Where the next page resumes: after the last completed group (or, with `raw`, the last
        // row), whether or not it produced a result.
        let mut resume_after: Option<Vec<u8>> = None;
        let mut more = false;
        let mut group: Vec<u8> = Vec::new();
        // True while the group being read is the first this page started: it is read whole,
        // past the budget if need be, so every page makes progress.
        let mut first_group = true;
        let mut group_predicate_ok = true;
        let mut rows: Vec<Row> = Vec::new();
        loop {
            if let Some(after) = skip_past.take() {
                range =
                    view.index_keys(table, plan.kind, Bound::Excluded(after.as_slice()), end)?;
            }
            let Some(item) = range.next() else {
                break;
            };
            let examined = read;
            read += 1;
            if max_rows.is_some_and(|m| examined >= m) {
                return Ok(None);
            }
            if examined % CANCEL_CHECK_ROWS == CANCEL_CHECK_ROWS - 1
                && cancelled.is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(QueryError::Cancelled);
            }
            let key_buf = item?;
            let key = key_buf.as_slice();
            if results.len() >= q.limit {
                more = true;
                break;
            }
            let (ts, li) = keys::key_suffix(key)
                .ok_or_else(|| StoreError::Corrupt("index key shorter than 16 bytes".into()))?;
            let g = keys::group_key(key);
            if q.lens == Lens::Raw {
                if examined >= budget {
                    more = true;
                    break;
                }
            } else if g != group.as_slice() {
                if !group.is_empty() {
                    if !rows.is_empty()
                        && let Some(r) =
                            self.resolve_group(q, plan.kind, &group, &rows, tree_size, weight)?
                    {
                        results.push(r);
                    }
                    resume_after = Some(group_end(&group));
                    first_group = false;
                    if results.len() >= q.limit || examined >= budget {
                        more = true;
                        break;
                    }
                }
                rows.clear();
                group.clear();
                group.extend_from_slice(g);
                group_rows = 0;
                group_predicate_ok = match &plan.filter_predicate {
                    Some(p) => keys::group_predicate(plan.kind, g) == Some(p.as_slice()),
                    None => true,
                };
            } else if examined >= budget && !first_group {
                // Out of budget inside a later group: the next page starts with it.
                more = true;
                rows.clear();
                break;
            }
            group_rows += 1;
            if per_agent && group_predicate_ok && group_rows == self.shared.large_group.rows {
                // A later group of the page may take no more than the budget left.
                let allowed = if first_group {
                    usize::MAX
                } else {
                    budget.saturating_sub(read)
                };
                let limits = Lookups {
                    allowed,
                    cancelled,
                    agents: &mut agents,
                };
                let newest = self.newest_per_agent(
                    &view, plan.kind, &group, q, tree_size, valid_at, limits, &mut read,
                )?;
                if let Some(newest) = newest {
                    // The group is decided: its rows are these, and the scan goes on after it.
                    rows = newest;
                    skip_past = Some(group_end(&group));
                    continue;
                }
            }
            if outside(q, tree_size, ts, li) {
                if q.lens == Lens::Raw {
                    resume_after = Some(key.to_vec());
                }
                continue;
            }
            if q.lens == Lens::Raw {
                resume_after = Some(key.to_vec());
                if let Some(p) = &plan.filter_predicate
                    && keys::group_predicate(plan.kind, g) != Some(p.as_slice())
                {
                    continue;
                }
            } else if !group_predicate_ok {
                continue;
            }
            let value = row_of(li)?;
            if q.agent.is_some_and(|a| a != value.agent) {
                continue;
            }
            if let Some(t) = valid_at
                && !self.holds_at(&value, t)?
            {
                continue;
            }
            if q.lens == Lens::Raw {
                if !q.include_superseded && (value.retract || value.superseded_at < tree_size) {
                    continue;
                }
                results.push(self.raw_result(plan.kind, g, ts, li, &value)?);
            } else {
                rows.push((ts, li, value));
            }
        }
        if !more
            && !rows.is_empty()
            && let Some(r) = self.resolve_group(q, plan.kind, &group, &rows, tree_size, weight)?
        {
            results.push(r);
        }
        let next_cursor = match (more, resume_after) {
            (true, Some(after)) => Some(encode_cursor(plan.kind, query_hash(q), tree_size, &after)),
            _ => None,
        };
        Ok(Some(Answer {
            tree_size,
            results,
            next_cursor,
        }))
    }

    /// Each agent's newest live row of `group` (a `subject.idx` group key, or an `agent.idx` one,
    /// which names its one agent), looked up in `agent.idx`, whose keys are the agent and then
    /// the `subject.idx` group key, `ts` and log index:
    /// a group that one agent has rewritten a million times costs a few seeks per agent of the
    /// store instead of a million rows (decision 0017). The rows are exactly those the per-agent
    /// pass of [`Store::resolve_group`] keeps: per agent, the newest row that passes the query's
    /// filters (tree size, `since`, `until`, `valid_at`) and is not superseded, unless that row
    /// is a retraction. `None` when this would not be cheaper: more than
    /// [`LargeGroups::max_agents`] agents in the store, an agent whose newest
    /// [`LargeGroups::walk`] rows of the group all drop out, or more keys than the budget
    /// left (`limits`); the caller then reads the group row by row. `read` counts the keys it
    /// reads.
    #[allow(clippy::too_many_arguments)]
    fn newest_per_agent(
        &self,
        view: &View,
        kind: IndexKind,
        group: &[u8],
        q: &Query,
        tree_size: u64,
        valid_at: Option<i64>,
        limits: Lookups<'_>,
        read: &mut usize,
    ) -> Result<Option<Vec<Row>>, QueryError> {
        let opts = &self.shared.large_group;
        let tables = view.index_tables(IndexKind::Agent)?;
        let by_seq = view.by_seq()?;
        let agent_of = |key: &[u8]| -> Result<[u8; 32], StoreError> {
            key.get(..32)
                .and_then(|a| a.try_into().ok())
                .ok_or_else(|| {
                    StoreError::Corrupt("an agent index key is shorter than 32 bytes".into())
                })
        };
        let start = *read;
        // Keys read here so far; past the budget left (or a cancelled request) it stops.
        let spend = |read: &mut usize| -> Result<bool, QueryError> {
            *read += 1;
            if (*read - start).is_multiple_of(CANCEL_CHECK_ROWS)
                && limits.cancelled.is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(QueryError::Cancelled);
            }
            Ok(*read - start <= limits.allowed)
        };
        let (group, agents): (&[u8], Vec<[u8; 32]>) = if kind == IndexKind::Agent {
            (&group[32..], vec![agent_of(group)?])
        } else {
            if limits.agents.is_none() {
                // The store's agents: one seek past the previous agent's keys each.
                let mut listed = Vec::new();
                let mut from = Some(Vec::new());
                while let Some(at) = from.take() {
                    let mut keys = view.index_keys(
                        tables,
                        IndexKind::Agent,
                        Bound::Included(at.as_slice()),
                        Bound::Unbounded,
                    )?;
                    let Some(key) = keys.next() else {
                        break;
                    };
                    let key = key?;
                    if !spend(read)? {
                        return Ok(None);
                    }
                    let agent = agent_of(&key)?;
                    if listed.len() == opts.max_agents {
                        *limits.agents = Some(None);
                        return Ok(None);
                    }
                    listed.push(agent);
                    from = prefix_end(&agent);
                }
                *limits.agents = Some(Some(listed));
            }
            match limits.agents {
                Some(Some(listed)) => (group, listed.clone()),
                _ => return Ok(None),
            }
        };
        let mut rows = Vec::new();
        for agent in agents {
            let mut prefix = agent.to_vec();
            prefix.extend_from_slice(group);
            // `ts` bounds as key bounds (a key is the prefix, then `ts` and log index big-endian;
            // `ts` is never negative).
            let mut lo = prefix.clone();
            if let Some(s) = q.since
                && s > 0
            {
                lo.extend_from_slice(&(s as u64).to_be_bytes());
            }
            let hi = match q.until {
                Some(u) if u < 0 => continue,
                Some(u) => {
                    let mut k = prefix.clone();
                    k.extend_from_slice(&(u as u64).to_be_bytes());
                    k.extend_from_slice(&[0xFF; 8]);
                    Some(k)
                }
                None => prefix_end(&prefix),
            };
            let end = match (&hi, q.until) {
                (Some(k), Some(_)) => Bound::Included(k.as_slice()),
                (Some(k), None) => Bound::Excluded(k.as_slice()),
                (None, _) => Bound::Unbounded,
            };
            let newest_first = view.index_keys_rev(
                tables,
                IndexKind::Agent,
                Bound::Included(lo.as_slice()),
                end,
            )?;
            for (walked, key) in newest_first.enumerate() {
                if walked == opts.walk {
                    return Ok(None);
                }
                let key = key?;
                if !spend(read)? {
                    return Ok(None);
                }
                let (ts, li) = keys::key_suffix(&key)
                    .ok_or_else(|| StoreError::Corrupt("index key shorter than 16 bytes".into()))?;
                if outside(q, tree_size, ts, li) {
                    continue;
                }
                let value = by_seq.row(li)?;
                if let Some(t) = valid_at
                    && !self.holds_at(&value, t)?
                {
                    continue;
                }
                if value.superseded_at < tree_size {
                    continue;
                }
                if !value.retract {
                    rows.push((ts, li, value));
                }
                break;
            }
        }
        Ok(Some(rows))
    }

    /// The object and validity interval of a stored assertion. The envelope was fully checked
    /// on the way in, so this reads only the fields it needs instead of validating it again.
    pub(crate) fn load_object(&self, value: &IndexValue) -> Result<StoredObject, StoreError> {
        #[derive(serde::Deserialize)]
        struct Env<'a> {
            #[serde(borrow)]
            payload: std::borrow::Cow<'a, str>,
        }
        let corrupt = |what: &str| StoreError::Corrupt(format!("stored {what} {}", value.id));
        let payload = match self.shared.vlog.read_statement(value.pointer)? {
            crate::vlog::Stored::Statement(statement) => statement,
            crate::vlog::Stored::Envelope(bytes) => {
                let env: Env<'_> =
                    serde_json::from_slice(&bytes).map_err(|_| corrupt("envelope"))?;
                base64::engine::general_purpose::STANDARD
                    .decode(env.payload.as_bytes())
                    .map_err(|_| corrupt("payload"))?
            }
        };
        serde_json::from_slice(&payload).map_err(|_| corrupt("statement"))
    }

    /// Whether the assertion behind `value` holds at valid time `t`: from the index row, or
    /// for a row of the older layout from its statement.
    fn holds_at(&self, value: &IndexValue, t: i64) -> Result<bool, StoreError> {
        match value.valid_at(t) {
            Some(holds) => Ok(holds),
            None => {
                let o = self.load_object(value)?;
                Ok(keys::interval_contains(o.valid_from, o.valid_until, t))
            }
        }
    }

    /// The assertion behind an index row of group (`subject`, `predicate`), with its object
    /// read from the value log. Its signed statement must name the same subject, predicate and
    /// `ts` as the key that led to it: an index key is not checksummed (decision 0025), and a
    /// damaged one (its log index above all) would otherwise answer with another assertion.
    fn winner(
        &self,
        (subject, predicate): (&str, &str),
        ts: i64,
        li: u64,
        value: &IndexValue,
    ) -> Result<Winner, StoreError> {
        let o = self.load_object(value)?;
        if o.subject != subject || o.predicate != predicate || o.ts != ts {
            return Err(StoreError::Corrupt(format!(
                "index key ({subject}, {predicate}, ts {ts}, log index {li}) leads to assertion {} \
                 of ({}, {}, ts {})",
                value.id, o.subject, o.predicate, o.ts
            )));
        }
        Ok(Winner {
            id: value.id,
            log_index: li,
            object: o.object,
            agent: value.agent,
            ts,
            confidence: value.confidence,
            valid_from: o.valid_from,
            valid_until: o.valid_until,
        })
    }

    fn raw_result(
        &self,
        kind: IndexKind,
        group: &[u8],
        ts: i64,
        li: u64,
        value: &IndexValue,
    ) -> Result<GroupResult, StoreError> {
        let (subject, predicate) = keys::decode_group(kind, group)?;
        let winner = self.winner((&subject, &predicate), ts, li, value)?;
        Ok(GroupResult {
            subject,
            predicate,
            winner,
            conflict: false,
            agreement: 1.0,
            alternatives: Vec::new(),
            alternatives_total: 0,
        })
    }

    /// Picks the live rows of one group and resolves them: `rows` in key order (oldest first),
    /// or one row per agent from [`Store::newest_per_agent`].
    fn resolve_group(
        &self,
        q: &Query,
        kind: IndexKind,
        group: &[u8],
        rows: &[Row],
        tree_size: u64,
        weight: &dyn Fn(&[u8; 32]) -> f64,
    ) -> Result<Option<GroupResult>, StoreError> {
        let Some(resolver) = q.lens.resolver() else {
            return Ok(None);
        };
        let mut live: Vec<&Row> = Vec::new();
        if q.include_superseded {
            live.extend(rows.iter().filter(|r| !r.2.retract));
        } else {
            // Rows are oldest first, so the last row of each agent is its newest. One pass, one
            // map lookup per row: linear in the group's rows.
            let mut newest: Vec<&Row> = Vec::new();
            let mut slot_of: std::collections::HashMap<[u8; 32], usize> =
                std::collections::HashMap::new();
            // Superseded rows drop out first, so a correction is never shadowed by the
            // assertion it corrects (decision 0016).
            for r in rows.iter().filter(|r| r.2.superseded_at >= tree_size) {
                match slot_of.get(&r.2.agent) {
                    Some(i) => newest[*i] = r,
                    None => {
                        slot_of.insert(r.2.agent, newest.len());
                        newest.push(r);
                    }
                }
            }
            live.extend(newest.into_iter().filter(|r| !r.2.retract));
        }
        if live.is_empty() {
            return Ok(None);
        }
        // The lens sums weights in candidate order, and floating-point sums depend on it: give
        // it one order (key order: `ts`, then log index) however the rows were found.
        live.sort_unstable_by_key(|r| (r.0, r.1));
        let candidates: Vec<Candidate> = live
            .iter()
            .map(|(ts, li, v)| Candidate {
                id: v.id,
                agent: v.agent,
                ts: *ts,
                log_index: *li,
                confidence: v.confidence,
                value: v.value,
            })
            .collect();
        let Some(res) = lens::resolve(resolver, &candidates, weight) else {
            return Ok(None);
        };
        let (subject, predicate) = keys::decode_group(kind, group)?;
        let alternatives = res.alternatives.iter().map(|i| candidates[*i].id).collect();
        let (ts, li, v) = live.get(res.winner).ok_or_else(|| {
            StoreError::Corrupt("lens chose a winner outside its candidates".into())
        })?;
        let winner = self.winner((&subject, &predicate), *ts, *li, v)?;
        Ok(Some(GroupResult {
            subject,
            predicate,
            winner,
            conflict: res.conflict,
            agreement: res.agreement,
            alternatives,
            alternatives_total: res.alternatives_total,
        }))
    }
}

/// A key after every row of `group` (rows are `group` + 16 bytes).
fn group_end(group: &[u8]) -> Vec<u8> {
    let mut k = group.to_vec();
    k.extend_from_slice(&[0xFF; keys::KEY_SUFFIX_BYTES + 1]);
    k
}

/// Whether the row (`ts`, `li`) lies outside what query `q` reads at `tree_size`: not yet in the
/// tree, or outside `since`/`until`.
fn outside(q: &Query, tree_size: u64, ts: i64, li: u64) -> bool {
    li >= tree_size || q.since.is_some_and(|s| ts < s) || q.until.is_some_and(|u| ts > u)
}
