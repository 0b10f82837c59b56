//! Administrative state kept beside the log (design §8): quarantined assertions waiting for an
//! operator, the agent registry, and an append-only audit trail of who did what, when.
//!
//! It lives in its own redb file, `db/admin.redb`, committed with `Durability::Immediate` on
//! every change: quarantine is answered 202 only after the entry is on disk, and these writes
//! never wait on (or stall) the commit thread that owns `stemedb.redb`.
//!
//! Architecture Invariant: a quarantined assertion is in no log, index or Merkle tree until it is
//! released; release submits it through the normal write path and removes the entry only after
//! the log holds it. A release interrupted by a crash is finished on the next open (the entry of
//! an id the log already holds is removed, with an audit record).

use std::path::Path;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};
use stemedb_core::AssertionId;

use crate::{StoreError, db_err};

const QUARANTINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("quarantine");
const AGENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("agents");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// An assertion held back by a policy rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// Its content address.
    #[serde(with = "hex_id")]
    pub id: AssertionId,
    /// The signing agent's public key, hex.
    pub agent: String,
    /// Every rule it tripped, as human-readable reasons.
    pub reasons: Vec<String>,
    /// When the server received it, Unix ms.
    pub received_at_ms: i64,
    /// The envelope exactly as received (JSON text).
    pub envelope: String,
}

/// Whether an agent may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Writes are screened as usual.
    #[default]
    Active,
    /// Every write is refused.
    Suspended,
}

/// One registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Public key, hex.
    pub agent: String,
    /// A name for people.
    pub name: String,
    /// Trust weight in [0, 1] for the lenses.
    pub trust: f64,
    /// Active or suspended.
    pub status: AgentStatus,
    /// Last change, Unix ms.
    pub updated_at_ms: i64,
}

/// One administrative action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the trail, from 1.
    pub seq: u64,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Who (what the caller named, for example `admin-token`).
    pub actor: String,
    /// What: `release`, `reject`, `agent_put`, `agent_delete`, `release_completed`.
    pub action: String,
    /// On what: an assertion id or an agent key.
    pub target: String,
    /// Anything else worth keeping (the reason given, the new agent record).
    pub detail: String,
}

mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};
    use stemedb_core::AssertionId;

    pub fn serialize<S: Serializer>(id: &AssertionId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AssertionId, D::Error> {
        let s = String::deserialize(d)?;
        AssertionId::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("admin.redb {what} row: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(format!("admin.redb encode: {e}")))
}

/// The administrative database of one data directory.
pub(crate) struct AdminDb {
    db: Database,
}

impl AdminDb {
    pub(crate) fn open(path: &Path) -> Result<AdminDb, StoreError> {
        let db = Database::create(path).map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(QUARANTINE).map_err(db_err)?;
        txn.open_table(AGENTS).map_err(db_err)?;
        txn.open_table(AUDIT).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(AdminDb { db })
    }

    /// Writes a consistent copy of every table into a new database at `path`, fsync'd.
    pub(crate) fn export(&self, path: &Path) -> Result<(), StoreError> {
        let src = self.db.begin_read().map_err(db_err)?;
        let dst = Database::create(path).map_err(db_err)?;
        crate::snapshot::copy_table(&src, &dst, QUARANTINE)?;
        crate::snapshot::copy_table(&src, &dst, AGENTS)?;
        crate::snapshot::copy_table(&src, &dst, AUDIT)?;
        crate::snapshot::durable_commit(&dst)
    }

    /// Rows in (quarantine, agents, audit) of the admin database at `path`, opened read-only.
    pub(crate) fn count_rows(path: &Path) -> Result<(u64, u64, u64), StoreError> {
        let db = redb::ReadOnlyDatabase::open(path).map_err(db_err)?;
        let txn = db.begin_read().map_err(db_err)?;
        let q = txn
            .open_table(QUARANTINE)
            .map_err(db_err)?
            .len()
            .map_err(db_err)?;
        let a = txn
            .open_table(AGENTS)
            .map_err(db_err)?
            .len()
            .map_err(db_err)?;
        let t = txn.open_table(AUDIT).map_err(db_err)?;
        let mut audit = 0;
        for row in t.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            serde_json::from_slice::<AuditRecord>(v.value())
                .map_err(|e| StoreError::Corrupt(format!("audit record: {e}")))?;
            audit += 1;
        }
        Ok((q, a, audit))
    }

    /// Adds entries (one durable commit). An id already quarantined keeps its first entry.
    /// Returns, per entry, whether it was new.
    pub(crate) fn quarantine(&self, entries: &[QuarantineEntry]) -> Result<Vec<bool>, StoreError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let mut fresh = Vec::with_capacity(entries.len());
        {
            let mut table = txn.open_table(QUARANTINE).map_err(db_err)?;
            for e in entries {
                let key = e.id.as_bytes().as_slice();
                if table.get(key).map_err(db_err)?.is_some() {
                    fresh.push(false);
                    continue;
                }
                table.insert(key, encode(e)?.as_slice()).map_err(db_err)?;
                fresh.push(true);
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(fresh)
    }

    pub(crate) fn quarantined(
        &self,
        id: &AssertionId,
    ) -> Result<Option<QuarantineEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(QUARANTINE).map_err(db_err)?;
        match table.get(id.as_bytes().as_slice()).map_err(db_err)? {
            Some(v) => Ok(Some(decode("quarantine", v.value())?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries after `after` (by id), and how many there are in all.
    pub(crate) fn quarantine_list(
        &self,
        after: Option<&AssertionId>,
        limit: usize,
    ) -> Result<(Vec<QuarantineEntry>, u64), StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(QUARANTINE).map_err(db_err)?;
        let total = table.len().map_err(db_err)?;
        let mut out = Vec::new();
        let range = match after {
            Some(a) => table.range::<&[u8]>((
                std::ops::Bound::Excluded(a.as_bytes().as_slice()),
                std::ops::Bound::Unbounded,
            )),
            None => table.range::<&[u8]>(..),
        }
        .map_err(db_err)?;
        for item in range.take(limit) {
            let (_, v) = item.map_err(db_err)?;
            out.push(decode("quarantine", v.value())?);
        }
        Ok((out, total))
    }

    /// Removes an entry and appends an audit record in one durable commit. False when the id is
    /// not quarantined.
    pub(crate) fn remove(
        &self,
        id: &AssertionId,
        audit: AuditDraft<'_>,
    ) -> Result<bool, StoreError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let removed = {
            let mut table = txn.open_table(QUARANTINE).map_err(db_err)?;
            table
                .remove(id.as_bytes().as_slice())
                .map_err(db_err)?
                .is_some()
        };
        if removed {
            append_audit(&txn, audit)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    pub(crate) fn agent(&self, agent: &[u8; 32]) -> Result<Option<AgentRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(AGENTS).map_err(db_err)?;
        match table.get(agent.as_slice()).map_err(db_err)? {
            Some(v) => Ok(Some(decode("agents", v.value())?)),
            None => Ok(None),
        }
    }

    pub(crate) fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(AGENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            out.push(decode("agents", v.value())?);
        }
        Ok(out)
    }

    /// Creates or replaces an agent record. Returns the previous one.
    pub(crate) fn put_agent(
        &self,
        key: &[u8; 32],
        rec: &AgentRecord,
        audit: AuditDraft<'_>,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let previous = {
            let mut table = txn.open_table(AGENTS).map_err(db_err)?;
            let old = table
                .insert(key.as_slice(), encode(rec)?.as_slice())
                .map_err(db_err)?;
            match old {
                Some(v) => Some(decode("agents", v.value())?),
                None => None,
            }
        };
        append_audit(&txn, audit)?;
        txn.commit().map_err(db_err)?;
        Ok(previous)
    }

    /// Removes an agent record. False when there was none.
    pub(crate) fn delete_agent(
        &self,
        key: &[u8; 32],
        audit: AuditDraft<'_>,
    ) -> Result<bool, StoreError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let removed = {
            let mut table = txn.open_table(AGENTS).map_err(db_err)?;
            table.remove(key.as_slice()).map_err(db_err)?.is_some()
        };
        if removed {
            append_audit(&txn, audit)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    /// The newest `limit` audit records, newest first.
    pub(crate) fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(AUDIT).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)?.rev().take(limit) {
            let (_, v) = item.map_err(db_err)?;
            out.push(decode("audit", v.value())?);
        }
        Ok(out)
    }
}

/// An audit record before it has a place in the trail.
pub(crate) struct AuditDraft<'a> {
    pub at_ms: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: String,
    pub detail: String,
}

fn append_audit(txn: &redb::WriteTransaction, d: AuditDraft<'_>) -> Result<(), StoreError> {
    let mut table = txn.open_table(AUDIT).map_err(db_err)?;
    let seq = match table.last().map_err(db_err)? {
        Some((k, _)) => k.value() + 1,
        None => 1,
    };
    let rec = AuditRecord {
        seq,
        at_ms: d.at_ms,
        actor: d.actor.to_string(),
        action: d.action.to_string(),
        target: d.target,
        detail: d.detail,
    };
    table
        .insert(seq, encode(&rec)?.as_slice())
        .map_err(db_err)?;
    Ok(())
}
