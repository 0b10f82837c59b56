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
use stemedb_benches::{agent_key, signed_assertion_about, subject_of};

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
    /// Tail-match queries returning LIMIT rows a page: each of CONCURRENCY workers walks the
    /// pages of `subject=TAIL&match=tail` with next_cursor, PAGES pages each.
    TailPages {
        #[arg(long, default_value = "http://127.0.0.1:18180")]
        server: String,
        #[arg(long, default_value = "cpu")]
        tail: String,
        #[arg(long, default_value_t = 100)]
        limit: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 500)]
        pages: usize,
    },
    /// Point queries (lens latest, exact subject) straight on a stopped server's data
    /// directory, one thread, no HTTP: the store's share of a query's cost.
    StoreQueries {
        #[arg(long)]
        data_dir: PathBuf,
        /// Subjects the data set was made with (gen --subjects).
        #[arg(long, default_value_t = 250_000)]
        subjects: u64,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
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
        Cmd::TailPages {
            server,
            tail,
            limit,
            concurrency,
            pages,
        } => {
            let start = Instant::now();
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (server, tail) = (server.clone(), tail.clone());
                    std::thread::spawn(move || -> anyhow::Result<(Histogram<u64>, usize)> {
                        let client = stemedb_client::Client::new(&server)?;
                        let mut h = Histogram::<u64>::new(3)?;
                        let mut rows = 0;
                        let mut cursor: Option<String> = None;
                        for _ in 0..pages {
                            let mut q = serde_json::json!({
                                "subject": tail, "match": "tail", "limit": limit,
                            });
                            if let Some(c) = &cursor {
                                q["cursor"] = c.clone().into();
                            }
                            let t = Instant::now();
                            let a = client.query(&q)?;
                            h.record(t.elapsed().as_micros() as u64)?;
                            rows += a["results"].as_array().map_or(0, Vec::len);
                            cursor = a["next_cursor"].as_str().map(str::to_string);
                            if cursor.is_none() {
                                break;
                            }
                        }
                        Ok((h, rows))
                    })
                })
                .collect();
            let mut hist = Histogram::<u64>::new(3)?;
            let mut rows = 0;
            for w in workers {
                let (h, r) = w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
                hist.add(h)?;
                rows += r;
            }
            let secs = start.elapsed().as_secs_f64();
            report(
                "tail_pages",
                rows,
                secs,
                &hist,
                serde_json::json!({"tail": tail, "limit": limit, "concurrency": concurrency,
                    "pages_per_second": hist.len() as f64 / secs}),
            );
        }
        Cmd::StoreQueries {
            data_dir,
            subjects,
            count,
        } => {
            let mut opts = stemedb_store::StoreOptions::default();
            if let Ok(mb) = std::env::var("STEMEDB_BENCH_CACHE_MB") {
                opts.cache_bytes = mb.parse::<usize>()? << 20;
            }
            let store =
                stemedb_store::Store::open(&data_dir, opts, Arc::new(stemedb_store::NoObserver))?;
            let mut hist = Histogram::<u64>::new(3)?;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let start = Instant::now();
            for _ in 0..count {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let q = stemedb_store::Query {
                    subject: Some(subject_of(x % subjects)),
                    limit: 100,
                    ..stemedb_store::Query::default()
                };
                let t = Instant::now();
                let a = store.query(&q, &|_| 1.0)?;
                anyhow::ensure!(a.results.len() == 1, "no result for {:?}", q.subject);
                hist.record(t.elapsed().as_nanos() as u64 / 1000)?;
            }
            report(
                "store_point_query",
                count as usize,
                start.elapsed().as_secs_f64(),
                &hist,
                serde_json::json!({"subjects": subjects}),
            );
        }
    }
    Ok(())
}
