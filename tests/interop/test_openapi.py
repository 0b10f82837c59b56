"""schemathesis (property-based API testing from PyPI) against the OpenAPI document the real
server serves at /v1/openapi.json: no 5xx, every status documented, every body and header as the
schema says, the admin routes included (with the admin token). The store is seeded first (PyNaCl-signed, with a conflict and a correction) so
queries return real results, proofs included.
"""
import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from nacl.signing import SigningKey

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("STEMEDB_BIN", str(ROOT / "target" / "debug" / "stemedb"))
TYPE = "application/vnd.stemedb.assertion.v1+json"
ADMIN_TOKEN = "schemathesis-admin-token"
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])


def schemathesis_cli() -> str:
    """The `st` command of the installed schemathesis; the suite installs it (fail loudly)."""
    beside = pathlib.Path(sys.executable).parent / "st"
    found = str(beside) if beside.is_file() else shutil.which("st")
    assert found, "schemathesis is not installed: pip install -r tests/interop/requirements.txt"
    return found


def envelope(sk: SigningKey, statement: dict) -> bytes:
    payload = json.dumps(statement, separators=(",", ":")).encode()
    pae = b"DSSEv1 %d %s %d " % (len(TYPE), TYPE.encode(), len(payload)) + payload
    return json.dumps({"payloadType": TYPE, "payload": base64.b64encode(payload).decode(),
                       "signatures": [{"sig": base64.b64encode(sk.sign(pae).signature).decode()}]}).encode()


def post(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url + "/v1/assert", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def server(tmp_path):
    log = open(tmp_path / "server.log", "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}
    env["STEMEDB_ADMIN_TOKEN"] = ADMIN_TOKEN
    proc = subprocess.Popen(
        [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), "--log-format", "json",
         "--deny-pattern", "object:quarantine-me"],
        stderr=log, stdout=subprocess.DEVNULL, env=env)
    url = None
    deadline = time.time() + 60
    while url is None and time.time() < deadline:
        for line in (tmp_path / "server.log").read_text().splitlines():
            rec = json.loads(line)
            if rec.get("message") == "stemedb listening":
                url = "http://" + rec["listen"]
        time.sleep(0.05)
    assert url, "server did not start"
    yield url
    proc.kill()
    proc.wait()
    log.close()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, tmp_path):
    agents = [SigningKey(bytes([i]) * 32) for i in range(1, 4)]
    ids = []
    for i, (sk, obj) in enumerate(zip(agents, ["red", "blue", "red"])):
        st = {"v": 1, "subject": "svc/api", "predicate": "status", "object": obj,
              "agent": sk.verify_key.encode().hex(), "ts": 1700000000000 + i, "confidence": 0.5 + i / 10}
        ids.append(post(server, envelope(sk, st))["id"])
    fix = {"v": 1, "subject": "svc/api", "predicate": "status", "object": "green",
           "agent": agents[0].verify_key.encode().hex(), "ts": 1700000000100, "supersedes": [ids[0]]}
    post(server, envelope(agents[0], fix))
    held = {"v": 1, "subject": "svc/api", "predicate": "note", "object": "quarantine-me",
            "agent": agents[1].verify_key.encode().hex(), "ts": 1700000000200}
    assert post(server, envelope(agents[1], held))["status"] == "quarantined"
    out = subprocess.run(
        [schemathesis_cli(), "run", server + "/v1/openapi.json", "--checks", CHECKS,
         "--max-examples", "60", "--seed", "20261123", "--no-color", "--workers", "1",
         # The admin routes are exercised for real, not only their 403.
         "--header", f"Authorization: Bearer {ADMIN_TOKEN}",
         "--report-dir", str(tmp_path / "reports")],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-8000:]
    assert "generated" in report and " passed" in report, report[-3000:]
