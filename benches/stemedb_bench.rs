//! `stemedb-bench`: a load generator for a running StemeDB server.
//!
//! Signing is never timed: `gen` pre-signs a data set to a file (one envelope per line), and the
//! load commands replay it.
//!
//! ```sh
//! cargo run --release -p stemedb-benches --bin stemedb-bench -- gen --count 200000 --out /tmp/set.jsonl
//! cargo run --release -p stemedb-benches --bin stemedb-bench -- ingest --file /tmp/set.jsonl --batch 1000 --concurrency 4
//! cargo run --release -p stemedb-benches --bin stemedb-bench -- singles --file /tmp/set.jsonl --concurrency 64 --count 50000
//! ```
//! Output: one JSON object with throughput and latency percentiles (microseconds).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use stemedb_benches::{agent_key, signed_assertion_about};

#[derive(Parser)]
#[command(name = "stemedb-bench", about = "Load generator for StemeDB")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pre-sign COUNT assertions from AGENTS agents into a file (not timed).
    Gen {
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 64)]
        agents: u32,
        /// First assertion number (to make a second, disjoint data set).
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Spread the assertions over this many subjects (assertion n is about server
        /// n % SUBJECTS, so each subject hears from several agents); 0: one subject each.
        #[arg(long, default_value_t = 0)]
        subjects: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Post the file in batches from CONCURRENCY connections.
    Ingest {
        #[arg(long, default_value = "http://127.0.0.1:18180")]
        server: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Post single envelopes from CONCURRENCY connections.
    Singles {
        #[arg(long, default_value = "http://127.0.0.1:18180")]
        server: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Post at most this many (default: the whole file).
        #[arg(long)]
        count: Option<usize>,
    },
}

fn load(path: &PathBuf, limit: Option<usize>) -> anyhow::Result<Vec<Vec<u8>>> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).split(b'\n') {
        let line = line?;
        if !line.is_empty() {
            out.push(line);
        }
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(out)
}

fn report(kind: &str, n: usize, secs: f64, hist: &Histogram<u64>, extra: serde_json::Value) {
    let v = serde_json::json!({
        "kind": kind,
        "assertions": n,
        "seconds": secs,
        "per_second": n as f64 / secs,
        "requests": hist.len(),
        "latency_us": {
            "p50": hist.value_at_quantile(0.50),
            "p90": hist.value_at_quantile(0.90),
            "p99": hist.value_at_quantile(0.99),
            "p999": hist.value_at_quantile(0.999),
            "max": hist.max(),
        },
        "params": extra,
    });
    println!("{v}");
}

fn run_parallel(
    server: &str,
    items: Arc<Vec<Vec<Vec<u8>>>>,
    concurrency: usize,
    single: bool,
) -> anyhow::Result<(f64, Histogram<u64>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (items, next, server) = (items.clone(), next.clone(), server.to_string());
            std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                let client = stemedb_client::Client::new(&server)?;
                let mut h = Histogram::<u64>::new(3)?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(work) = items.get(i) else { break };
                    let t = Instant::now();
                    if single {
                        client.assert_envelope(&work[0])?;
                    } else {
                        for r in client.assert_batch(work)? {
                            r?;
                        }
                    }
                    h.record(t.elapsed().as_micros() as u64)?;
                }
                Ok(h)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3)?;
    for t in threads {
        let h = t.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        hist.add(h)?;
    }
    Ok((start.elapsed().as_secs_f64(), hist))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Gen {
            count,
            agents,
            start,
            subjects,
            out,
        } => {
            let keys: Vec<_> = (0..agents).map(agent_key).collect();
            let mut w = BufWriter::new(std::fs::File::create(&out)?);
            for n in start..start + count {
                let server = if subjects == 0 { n } else { n % subjects };
                let v = signed_assertion_about(&keys[(n % u64::from(agents)) as usize], n, server);
                w.write_all(&v.envelope().encode())?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            eprintln!("wrote {count} signed envelopes to {}", out.display());
        }
        Cmd::Ingest {
            server,
            file,
            batch,
            concurrency,
        } => {
            let envs = load(&file, None)?;
            let n = envs.len();
            let batches: Vec<Vec<Vec<u8>>> = envs.chunks(batch).map(|c| c.to_vec()).collect();
            let (secs, hist) = run_parallel(&server, Arc::new(batches), concurrency, false)?;
            report(
                "batch_ingest",
                n,
                secs,
                &hist,
                serde_json::json!({"batch": batch, "concurrency": concurrency}),
            );
        }
        Cmd::Singles {
            server,
            file,
            concurrency,
            count,
        } => {
            let envs = load(&file, count)?;
            let n = envs.len();
            let items: Vec<Vec<Vec<u8>>> = envs.into_iter().map(|e| vec![e]).collect();
            let (secs, hist) = run_parallel(&server, Arc::new(items), concurrency, true)?;
            report(
                "single_posts",
                n,
                secs,
                &hist,
                serde_json::json!({"concurrency": concurrency}),
            );
        }
    }
    Ok(())
}
