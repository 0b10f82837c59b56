#!/usr/bin/env python3
"""Turns a `stemedb-bench gen` file (one signed DSSE envelope per line) into PostgreSQL load
files for scripts/bench-postgres.sh (not timed).

Each row is what StemeDB keeps about an assertion: id (BLAKE3 of the DSSE PAE), reversed
subject, predicate, agent key, ts, confidence, and the envelope bytes as received.

  pg_rows.py copy   DATASET PARTS OUT_PREFIX   COPY ... FROM STDIN blocks of 1,000 rows
  pg_rows.py insert DATASET PARTS OUT_PREFIX   multi-row INSERTs of 1,000 rows
  pg_rows.py verify-copy DATASET PART PARTS    verify each signature (PyNaCl), then print COPY
                                               blocks to stdout (the "fair" loader)
"""
import base64
import json
import sys

import blake3

BATCH = 1000
COLUMNS = "id, subject_rev, predicate, agent, ts, confidence, envelope"


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def row(line: str):
    env = json.loads(line)
    payload = base64.b64decode(env["payload"])
    st = json.loads(payload)
    m = pae(env["payloadType"], payload)
    rid = blake3.blake3(m).digest()
    rev = "/".join(reversed(st["subject"].split("/")))
    raw = line.rstrip("\n").encode()
    return env, m, (rid.hex(), rev, st["predicate"], st["agent"], st["ts"],
                    st.get("confidence", 1.0), raw.hex())


def csv_line(r) -> str:
    rid, rev, pred, agent, ts, conf, raw = r
    return f"\\x{rid},{rev},{pred},\\x{agent},{ts},{conf},\\x{raw}\n"


def sql_values(r) -> str:
    rid, rev, pred, agent, ts, conf, raw = r
    return f"('\\x{rid}','{rev}','{pred}','\\x{agent}',{ts},{conf},'\\x{raw}')"


def lines(path, part=None, parts=None):
    with open(path) as f:
        for i, line in enumerate(f):
            if part is None or i % parts == part:
                yield line


def write_parts(kind, path, parts, prefix):
    outs = [open(f"{prefix}.{p}.sql", "w") for p in range(parts)]
    batches = [[] for _ in range(parts)]

    def flush(p):
        b = batches[p]
        if not b:
            return
        if kind == "copy":
            outs[p].write(f"COPY assertions ({COLUMNS}) FROM STDIN WITH (FORMAT csv);\n")
            outs[p].writelines(csv_line(r) for r in b)
            outs[p].write("\\.\n")
        else:
            outs[p].write(f"INSERT INTO assertions ({COLUMNS}) VALUES\n")
            outs[p].write(",\n".join(sql_values(r) for r in b))
            outs[p].write(";\n")
        b.clear()

    for i, line in enumerate(lines(path)):
        p = i % parts
        batches[p].append(row(line)[2])
        if len(batches[p]) >= BATCH:
            flush(p)
    for p in range(parts):
        flush(p)
        outs[p].close()


def verify_copy(path, part, parts):
    from nacl.signing import VerifyKey
    keys = {}
    out = sys.stdout
    batch = []

    def flush():
        if batch:
            out.write(f"COPY assertions ({COLUMNS}) FROM STDIN WITH (FORMAT csv);\n")
            out.writelines(batch)
            out.write("\\.\n")
            batch.clear()

    for line in lines(path, part, parts):
        env, m, r = row(line)
        agent = r[3]
        key = keys.get(agent) or keys.setdefault(agent, VerifyKey(bytes.fromhex(agent)))
        key.verify(m, base64.b64decode(env["signatures"][0]["sig"]))  # raises if bad
        batch.append(csv_line(r))
        if len(batch) >= BATCH:
            flush()
    flush()


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind in ("copy", "insert"):
        write_parts(kind, sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif kind == "verify-copy":
        verify_copy(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(f"unknown kind {kind}")
