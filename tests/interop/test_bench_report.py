"""scripts/bench_report.py: the side-by-side table it writes into docs/performance.md.

The benchmark itself is too slow for the suite, so these feed it result lines of the shape the
bench scripts print and check the figures and ratios it derives (decision 0023: PostgreSQL over
its Unix socket and over loopback TCP, the HTTP floor, the CPU per request on both sides).
"""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
REPORT = ROOT / "scripts" / "bench_report.py"

STEMEDB = [
    {"kind": "verify_ceiling", "per_second": 50000},
    {"kind": "batch_ingest", "per_second": 37500, "latency_us": {"p99": 200000}},
    {"kind": "single_posts", "per_second": 14000, "latency_us": {"p99": 9000}},
    {"kind": "singles_cpu", "run": 1, "server_cpu_us": 100.0, "client_cpu_us": 17.0},
    {"kind": "point_query", "connections": 32, "per_second": 30000, "p99": "3.10ms",
     "server_cpu_us": 44.0, "client_cpu_us": 17.5},
    {"kind": "http_floor", "path": "/v1/health", "connections": 32, "run": 1,
     "per_second": 75000, "p99": "850.00us", "server_cpu_us": 14.0, "client_cpu_us": 10.0},
    {"kind": "tail_pages", "latency_us": {"p99": 5000}},
]


def pg(kind, clients, per_second, p99, server, client):
    """A pgbench line as `bench-postgres.sh` prints it."""
    return {"kind": kind, "clients": clients, "per_second": per_second,
            "latency_ms": {"p50": p99 / 4, "p99": p99, "p999": p99 * 3, "max": p99 * 6},
            "server_cpu_us": server, "client_cpu_us": client}


POSTGRES = [
    {"kind": "pg_copy", "per_second": 50000},
    pg("pg_singles", 64, 10000, 16.0, 160.0, 15.0),
    pg("pg_singles_tcp", 64, 8000, 19.0, 180.0, 20.0),
    pg("pg_point", 32, 50000, 1.9, 31.0, 8.5),
    pg("pg_point_tcp", 32, 40000, 2.5, 36.0, 11.0),
]


def report(tmp_path, stemedb, postgres):
    results = tmp_path / "results"
    results.mkdir()
    for name, rows in (("stemedb.jsonl", stemedb), ("postgres.jsonl", postgres)):
        (results / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nbefore\n\n<!-- bench:begin -->\nold table\n<!-- bench:end -->\n\nafter\n")
    subprocess.run([sys.executable, str(REPORT), str(results), str(doc)], check=True,
                   capture_output=True, text=True)
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Performance\n\nbefore\n")
    assert text.rstrip().endswith("after")
    return {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
            if line.startswith("| ")}


def test_both_transports_the_floor_and_the_cpu_are_reported(tmp_path):
    rows = report(tmp_path, STEMEDB, POSTGRES)
    single = rows["single POSTs, 64 conns (/s)"]
    assert "Unix socket 10,000, p99 16.00 ms · TCP 8,000, p99 19.00 ms" in single
    assert "1.40× Unix · 1.75× TCP" in single
    point = rows["point query at 1M, 32 clients (/s)"]
    assert "Unix socket 50,000, p99 1.90 ms" in point and "TCP 40,000, p99 2.50 ms" in point
    assert "0.60× Unix · 0.75× TCP" in point
    floor = rows["HTTP floor: GET /v1/health, 32 conns, same server and wrk (/s)"]
    assert "75,000, p99 0.85 ms; a point query is 0.40× of it" in floor
    assert "1.50× Unix · 1.88× TCP" in floor
    cpu = rows["CPU per request while measured, server / load generator (µs)"]
    assert "point query, 32 conns 44.0 / 17.5" in cpu and "HTTP floor 14.0 / 10.0" in cpu
    assert "point lookup, 32 clients, TCP 36.0 / 11.0" in cpu
    assert "single INSERT, Unix 160.0 / 15.0" in cpu


def test_results_without_the_tcp_lines_keep_the_unix_ratio_alone(tmp_path):
    # Result directories from before decision 0023 have no TCP or floor lines.
    old_pg = [r for r in POSTGRES if not r["kind"].endswith("_tcp")]
    old_pg = [{k: v for k, v in r.items() if not k.endswith("_cpu_us")} for r in old_pg]
    rows = report(tmp_path, [r for r in STEMEDB if r["kind"] != "http_floor"], old_pg)
    point = rows["point query at 1M, 32 clients (/s)"]
    assert point.rstrip().endswith("| 0.60× Unix |")
    assert "TCP" not in point.split(" | ")[3]
    assert not any(k.startswith("HTTP floor") for k in rows)
    cpu = rows["CPU per request while measured, server / load generator (µs)"]
    assert cpu.split(" | ")[3] == "–"
