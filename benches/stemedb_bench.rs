//! `stemedb-bench`: a load generator for a running StemeDB server.
//!
//! Signing is never timed: `gen` pre-signs a data set to a file (one envelope per line), and the
//! load commands replay it.
//!
//! ```sh
//! cargo run --release -p stemedb-benches --bin stemedb-bench -- gen --count 200000 --out /tmp/set.jsonl
//! cargo run --release -p stemedb-benches --bin stemedb-bench -- ingest --file /tmp/set.jsonl --batch 1000 --concurrency 4
//! cargo run --release -p stemedb-benches --bin stemedb-bench -- singles --file /tmp/set.jsonl --concurrency 64 --count 50000
//! cargo run --release -p stemedb-benches --bin stemedb-bench -- mixed --file /tmp/set.jsonl --write-percent 10 --seconds 20
//! ```
//! Output: one JSON object per measurement with throughput and latency percentiles
//! (microseconds), or a table with `--format table`. A progress bar is drawn on stderr when it is
//! a terminal. `ingest --window N` also reports the rate and the server's RSS every N
//! assertions (the drift over a long run).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use stemedb_benches::{agent_key, signed_assertion_about, subject_of};

#[derive(Parser)]
#[command(name = "stemedb-bench", about = "Load generator for StemeDB")]
struct Cli {
    /// How results are printed: one JSON object per line, or a table.
    #[arg(long, value_enum, default_value_t = Format::Json, global = true)]
    format: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    Table,
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
        /// Also report the rate of each window of this many assertions and the server's RSS
        /// at its end (0: no windows).
        #[arg(long, default_value_t = 0)]
        window: u64,
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
    /// Mixed read/write load: each of CONCURRENCY connections sends, WRITE_PERCENT of the time,
    /// the next single envelope of the file, otherwise a point query (`lens=latest`, exact
    /// subject, a random one of SUBJECTS) for SECONDS or until the file is used up.
    Mixed {
        #[arg(long, default_value = "http://127.0.0.1:18180")]
        server: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        write_percent: u32,
        /// Subjects the queried data set was made with (gen --subjects).
        #[arg(long, default_value_t = 250_000)]
        subjects: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
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
    /// The verification ceiling: THREADS threads (default: every core) do only what the server
    /// must do to every envelope before storing it (decode and strict Ed25519 verification) on
    /// the file's envelopes; the rate is what no server on this machine can beat.
    Verify {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// What a `valid_at` filter costs: a fresh store of `subjects` subjects with `per_subject`
    /// assertions each (4 agents, consecutive validity intervals), then exact-subject queries
    /// under every lens without `valid_at`, with a `valid_at` half the rows hold at, and one no
    /// row holds at, interleaved; medians side by side (the target: the same as without, plus
    /// the rows it skips). No HTTP.
    ValidTime {
        #[arg(long, default_value_t = 2_000)]
        subjects: u64,
        #[arg(long, default_value_t = 16)]
        per_subject: u64,
        #[arg(long, default_value_t = 20_000)]
        count: u64,
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

static FORMAT: std::sync::OnceLock<Format> = std::sync::OnceLock::new();

fn report(kind: &str, n: usize, secs: f64, hist: &Histogram<u64>, extra: serde_json::Value) {
    // What `n` counts: queries for the read loads, result rows for tail pages, else assertions.
    let counted = match kind {
        "mixed_reads" | "store_point_query" => "queries",
        "tail_pages" => "rows",
        _ => "assertions",
    };
    let mut v = serde_json::json!({
        "kind": kind,
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
    v[counted] = n.into();
    emit(&v);
}

/// Prints one result: a JSON line, or a small table.
fn emit(v: &serde_json::Value) {
    if FORMAT.get().copied() != Some(Format::Table) {
        println!("{v}");
        return;
    }
    let kind = v["kind"].as_str().unwrap_or("result");
    println!("{kind}");
    let mut rows: Vec<(String, String)> = Vec::new();
    let ms = |us: &serde_json::Value| format!("{:.2} ms", us.as_f64().unwrap_or(0.0) / 1000.0);
    if let Some(obj) = v.as_object() {
        for (k, x) in obj {
            match k.as_str() {
                "kind" => {}
                "latency_us" => {
                    for q in ["p50", "p90", "p99", "p999", "max"] {
                        rows.push((format!("latency {q}"), ms(&x[q])));
                    }
                }
                "params" => {
                    if let Some(p) = x.as_object() {
                        for (pk, pv) in p {
                            rows.push((pk.clone(), pv.to_string()));
                        }
                    }
                }
                "per_second" | "seconds" => {
                    rows.push((k.clone(), format!("{:.1}", x.as_f64().unwrap_or(0.0))));
                }
                _ => rows.push((k.clone(), x.to_string())),
            }
        }
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, x) in rows {
        println!("  {k:<w$}  {x:>14}");
    }
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// The server's resident set size from its `/metrics`, if it says.
fn server_rss(client: &stemedb_client::Client) -> Option<u64> {
    let text = client.metrics_text().ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// A minimal HTTP/1.1 keep-alive client for single POSTs: one blocking socket per worker, the
/// request written in one call and the response read by its `Content-Length`. `reqwest`'s
/// blocking client runs a runtime thread per client and crossed threads twice per request
/// (67 µs of load-generator CPU per single POST, docs/performance.md); this keeps the load
/// generator's share of the two cores small, as pgbench's is.
struct RawHttp {
    addr: String,
    host: String,
    conn: Option<BufReader<std::net::TcpStream>>,
    request: Vec<u8>,
}

impl RawHttp {
    fn new(server: &str) -> anyhow::Result<RawHttp> {
        let host = server
            .strip_prefix("http://")
            .context("raw HTTP singles need an http:// server URL")?
            .trim_end_matches('/')
            .to_string();
        if host.contains('/') {
            anyhow::bail!("raw HTTP singles need a server URL without a path, not {server}");
        }
        let addr = if host.contains(':') {
            host.clone()
        } else {
            format!("{host}:80")
        };
        Ok(RawHttp {
            addr,
            host,
            conn: None,
            request: Vec::new(),
        })
    }

    /// POSTs one envelope to `/v1/assert`; an answer other than 201 (created) or 200
    /// (a duplicate) is an error with the server's body.
    fn assert_envelope(&mut self, body: &[u8]) -> anyhow::Result<()> {
        self.request.clear();
        write!(
            self.request,
            "POST /v1/assert HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )?;
        self.request.extend_from_slice(body);
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => {
                let s = std::net::TcpStream::connect(&self.addr)
                    .with_context(|| format!("connecting to {}", self.addr))?;
                s.set_nodelay(true)?;
                // A server that stops answering fails the run instead of hanging it (the
                // client library's timeout is 60 s too).
                s.set_read_timeout(Some(Duration::from_secs(60)))?;
                s.set_write_timeout(Some(Duration::from_secs(60)))?;
                self.conn.insert(BufReader::new(s))
            }
        };
        conn.get_mut().write_all(&self.request)?;
        let mut line = String::new();
        conn.read_line(&mut line)?;
        let status_line = line.clone();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut len: Option<usize> = None;
        let mut close = false;
        loop {
            line.clear();
            if conn.read_line(&mut line)? == 0 {
                anyhow::bail!("the server closed the connection mid-response");
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    len = Some(value.parse()?);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value
                        .split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("close"));
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    anyhow::bail!("unexpected transfer-encoding {value}");
                }
            }
        }
        if !line_is_http11(&status_line) {
            close = true;
        }
        let Some(len) = len else {
            self.conn = None;
            anyhow::bail!("HTTP {status} without Content-Length");
        };
        let mut answer = vec![0u8; len];
        std::io::Read::read_exact(conn, &mut answer)?;
        if close {
            self.conn = None;
        }
        if status != 201 && status != 200 {
            anyhow::bail!("HTTP {status}: {}", String::from_utf8_lossy(&answer));
        }
        Ok(())
    }
}

/// Whether a status line is HTTP/1.1 (an HTTP/1.0 answer closes the connection after itself).
fn line_is_http11(status_line: &str) -> bool {
    status_line.starts_with("HTTP/1.1 ")
}

fn run_parallel(
    server: &str,
    items: Arc<Vec<Vec<Vec<u8>>>>,
    concurrency: usize,
    single: bool,
) -> anyhow::Result<(f64, Histogram<u64>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let bar = progress(items.iter().map(|w| w.len() as u64).sum(), "assertions");
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (items, next, server) = (items.clone(), next.clone(), server.to_string());
            let bar = bar.clone();
            std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                // Batches go through the client library; single POSTs through raw sockets (the
                // library's blocking client starts a runtime thread, so only batches make one).
                let (client, mut raw) = if single {
                    (None, Some(RawHttp::new(&server)?))
                } else {
                    (Some(stemedb_client::Client::new(&server)?), None)
                };
                let mut h = Histogram::<u64>::new(3)?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(work) = items.get(i) else { break };
                    let t = Instant::now();
                    if let Some(raw) = raw.as_mut() {
                        raw.assert_envelope(&work[0])?;
                    } else if let Some(client) = &client {
                        for r in client.assert_batch(work)? {
                            r?;
                        }
                    }
                    h.record(t.elapsed().as_micros() as u64)?;
                    bar.inc(work.len() as u64);
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
    bar.finish_and_clear();
    Ok((start.elapsed().as_secs_f64(), hist))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = FORMAT.set(cli.format);
    match cli.command {
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
            window,
        } => ingest(&server, &file, batch, concurrency, window)?,
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
        Cmd::Mixed {
            server,
            file,
            concurrency,
            write_percent,
            subjects,
            seconds,
        } => mixed(
            &server,
            &file,
            concurrency,
            write_percent,
            subjects,
            seconds,
        )?,
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
        Cmd::Verify { file, threads } => {
            let envs = Arc::new(load(&file, None)?);
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1);
            let start = Instant::now();
            let per = envs.len().div_ceil(threads);
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let envs = envs.clone();
                    // As the server verifies a batch: decode and check each envelope, then
                    // `verify_batch` per 64 (one field inversion for each 64).
                    std::thread::spawn(move || -> anyhow::Result<usize> {
                        let mut ok = 0;
                        let mine: Vec<&Vec<u8>> = envs.iter().skip(t * per).take(per).collect();
                        for chunk in mine.chunks(64) {
                            let prepared = chunk
                                .iter()
                                .map(|e| stemedb_core::Prepared::from_bytes(e))
                                .collect::<Result<Vec<_>, _>>()?;
                            for r in stemedb_core::verify_batch(prepared) {
                                r?;
                                ok += 1;
                            }
                        }
                        Ok(ok)
                    })
                })
                .collect();
            let mut n = 0;
            for w in workers {
                n += w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
            }
            let secs = start.elapsed().as_secs_f64();
            let hist = Histogram::<u64>::new(3)?;
            report(
                "verify_ceiling",
                n,
                secs,
                &hist,
                serde_json::json!({"threads": threads}),
            );
        }
        Cmd::ValidTime {
            subjects,
            per_subject,
            count,
        } => valid_time(subjects, per_subject, count)?,
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
                xorshift(&mut x);
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

/// Batch ingest, streaming the file: a reader thread cuts it into batches (so a 10M-assertion
/// file never sits in memory), CONCURRENCY workers post them. With `window`, a monitor thread
/// reports each window's rate and the server's RSS as JSON lines before the summary.
fn ingest(
    server: &str,
    file: &PathBuf,
    batch: usize,
    concurrency: usize,
    window: u64,
) -> anyhow::Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    let bytes = f.metadata()?.len();
    let (tx, rx) = mpsc::sync_channel::<(Vec<Vec<u8>>, u64)>(concurrency * 2);
    let reader = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut chunk = Vec::with_capacity(batch);
        let mut chunk_bytes = 0u64;
        for line in BufReader::with_capacity(1 << 20, f).split(b'\n') {
            let line = line?;
            chunk_bytes += line.len() as u64 + 1;
            if line.is_empty() {
                continue;
            }
            chunk.push(line);
            if chunk.len() == batch {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(batch));
                if tx.send((full, chunk_bytes)).is_err() {
                    return Ok(());
                }
                chunk_bytes = 0;
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send((chunk, chunk_bytes));
        }
        Ok(())
    });
    let rx = Arc::new(Mutex::new(rx));
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let bar = progress(bytes, "bytes of the file");
    let start = Instant::now();
    let monitor = (window > 0).then(|| {
        let (done, finished, server) = (done.clone(), finished.clone(), server.to_string());
        let bar = bar.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let client = stemedb_client::Client::new(&server)?;
            let (mut next, mut last_n, mut last_t) = (window, 0u64, Instant::now());
            loop {
                let stop = finished.load(Ordering::Acquire);
                let n = done.load(Ordering::Acquire);
                if n >= next || (stop && n > last_n) {
                    let now = Instant::now();
                    let v = serde_json::json!({
                        "kind": "ingest_window",
                        "assertions": n,
                        "window": n - last_n,
                        "seconds": now.duration_since(last_t).as_secs_f64(),
                        "per_second": (n - last_n) as f64 / now.duration_since(last_t).as_secs_f64(),
                        "elapsed_seconds": start.elapsed().as_secs_f64(),
                        "server_rss_bytes": server_rss(&client),
                    });
                    bar.suspend(|| emit(&v));
                    (last_n, last_t) = (n, now);
                    while next <= n {
                        next += window;
                    }
                }
                if stop {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    });
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (rx, done, server, bar) =
                (rx.clone(), done.clone(), server.to_string(), bar.clone());
            std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                let client = stemedb_client::Client::new(&server)?;
                let mut h = Histogram::<u64>::new(3)?;
                loop {
                    let next = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => anyhow::bail!("batch queue poisoned"),
                    };
                    let Ok((work, work_bytes)) = next else { break };
                    let t = Instant::now();
                    for r in client.assert_batch(&work)? {
                        r?;
                    }
                    h.record(t.elapsed().as_micros() as u64)?;
                    done.fetch_add(work.len() as u64, Ordering::AcqRel);
                    bar.inc(work_bytes);
                }
                Ok(h)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3)?;
    let mut failure = None;
    for w in workers {
        match w.join() {
            Ok(Ok(h)) => hist.add(h)?,
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some(anyhow::anyhow!("worker panicked"))),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    finished.store(true, Ordering::Release);
    drop(rx);
    if let Some(m) = monitor {
        m.join()
            .map_err(|_| anyhow::anyhow!("monitor panicked"))??;
    }
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e);
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    report(
        "batch_ingest",
        done.load(Ordering::Acquire) as usize,
        secs,
        &hist,
        serde_json::json!({"batch": batch, "concurrency": concurrency}),
    );
    Ok(())
}

/// Mixed reads and writes on the same connections; reads and writes get their own histograms.
fn mixed(
    server: &str,
    file: &PathBuf,
    concurrency: usize,
    write_percent: u32,
    subjects: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(write_percent <= 100, "--write-percent is 0 to 100");
    let envs = Arc::new(load(file, None)?);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let bar = progress(seconds, "seconds");
    let ticker =
        {
            let bar = bar.clone();
            std::thread::spawn(move || {
                while Instant::now() < deadline && !bar.is_finished() {
                    std::thread::sleep(Duration::from_millis(250));
                    bar.set_position(seconds.saturating_sub(
                        deadline.saturating_duration_since(Instant::now()).as_secs(),
                    ));
                }
            })
        };
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (envs, next, server) = (envs.clone(), next.clone(), server.to_string());
            std::thread::spawn(
                move || -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
                    let client = stemedb_client::Client::new(&server)?;
                    let (mut reads, mut writes) =
                        (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
                    let mut x: u64 =
                        0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    while Instant::now() < deadline {
                        xorshift(&mut x);
                        if (x % 100) < u64::from(write_percent) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(env) = envs.get(i) else { break };
                            let t = Instant::now();
                            client.assert_envelope(env)?;
                            writes.record(t.elapsed().as_micros() as u64)?;
                        } else {
                            let q = serde_json::json!({
                                "subject": subject_of((x >> 8) % subjects.max(1)),
                                "lens": "latest",
                            });
                            let t = Instant::now();
                            let a = client.query(&q)?;
                            reads.record(t.elapsed().as_micros() as u64)?;
                            anyhow::ensure!(
                                a["results"].as_array().is_some_and(|r| !r.is_empty()),
                                "no result for {q}"
                            );
                        }
                    }
                    Ok((reads, writes))
                },
            )
        })
        .collect();
    let (mut reads, mut writes) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
    for w in workers {
        let (r, wr) = w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        reads.add(r)?;
        writes.add(wr)?;
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let _ = ticker.join();
    let params = serde_json::json!({
        "concurrency": concurrency,
        "write_percent": write_percent,
        "operations_per_second": (reads.len() + writes.len()) as f64 / secs,
    });
    report(
        "mixed_reads",
        reads.len() as usize,
        secs,
        &reads,
        params.clone(),
    );
    report("mixed_writes", writes.len() as usize, secs, &writes, params);
    Ok(())
}

/// The `valid-time` mode (see its help).
fn valid_time(subjects: u64, per_subject: u64, count: u64) -> anyhow::Result<()> {
    const HOUR: i64 = 3_600_000;
    let tmp = tempfile::tempdir()?;
    let store = stemedb_store::Store::open(
        tmp.path(),
        stemedb_store::StoreOptions::default(),
        Arc::new(stemedb_store::NoObserver),
    )?;
    let keys: Vec<_> = (0..4u8)
        .map(|a| stemedb_core::signing_key_from_seed(&[a + 1; 32]))
        .collect();
    let mut batch = Vec::new();
    let flush = |batch: &mut Vec<stemedb_store::Entry>| -> anyhow::Result<()> {
        for r in store.submit(std::mem::take(batch), 1).wait() {
            r?;
        }
        Ok(())
    };
    // Row r of a subject holds in [r, r + 1) hours: at hour per_subject / 2 + 0.5 exactly one
    // row in `per_subject` holds, at hour -1 none.
    for s in 0..subjects {
        for r in 0..per_subject {
            let key = &keys[(r % 4) as usize];
            let st = serde_json::json!({
                "v": 1, "subject": subject_of(s), "predicate": "status", "object": r,
                "agent": stemedb_core::public_key_hex(key), "ts": 1_700_000_000_000i64 + r as i64,
                "valid_from": r as i64 * HOUR, "valid_until": (r as i64 + 1) * HOUR,
            });
            let v = stemedb_core::sign(key, st.to_string().into_bytes())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let raw = v.envelope().encode();
            batch.push(stemedb_store::Entry::new(v, raw));
            if batch.len() >= 1000 {
                flush(&mut batch)?;
            }
        }
    }
    flush(&mut batch)?;
    store.checkpoint()?;
    let at_half = (per_subject as i64 / 2) * HOUR + HOUR / 2;
    let variants: [(&str, Option<i64>); 3] = [
        ("none", None),
        ("one_row_holds", Some(at_half)),
        ("no_row_holds", Some(-HOUR)),
    ];
    let lenses = [
        stemedb_store::Lens::Latest,
        stemedb_store::Lens::Trusted,
        stemedb_store::Lens::Consensus,
        stemedb_store::Lens::Confidence,
        stemedb_store::Lens::Raw,
    ];
    let mut hists: Vec<Histogram<u64>> = (0..variants.len())
        .map(|_| Histogram::<u64>::new(3))
        .collect::<Result<_, _>>()?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let start = Instant::now();
    for i in 0..count {
        xorshift(&mut x);
        let lens = lenses[(i % lenses.len() as u64) as usize];
        for (v, (_, valid_at)) in variants.iter().enumerate() {
            let q = stemedb_store::Query {
                subject: Some(subject_of(x % subjects)),
                lens,
                valid_at: *valid_at,
                limit: 100,
                ..stemedb_store::Query::default()
            };
            let t = Instant::now();
            let a = store.query(&q, &|_| 1.0)?;
            hists[v].record(t.elapsed().as_nanos() as u64)?;
            let expect = match (v, lens) {
                (2, _) => 0,
                (0, stemedb_store::Lens::Raw) => per_subject as usize,
                _ => 1,
            };
            anyhow::ensure!(
                a.results.len() == expect,
                "{lens:?} valid_at {valid_at:?}: {} results, expected {expect}",
                a.results.len()
            );
        }
    }
    let base = hists[0].value_at_quantile(0.5) as f64;
    for (v, (name, _)) in variants.iter().enumerate() {
        let h = &hists[v];
        report(
            &format!("valid_time_{name}"),
            count as usize,
            start.elapsed().as_secs_f64(),
            &h_us(h)?,
            serde_json::json!({
                "subjects": subjects, "per_subject": per_subject,
                "median_ns": h.value_at_quantile(0.5), "p99_ns": h.value_at_quantile(0.99),
                "median_vs_none": h.value_at_quantile(0.5) as f64 / base,
            }),
        );
    }
    store.close();
    Ok(())
}

/// A nanosecond histogram in microseconds (what `report` prints).
fn h_us(h: &Histogram<u64>) -> anyhow::Result<Histogram<u64>> {
    let mut out = Histogram::<u64>::new(3)?;
    for v in h.iter_recorded() {
        out.record_n((v.value_iterated_to() / 1000).max(1), v.count_at_value())?;
    }
    Ok(out)
}

/// One step of the xorshift64 generator the query modes pick subjects with.
fn xorshift(x: &mut u64) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
}
