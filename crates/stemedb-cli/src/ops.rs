//! Operations on a data directory: `stemedb backup`, `restore`, `verify` and `wal-archive`
//! (the work is in `stemedb-ops`; this prints its reports).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `stemedb backup`.
#[derive(Args)]
pub(crate) struct BackupArgs {
    /// The data directory to back up.
    #[arg(long, env = "STEMEDB_DATA_DIR", default_value = "./stemedb-data")]
    data_dir: PathBuf,
    /// Where to write the backup (a new directory).
    #[arg(long)]
    to: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `stemedb restore`.
#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The backup directory.
    #[arg(long)]
    from: PathBuf,
    /// The data directory to create (absent or empty).
    #[arg(long)]
    data_dir: PathBuf,
    /// Archived WAL segments to replay: a directory or s3://bucket/prefix.
    #[arg(long)]
    wal_archive: Option<String>,
    /// Stop replay at this tree size (the log holds exactly this many assertions).
    #[arg(long)]
    to_tree_size: Option<u64>,
    /// Refuse the backup unless its checkpoint is signed by this Ed25519 public key (hex).
    #[arg(long, value_parser = parse_trusted_key)]
    trusted_key: Option<[u8; 32]>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `stemedb verify`.
#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// A backup directory or a stopped data directory.
    #[arg(long, env = "STEMEDB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The same, as a positional argument.
    path: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `stemedb wal-archive`.
#[derive(Args)]
pub(crate) struct WalArchiveArgs {
    /// The data directory.
    #[arg(long, env = "STEMEDB_DATA_DIR", default_value = "./stemedb-data")]
    data_dir: PathBuf,
    /// A directory or s3://bucket/prefix.
    #[arg(long, env = "STEMEDB_WAL_ARCHIVE")]
    to: String,
    /// Do not seal the active segment first (archive only what rolled over by itself).
    #[arg(long)]
    no_seal: bool,
    /// Keep archived local segments this many days.
    #[arg(long, default_value_t = 7.0)]
    retention_days: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn backup(a: &BackupArgs) -> anyhow::Result<()> {
    let r = stemedb_ops::backup::backup(&a.data_dir, &a.to)?;
    print_report(a.json, &r, || {
        format!(
            "backup of {} assertions (root {}) written to {} ({} files, {} bytes, {}, {:.2} s)",
            r.tree_size,
            r.root,
            r.path.display(),
            r.files,
            r.bytes,
            if r.online { "online" } else { "offline" },
            r.seconds
        )
    })
}

pub(crate) fn restore(a: &RestoreArgs) -> anyhow::Result<()> {
    let target = a
        .wal_archive
        .as_deref()
        .map(stemedb_ops::archive::Target::parse)
        .transpose()?;
    let r = stemedb_ops::restore::restore(
        &a.from,
        &a.data_dir,
        target.as_ref(),
        a.to_tree_size,
        a.trusted_key,
    )?;
    print_report(a.json, &r, || {
        format!(
            "restored {} assertions (backup {} + {} archived segments; root {}) into {} in {:.2} s",
            r.tree_size,
            r.backup_tree_size,
            r.segments_replayed,
            r.root,
            r.data_dir.display(),
            r.seconds
        )
    })
}

pub(crate) fn verify(a: VerifyArgs) -> ExitCode {
    verify_cmd(a.path.or(a.data_dir), a.json)
}

pub(crate) fn wal_archive(a: &WalArchiveArgs) -> anyhow::Result<()> {
    let target = stemedb_ops::archive::Target::parse(&a.to)?;
    let opts = stemedb_ops::archive::ArchiveOptions {
        seal: !a.no_seal,
        retention: std::time::Duration::from_secs_f64(a.retention_days.max(0.0) * 86_400.0),
    };
    let r = stemedb_ops::archive::archive(&a.data_dir, &target, &opts)?;
    print_report(a.json, &r, || {
        format!(
            "archived {} segment(s) to {} ({} already there, {} bytes); records below {} are archived; removed {} local segment(s)",
            r.archived.len(),
            r.target,
            r.already_archived,
            r.bytes,
            r.archived_through,
            r.removed.len()
        )
    })
}

fn print_report<T: serde::Serialize>(
    json: bool,
    report: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

fn verify_cmd(path: Option<PathBuf>, json: bool) -> ExitCode {
    let Some(path) = path else {
        eprintln!("error: name a backup or data directory (PATH or --data-dir)");
        return ExitCode::from(2);
    };
    match stemedb_ops::verify::verify(&path) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("error: {e}"),
                }
            } else {
                print!("{}", report.render());
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {}", crate::render(&anyhow::Error::from(e)));
            ExitCode::from(2)
        }
    }
}

/// A 64-hex-character Ed25519 public key.
fn parse_trusted_key(s: &str) -> Result<[u8; 32], String> {
    stemedb_core::parse_agent(s)
        .map_err(|e| format!("a public key is 64 lowercase hex characters: {e}"))
}
