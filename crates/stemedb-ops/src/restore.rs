//! `stemedb restore`: a backup into an empty data directory, optionally followed by archived WAL
//! segments up to a chosen tree size (point-in-time restore).
//!
//! 1. The manifest is read once (`verify::read_manifest`: its hash, its format, every path a
//!    plain relative path). With `--trusted-key`, its signer must be that key.
//! 2. The files it lists are copied into `.NAME.restoring` beside the target, each copy hashed
//!    against the manifest; then the copy is verified in full (every envelope, the Merkle
//!    root, the signed checkpoint against the trusted or the manifest's key): what is verified
//!    is what is restored.
//! 3. With an archive: the segments holding records from the backup's tree size on are fetched,
//!    each checked against its sidecar's BLAKE3, checked for gaps, and the last one cut at the
//!    chosen tree size; the store is opened on the staging directory, which replays them, and
//!    closed with a durable checkpoint. Without: an empty WAL starting at the backup's size.
//! 4. The staging directory is verified again (store checks), then renamed to the target.
//!
//! The target is never written until the last step, so a failed restore leaves it untouched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Context as _, refusal, refuse};
use serde::Serialize;

use crate::archive::{Target, block_on};
use crate::backup::{staging_for, swap_in};
use crate::verify::{read_manifest, safe_relative};

/// What [`restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The restored data directory.
    pub data_dir: PathBuf,
    /// Tree size of the backup.
    pub backup_tree_size: u64,
    /// Tree size after replaying archived segments (equals the backup's without an archive).
    pub tree_size: u64,
    /// Merkle root of the restored tree, hex.
    pub root: String,
    /// Archived segments fetched.
    pub segments_replayed: usize,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Restores `from` into `data_dir` (absent or empty). With `archive`, replays archived segments
/// up to `to_tree_size` (all of them when `None`). With `trusted_key`, the backup's checkpoint
/// must be signed by that key (not merely by the key its own manifest names).
pub fn restore(
    from: &Path,
    data_dir: &Path,
    archive: Option<&Target>,
    to_tree_size: Option<u64>,
    trusted_key: Option<[u8; 32]>,
) -> crate::Result<RestoreReport> {
    let started = Instant::now();
    let data_dir = std::path::absolute(data_dir)?;
    if data_dir.exists()
        && std::fs::read_dir(&data_dir)
            .with_context(|| format!("{} is not a directory", data_dir.display()))?
            .next()
            .is_some()
    {
        refuse!(
            "{} is not empty: restore only into an empty or absent directory",
            data_dir.display()
        );
    }
    if to_tree_size.is_some() && archive.is_none() {
        refuse!("--to-tree-size needs --wal-archive (the segments to replay)");
    }
    let manifest =
        read_manifest(from).context("the backup does not verify; nothing was restored")?;
    let manifest_key: [u8; 32] = hex::decode(&manifest.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| refusal!("the manifest's public_key is not 32 bytes of hex"))?;
    let signer = match trusted_key {
        Some(k) if k != manifest_key => refuse!(
            "the backup's checkpoint is signed by {}, not by the trusted key {}; nothing was \
             restored",
            manifest.public_key,
            hex::encode(k)
        ),
        Some(k) => k,
        None => manifest_key,
    };
    let base = manifest.tree_size;
    if let Some(t) = to_tree_size
        && t < base
    {
        refuse!("tree size {t} is before the backup's {base}: restore an older backup");
    }
    let staging = staging_for(&data_dir, "restoring")?;
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    if let Some(parent) = staging.parent() {
        std::fs::create_dir_all(parent)?;
    }
    {
        let mut b = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&staging)?;
    }
    // From here on a failure removes the staging directory, unless it is kept for inspection.
    let mut cleanup = RemoveOnDrop(Some(staging.clone()));
    for entry in &manifest.files {
        let rel =
            safe_relative(&entry.path).map_err(|e| refusal!("the backup does not verify: {e}"))?;
        let dst = staging.join(&rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p)?;
        }
        stemedb_store::snapshot::copy_file(&from.join(&rel), &dst, None)?;
        // The copy is what gets verified and restored: it must be the file the manifest names.
        let (h, len) = crate::hash_file(&dst)?;
        if h != entry.blake3 || len != entry.bytes {
            refuse!(
                "the backup does not verify: the copy of {} does not match its manifest \
                 (length or BLAKE3); nothing was restored",
                entry.path
            );
        }
    }
    let copied = stemedb_store::verify::check_store(
        &staging,
        Some(stemedb_store::verify::ExpectedCheckpoint {
            note: &manifest.checkpoint,
            key_name: &manifest.key_name,
            public_key: signer,
            source: "manifest.json",
        }),
    );
    if !copied.ok() || copied.tree_size != base || copied.root != manifest.root {
        refuse!(
            "the backup does not verify (checked as copied); nothing was restored: tree size {} \
             root {} against the manifest's {} {}; {:?}",
            copied.tree_size,
            copied.root,
            base,
            manifest.root,
            copied.findings
        );
    }
    let wal_dir = staging.join("wal");
    std::fs::create_dir_all(&wal_dir)?;
    let mut replayed = 0usize;
    let mut next_id = manifest.wal_segment.max(1);
    if let Some(target) = archive {
        let segments = block_on(target.segments())??;
        next_id = segments
            .keys()
            .next_back()
            .map(|id| id + 1)
            .unwrap_or(next_id)
            .max(next_id);
        let want = to_tree_size.unwrap_or(u64::MAX);
        let mut expected: Option<u64> = None;
        for rec in segments.values() {
            if rec.end_seq() <= base {
                continue;
            }
            if rec.first_seq >= want {
                break;
            }
            match expected {
                None if rec.first_seq > base => refuse!(
                    "the archive {} has no segment holding record {base} (the backup's tree \
                     size); the first later one starts at {}",
                    target.describe(),
                    rec.first_seq
                ),
                Some(e) if rec.first_seq != e => refuse!(
                    "the archive {} is missing records {e}..{} (before {})",
                    target.describe(),
                    rec.first_seq,
                    stemedb_wal::segment_name(rec.segment)
                ),
                _ => {}
            }
            let bytes = block_on(target.fetch(rec))??;
            let name = stemedb_wal::segment_name(rec.segment);
            if rec.end_seq() > want {
                let tmp = staging.join(format!("{name}.full"));
                std::fs::write(&tmp, &bytes)?;
                stemedb_wal::copy_prefix(&tmp, &wal_dir.join(&name), want)?;
                std::fs::remove_file(&tmp)?;
            } else {
                stemedb_store::snapshot::copy_file_bytes(&wal_dir.join(&name), &bytes)?;
            }
            replayed += 1;
            expected = Some(rec.end_seq());
        }
        let reached = expected.unwrap_or(base);
        if let Some(t) = to_tree_size
            && reached < t
        {
            refuse!(
                "the archive {} reaches tree size {reached}, not {t}",
                target.describe()
            );
        }
    }
    if replayed == 0 {
        stemedb_wal::init(&wal_dir, next_id, base)?;
    }
    stemedb_wal::sync_dir(&wal_dir)?;
    // Open once: replays the fetched segments, ends with a durable checkpoint.
    // Without `server.key` in the backup (the key lives outside data directories), opening
    // creates a throwaway key there; replay signs nothing, and it is removed below.
    let opts = stemedb_store::StoreOptions {
        origin: manifest.origin.clone(),
        ..Default::default()
    };
    let store = stemedb_store::Store::open(&staging, opts, Arc::new(stemedb_store::NoObserver))
        .context("opening the restored store (replaying archived segments)")?;
    let head = store.head();
    store.close();
    drop(store);
    if !manifest.key_included {
        let _ = std::fs::remove_file(staging.join("server.key"));
    }
    // Replayed segments are checked in full (their signatures were last checked by the server
    // that wrote them); without replay the store is the verified backup's, byte for byte.
    let check = if replayed > 0 {
        stemedb_store::verify::check_store(&staging, None)
    } else {
        stemedb_store::verify::StoreReport {
            tree_size: head.size,
            root: hex::encode(head.root),
            ..Default::default()
        }
    };
    if !check.ok() {
        cleanup.0 = None;
        refuse!(
            "the restored store does not verify; {} left in place for inspection: {:?}",
            staging.display(),
            check.findings
        );
    }
    if check.tree_size != head.size {
        refuse!(
            "the restored store holds {} assertions, replay reached {}",
            check.tree_size,
            head.size
        );
    }
    cleanup.0 = None;
    swap_in(&staging, &data_dir)?;
    Ok(RestoreReport {
        data_dir,
        backup_tree_size: base,
        tree_size: check.tree_size,
        root: check.root,
        segments_replayed: replayed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Removes a directory when dropped (a restore that failed part-way), unless emptied.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
