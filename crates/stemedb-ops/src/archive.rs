//! `stemedb wal-archive`: copies sealed WAL segments to a directory or `s3://bucket/prefix`.
//!
//! For each sealed segment: read it locally and check every record; skip it when the archive
//! already holds the same bytes (its sidecar `segment-NNNNNNNN.log.json` names the BLAKE3);
//! otherwise upload it, read the copy back and compare its BLAKE3, and only then upload the
//! sidecar, which marks the copy complete. An archived segment is never overwritten: a sidecar
//! with a different hash (another server's history, e.g. after a restore) stops the run.
//!
//! Then local retention: a sealed segment is removed when it is archived (sidecar hash equals the
//! local file), every record in it is covered by the store's durable checkpoint, and it is older
//! than the retention period (7 days by default).
//!
//! S3 settings come from the usual environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT` (for an S3-compatible server) and `AWS_ALLOW_HTTP=true` for a
//! plain-HTTP endpoint.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Context as _, refusal, refuse};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use serde::{Deserialize, Serialize};

use crate::{ARCHIVE_MARKER, control, now_ms, try_lock};

/// Where archived segments go.
pub enum Target {
    /// A local (or mounted) directory.
    Dir(PathBuf),
    /// An object store bucket and key prefix.
    Object {
        /// The store.
        store: Arc<dyn ObjectStore>,
        /// Key prefix (may be empty).
        prefix: String,
        /// As the operator wrote it.
        url: String,
    },
}

/// The sidecar of one archived segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// Segment number.
    pub segment: u32,
    /// Sequence number (log index) of its first record.
    pub first_seq: u64,
    /// Records it holds.
    pub records: u64,
    /// File length.
    pub bytes: u64,
    /// BLAKE3 of the file, hex.
    pub blake3: String,
    /// When it was archived, Unix ms.
    pub archived_at_ms: i64,
}

impl SegmentRecord {
    /// The sequence number after its last record.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.records
    }
}

fn sidecar_name(segment: u32) -> String {
    format!("{}.json", stemedb_wal::segment_name(segment))
}

/// Runs a future on a private single-threaded runtime (the operations are synchronous).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> crate::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

impl Target {
    /// `s3://bucket/prefix`, `file:///path`, or a plain path.
    pub fn parse(s: &str) -> crate::Result<Target> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                refuse!("{s}: no bucket name");
            }
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .with_context(|| format!("S3 settings for {s}"))?;
            return Ok(Target::Object {
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_string(),
                url: s.to_string(),
            });
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if path.contains("://") {
            refuse!("{s}: only s3:// and directories are supported");
        }
        Ok(Target::Dir(std::path::absolute(path)?))
    }

    /// As the operator wrote it.
    pub fn describe(&self) -> String {
        match self {
            Target::Dir(p) => p.display().to_string(),
            Target::Object { url, .. } => url.clone(),
        }
    }

    fn key(&self, name: &str) -> object_store::path::Path {
        match self {
            Target::Object { prefix, .. } if !prefix.is_empty() => {
                object_store::path::Path::from(format!("{prefix}/{name}"))
            }
            _ => object_store::path::Path::from(name),
        }
    }

    /// Reads one object, `None` when absent.
    pub async fn get(&self, name: &str) -> crate::Result<Option<Vec<u8>>> {
        match self {
            Target::Dir(dir) => match std::fs::read(dir.join(name)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("read {}", dir.join(name).display())),
            },
            Target::Object { store, url, .. } => match store.get(&self.key(name)).await {
                Ok(r) => Ok(Some(r.bytes().await?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(refusal!("{url}/{name}: {e}")),
            },
        }
    }

    /// Writes one object (a directory target: temp file, fsync, rename, fsync the directory).
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> crate::Result<()> {
        match self {
            Target::Dir(dir) => {
                std::fs::create_dir_all(dir)?;
                let tmp = dir.join(format!(".{name}.tmp"));
                let mut f = std::fs::File::create(&tmp)
                    .with_context(|| format!("create {}", tmp.display()))?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, dir.join(name))?;
                stemedb_wal::sync_dir(dir)?;
                Ok(())
            }
            Target::Object { store, url, .. } => {
                store
                    .put(&self.key(name), bytes.into())
                    .await
                    .map_err(|e| refusal!("{url}/{name}: {e}"))?;
                Ok(())
            }
        }
    }

    /// Names of the objects under the target (one level).
    pub async fn list(&self) -> crate::Result<Vec<String>> {
        match self {
            Target::Dir(dir) => {
                if !dir.exists() {
                    return Ok(Vec::new());
                }
                let mut out = Vec::new();
                for e in std::fs::read_dir(dir)? {
                    out.push(e?.file_name().to_string_lossy().into_owned());
                }
                Ok(out)
            }
            Target::Object { store, prefix, url } => {
                let p =
                    (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix.as_str()));
                let listed = store
                    .list_with_delimiter(p.as_ref())
                    .await
                    .map_err(|e| refusal!("list {url}: {e}"))?;
                Ok(listed
                    .objects
                    .into_iter()
                    .filter_map(|o| o.location.filename().map(str::to_string))
                    .collect())
            }
        }
    }

    /// Every archived segment's sidecar, by segment number.
    pub async fn segments(&self) -> crate::Result<BTreeMap<u32, SegmentRecord>> {
        let mut out = BTreeMap::new();
        for name in self.list().await? {
            let Some(seg) = name.strip_suffix(".json").and_then(stemedb_wal::segment_id) else {
                continue;
            };
            let Some(bytes) = self.get(&name).await? else {
                continue;
            };
            let rec: SegmentRecord = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: bad sidecar {name}", self.describe()))?;
            if rec.segment != seg {
                refuse!(
                    "{}: sidecar {name} describes segment {}",
                    self.describe(),
                    rec.segment
                );
            }
            out.insert(seg, rec);
        }
        Ok(out)
    }

    /// Downloads segment `rec` and checks it against its sidecar.
    pub async fn fetch(&self, rec: &SegmentRecord) -> crate::Result<Vec<u8>> {
        let name = stemedb_wal::segment_name(rec.segment);
        let bytes = self.get(&name).await?.ok_or_else(|| {
            refusal!(
                "{}: {name} is missing (its sidecar exists)",
                self.describe()
            )
        })?;
        let h = blake3::hash(&bytes).to_hex().to_string();
        if h != rec.blake3 || bytes.len() as u64 != rec.bytes {
            refuse!(
                "{}: {name} is damaged (BLAKE3 {h}, {} bytes; its sidecar says {}, {} bytes)",
                self.describe(),
                bytes.len(),
                rec.blake3,
                rec.bytes
            );
        }
        Ok(bytes)
    }
}

/// Options for [`archive`].
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// Seal the active segment first (if it holds records), so everything acknowledged so far
    /// is archived.
    pub seal: bool,
    /// Remove archived local segments older than this (and covered by a durable checkpoint).
    pub retention: Duration,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            seal: true,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What [`archive`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveReport {
    /// Where to.
    pub target: String,
    /// Segments copied and verified in this run.
    pub archived: Vec<u32>,
    /// Sealed segments the archive already held.
    pub already_archived: usize,
    /// Local segments removed by retention.
    pub removed: Vec<u32>,
    /// Every record below this sequence number (tree size) is archived.
    pub archived_through: u64,
    /// Bytes uploaded.
    pub bytes: u64,
}

/// Archives the sealed WAL segments of `data_dir` to `target`, then applies retention.
pub fn archive(
    data_dir: &Path,
    target: &Target,
    opts: &ArchiveOptions,
) -> crate::Result<ArchiveReport> {
    let wal_dir = data_dir.join("wal");
    if !wal_dir.is_dir() {
        refuse!("{} has no wal/ directory", data_dir.display());
    }
    // Sealing: the running server does it; offline, this process holds the lock and does.
    let _lock = match try_lock(data_dir)? {
        Some(lock) => {
            if opts.seal {
                let (mut wal, _) = stemedb_wal::Wal::open(&wal_dir, Default::default())?;
                wal.seal()?;
            }
            Some(lock)
        }
        None => {
            if opts.seal {
                control::seal(data_dir)?;
            }
            None
        }
    };
    let segments = stemedb_wal::list_segments(&wal_dir)?;
    let sealed = &segments[..segments.len().saturating_sub(1)];
    let mut report = ArchiveReport {
        target: target.describe(),
        ..ArchiveReport::default()
    };
    let mut remote = block_on(target.segments())??;
    let mut archived_ok: BTreeMap<u32, SegmentRecord> = BTreeMap::new();
    for (id, path) in sealed {
        let scan = stemedb_wal::scan(path, |_, _, _| {})?;
        if let Some(why) = scan.bad {
            refuse!(
                "sealed segment {} is damaged at byte {} ({why}); not archived",
                path.display(),
                scan.good_end
            );
        }
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let rec = SegmentRecord {
            segment: *id,
            first_seq: scan.first_seq,
            records: scan.records,
            bytes: bytes.len() as u64,
            blake3: blake3::hash(&bytes).to_hex().to_string(),
            archived_at_ms: now_ms(),
        };
        if let Some(existing) = remote.get(id) {
            if existing.blake3 == rec.blake3 {
                report.already_archived += 1;
                archived_ok.insert(*id, existing.clone());
                continue;
            }
            refuse!(
                "{} already holds a different {} (first record {}, BLAKE3 {}; local first record \
                 {}, BLAKE3 {}). It is another history of this log, e.g. from before a restore: \
                 archive to a new prefix",
                target.describe(),
                stemedb_wal::segment_name(*id),
                existing.first_seq,
                existing.blake3,
                rec.first_seq,
                rec.blake3
            );
        }
        let name = stemedb_wal::segment_name(*id);
        let len = bytes.len() as u64;
        block_on(target.put(&name, bytes))??;
        // Read the copy back and compare before declaring it archived.
        block_on(target.fetch(&rec))??;
        block_on(target.put(&sidecar_name(*id), serde_json::to_vec_pretty(&rec)?))??;
        report.bytes += len;
        report.archived.push(*id);
        archived_ok.insert(*id, rec);
    }
    // Contiguous archived prefix: every record below `archived_through` is in the archive
    // (what it held before this run, plus what this run added; no second listing).
    for (id, rec) in &archived_ok {
        remote.insert(*id, rec.clone());
    }
    let mut through = 0u64;
    for rec in remote.values() {
        if rec.first_seq <= through {
            through = through.max(rec.end_seq());
        }
    }
    report.archived_through = through;

    // Retention.
    let durable = crate::verify::durable_tree_size(data_dir);
    for (id, path) in sealed {
        let Some(rec) = archived_ok.get(id) else {
            continue;
        };
        let old_enough = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= opts.retention);
        if rec.end_seq() <= durable && old_enough {
            stemedb_wal::remove_sealed(&wal_dir, *id)?;
            report.removed.push(*id);
        }
    }
    crate::write_json_atomically(
        &data_dir.join(ARCHIVE_MARKER),
        &serde_json::json!({
            "unix_ms": now_ms(),
            "target": report.target,
            "last_segment": archived_ok.keys().next_back().copied().unwrap_or(0),
            "archived_through": report.archived_through,
        }),
    )?;
    Ok(report)
}
