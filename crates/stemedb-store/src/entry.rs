//! What the store keeps of a verified assertion on its way to the log: the envelope bytes as
//! received and the few statement fields the indexes and lenses read. The statement's object is
//! reduced to its value key here, so a queued batch holds no JSON value tree (design §7: memory
//! for bodies in flight stays within about twice their bytes).

use stemedb_core::{AssertionId, Statement, Verified};

use crate::lens::{ValueKey, value_key};

/// A verified assertion ready for the commit thread.
///
/// Invariant: built only from a `Verified` (or, on replay, from envelope bytes that verified when
/// they were accepted), so its fields are the checked statement's.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub(crate) id: AssertionId,
    pub(crate) raw: Vec<u8>,
    pub(crate) fields: Fields,
}

/// The statement fields the store indexes (fields private to the store).
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    pub(crate) subject: String,
    pub(crate) predicate: String,
    pub(crate) agent: [u8; 32],
    pub(crate) ts: i64,
    pub(crate) confidence: f64,
    pub(crate) retract: bool,
    pub(crate) supersedes: Vec<AssertionId>,
    pub(crate) valid_from: Option<i64>,
    pub(crate) valid_until: Option<i64>,
    pub(crate) value: ValueKey,
}

impl Fields {
    /// The fields of a checked statement.
    pub fn of(st: &Statement) -> Fields {
        Fields {
            subject: st.subject().to_owned(),
            predicate: st.predicate().to_owned(),
            agent: *st.agent(),
            ts: st.ts(),
            confidence: st.confidence(),
            retract: st.retract(),
            supersedes: st.supersedes().to_vec(),
            valid_from: st.valid_from(),
            valid_until: st.valid_until(),
            value: value_key(st.object()),
        }
    }

    /// The subject's segments, in order.
    pub(crate) fn segments(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.subject.split('/')
    }
}

impl Entry {
    /// Keeps what the store needs of `verified`, whose envelope arrived as `raw`.
    pub fn new(verified: Verified, raw: Vec<u8>) -> Entry {
        let fields = Fields::of(verified.statement());
        Entry {
            id: verified.id(),
            raw,
            fields,
        }
    }

    /// The assertion id.
    pub fn id(&self) -> AssertionId {
        self.id
    }

    /// The signing agent.
    pub fn agent(&self) -> &[u8; 32] {
        &self.fields.agent
    }

    /// Bytes of the envelope as received.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// True for an empty envelope (never, for a verified one).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}
