#!/usr/bin/env python3
"""Medians of a scripts/bench.sh run, side by side with PostgreSQL, written into
docs/performance.md between `<!-- bench:begin -->` and `<!-- bench:end -->`.

Usage: bench_report.py RESULTS_DIR PERFORMANCE_MD
RESULTS_DIR holds stemedb.jsonl and postgres.jsonl (one JSON object per line).
"""
import datetime
import json
import os
import platform
import re
import statistics
import sys


def load(path):
    out = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def ms(v):
    """wrk prints '2.09ms' / '850.00us'; our tools print microseconds as numbers."""
    if isinstance(v, (int, float)):
        return v / 1000
    m = re.match(r"([0-9.]+)(us|ms|s)", v)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def main():
    results, doc = sys.argv[1], sys.argv[2]
    s = load(os.path.join(results, "stemedb.jsonl"))
    p = load(os.path.join(results, "postgres.jsonl"))
    k = lambda rows, kind, **f: [r for r in rows if r.get("kind") == kind and all(r.get(a) == b for a, b in f.items())]

    batch = k(s, "batch_ingest")
    singles = k(s, "single_posts")
    point32 = k(s, "point_query", connections=32)
    tail = k(s, "tail_pages")
    rss = k(s, "rss")
    pg_copy, pg_ins, pg_ver = k(p, "pg_copy"), k(p, "pg_insert"), k(p, "pg_verify_copy")
    pg_single, pg_p8, pg_p32 = k(p, "pg_singles"), k(p, "pg_point", clients=8), k(p, "pg_point", clients=32)
    disk = {r["part"]: r["bytes"] for r in k(s, "disk")}
    pg_disk = k(p, "pg_disk")

    def rate(rows):
        return med([r["per_second"] for r in rows])

    def p99(rows):
        return med([ms(r["latency_us"]["p99"]) if "latency_us" in r else
                    (ms(r["latency_ms"]["p99"] * 1000) if "latency_ms" in r else ms(r["p99"]))
                    for r in rows])

    def ratio(a, b):
        return f"{a / b:.2f}×" if a == a and b == b and b else "–"

    def f0(x):
        return f"{x:,.0f}" if x == x else "–"

    def f2(x):
        return f"{x:.2f}" if x == x else "–"

    rows = []
    sb, pc, pi, pv = rate(batch), rate(pg_copy), rate(pg_ins), rate(pg_ver)
    ceiling = rate(k(s, "verify_ceiling"))
    rows.append(("verification ceiling: decode + strict verify only, 2 cores (/s)", "report",
                 f0(ceiling), "–", "–"))
    rows.append(("signed batch ingest (assertions/s)", "≥ 0.75 × ceiling",
                 f"{f0(sb)} ({ratio(sb, ceiling)} ceiling)",
                 f"COPY {f0(pc)} · INSERT {f0(pi)} · verify+COPY {f0(pv)}",
                 f"{ratio(sb, pc)} COPY · {ratio(sb, pv)} verify+COPY"))
    b1m = k(s, "batch_ingest_1m")
    if b1m:
        rows.append(("signed batch ingest, 0 → 1M (assertions/s)", "≥ 0.75 × ceiling",
                     f"{f0(rate(b1m))} ({ratio(rate(b1m), ceiling)} ceiling)",
                     f"COPY {f0(pc)} (0 → 1M)", ratio(rate(b1m), pc)))
    # PostgreSQL over its Unix socket and over loopback TCP, StemeDB's transport (decision 0023);
    # result directories from before it have no TCP lines.
    pg_single_tcp, pg_p32_tcp = k(p, "pg_singles_tcp"), k(p, "pg_point_tcp", clients=32)

    def pg_cell(unix, tcp, extra=""):
        cell = f"Unix socket {f0(rate(unix))}, p99 {f2(p99(unix))} ms{extra}"
        return cell + (f" · TCP {f0(rate(tcp))}, p99 {f2(p99(tcp))} ms" if tcp else "")

    def ratios(x, unix, tcp):
        return f"{ratio(x, rate(unix))} Unix" + (f" · {ratio(x, rate(tcp))} TCP" if tcp else "")

    ss = rate(singles)
    rows.append(("single POSTs, 64 conns (/s)", "≥ 1.4 × PostgreSQL, p99 ≤ 25 ms",
                 f"{f0(ss)}, p99 {f2(p99(singles))} ms",
                 pg_cell(pg_single, pg_single_tcp), ratios(ss, pg_single, pg_single_tcp)))
    sp = rate(point32)
    rows.append(("point query at 1M, 32 clients (/s)", "≥ 1.0 × PostgreSQL, p99 ≤ 2 ms",
                 f"{f0(sp)}, p99 {f2(p99(point32))} ms (HTTP over TCP)",
                 pg_cell(pg_p32, pg_p32_tcp, f" ({f0(rate(pg_p8))} with 8 clients)"),
                 ratios(sp, pg_p32, pg_p32_tcp)))
    floor = k(s, "http_floor")
    if floor:
        fl = rate(floor)
        rows.append(("HTTP floor: GET /v1/health, 32 conns, same server and wrk (/s)", "report",
                     f"{f0(fl)}, p99 {f2(p99(floor))} ms; a point query is {ratio(sp, fl)} of it",
                     "–", "floor ÷ point lookup: " + ratios(fl, pg_p32, pg_p32_tcp)))
    point16 = k(s, "point_query", connections=16)
    if point16:
        rows.append(("point query at 1M, 16 conns (/s)", "p99 ≤ 2 ms",
                     f"{f0(rate(point16))}, p99 {f2(p99(point16))} ms", "–", "–"))
    def cpu(rows):
        return (f"{med([r['server_cpu_us'] for r in rows]):.1f} / "
                f"{med([r['client_cpu_us'] for r in rows]):.1f}")

    costs = [(name, rows) for name, rows in (
        ("batch, per assertion", k(s, "ingest_cpu")), ("single POST", k(s, "singles_cpu")),
        ("point query, 32 conns", [r for r in point32 if "server_cpu_us" in r]),
        ("HTTP floor", [r for r in floor if "server_cpu_us" in r])) if rows]
    pg_costs = [(name, rows) for name, rows in (
        ("single INSERT, Unix", pg_single), ("single INSERT, TCP", pg_single_tcp),
        ("point lookup, 32 clients, Unix", pg_p32), ("point lookup, 32 clients, TCP", pg_p32_tcp))
        if rows and all("server_cpu_us" in r for r in rows)]
    if costs:
        rows.append(("CPU per request while measured, server / load generator (µs)", "report",
                     " · ".join(f"{name} {cpu(r)}" for name, r in costs),
                     " · ".join(f"{name} {cpu(r)}" for name, r in pg_costs) or "–", "–"))
    pg_tail = k(p, "pg_tail")
    rows.append(("tail query, 100 rows, p99 (ms)", "≤ 20",
                 f"{f2(p99(tail))} (100 groups = 400 rows a page, 4 walkers)",
                 f"{f2(p99(pg_tail))} (400 rows a page, 4 clients; {f0(rate(pg_tail))} pages/s)"
                 if pg_tail else "–",
                 ratio(p99(pg_tail), p99(tail)) + " (latency, PG ÷ StemeDB)" if pg_tail else "–"))
    mr, mw = k(s, "mixed_reads"), k(s, "mixed_writes")
    if mr and mw:
        ops = med([r["params"]["operations_per_second"] for r in mr])
        rows.append(("mixed, 10% single POSTs, 32 conns, at 1M (ops/s)", "report",
                     f"{f0(ops)}: reads p99 {f2(p99(mr))} ms, writes p99 {f2(p99(mw))} ms",
                     "–", "–"))
    start = k(s, "startup")
    if start:
        rows.append(("cold start at 1M (s)", "≤ 2", f2(med([r["seconds"] for r in start])), "–", "–"))
    replay = k(s, "replay")
    if replay:
        n = med([r["replayed"] or 0 for r in replay])
        rows.append((f"start after kill -9 with a {f0(n)}-record WAL tail (s)", "≤ 1 (100k tail)",
                     f"{f2(med([r['seconds_to_ready'] for r in replay]))} to ready "
                     f"(store open {f0(med([r['store_open_ms'] or float('nan') for r in replay]))} ms)",
                     "–", "–"))
    if disk and pg_disk:
        n = pg_disk[0]["rows"]
        sdb = disk.get("db", 0) / 1_000_000
        rows.append(("disk per assertion (bytes)", "≤ PostgreSQL",
                     f"{disk.get('db', 0) // 1_000_000} store + {disk.get('wal', 0) // 1_000_000} WAL (1M)",
                     f"{pg_disk[0]['bytes'] // n} table + indexes", ratio(sdb, pg_disk[0]['bytes'] / n)))
    if rss:
        rows.append(("server RSS at 1M (MiB)", "≤ 1024", f0(rss[-1]["rss_kib"] / 1024), "–", "–"))
    t = load(os.path.join(results, "10m.jsonl"))
    t_pg = load(os.path.join(results, "10m-postgres.jsonl"))
    windows = k(t, "ingest_window")
    if windows:
        first, last = windows[0], windows[-1]
        total = k(t, "batch_ingest_10m")
        rows.append(("10M ingest: first / last 500k window (assertions/s)", "last ≥ 0.85 × first",
                     f"{f0(first['per_second'])} / {f0(last['per_second'])} "
                     f"({last['per_second'] / first['per_second']:.2f}×); "
                     f"whole run {f0(rate(total))}/s", "–", "–"))
        peak = max([w.get("server_rss_bytes") or 0 for w in windows]
                   + [r["bytes"] for r in k(t, "rss_10m")])
        rows.append(("server RSS during the 10M ingest, peak (MiB)", "≤ 1024", f0(peak / 2**20), "–", "–"))
        d10 = {r["part"]: r["bytes"] for r in k(t, "disk_10m")}
        n10 = (total[0]["assertions"] if total else 10_000_000)
        pgd = k(t_pg, "pg_disk")
        rows.append(("disk per assertion at 10M (bytes)", "≤ PostgreSQL",
                     f"{d10.get('db', 0) // n10} store + {d10.get('wal', 0) // n10} WAL",
                     f"{pgd[0]['bytes'] // pgd[0]['rows']} table + indexes" if pgd else "–",
                     ratio(d10.get('db', 0) / n10, pgd[0]['bytes'] / pgd[0]['rows']) if pgd else "–"))
        s10 = k(t, "startup_10m")
        if s10:
            rows.append(("cold start at 10M (s)", "≤ 2", f2(med([r["seconds"] for r in s10])), "–", "–"))

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        "<!-- bench:begin (written by scripts/bench.sh; edits here are overwritten) -->",
        f"Run {now} on {os.cpu_count()} × {cpu}, {platform.system()} {platform.release()}; "
        f"`./scripts/bench.sh {len(batch) or 3}`; medians of each measurement's runs; raw lines in "
        f"`{os.path.relpath(results)}`.",
        "",
        "| measure | target | StemeDB | PostgreSQL 15 | StemeDB ÷ PostgreSQL |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    lines += [
        "",
        "StemeDB verifies every Ed25519 signature and content address and appends every assertion",
        "to a BLAKE3 Merkle log before it answers; PostgreSQL does neither (verify+COPY adds the",
        "signature check in a PyNaCl loader from 2 processes, still without a Merkle log). Both fsync",
        "before acknowledging (`synchronous_commit=on`, default fsync). The load generators run on the",
        "same 2 cores as the servers. pgbench connects through PostgreSQL's Unix socket, and in the",
        "TCP figures through loopback TCP, the transport `wrk` and `stemedb-bench` use for StemeDB",
        "(decision 0023).",
        "<!-- bench:end -->",
    ]
    block = "\n".join(lines)
    text = open(doc).read()
    if "<!-- bench:begin" in text:
        text = re.sub(r"<!-- bench:begin.*?<!-- bench:end -->", lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## StemeDB and PostgreSQL side by side (issue 8)\n\n" + block + "\n"
    open(doc, "w").write(text)
    print(block)


if __name__ == "__main__":
    main()
