"""The Python client against a real server (conftest.py starts it)."""
import base64
import json
import os
import pathlib
import stat
import subprocess
import sys

import pytest

import stemedb
from stemedb import (BadRequest, Client, InvalidStatement, NotFound, ProblemError,
                     VerificationError, generate_key, load_key)
from stemedb.proof import Checkpoint

from conftest import BIN

HERE = pathlib.Path(__file__).resolve().parent


def test_key_files_round_trip_and_match_stemedb_keygen(tmp_path):
    path = tmp_path / "mine.pem"
    key = generate_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert bytes(load_key(path)) == bytes(key)
    out = subprocess.run([BIN, "keygen", "--out", str(tmp_path / "k.pem")], capture_output=True,
                         check=True, text=True)
    assert stemedb.agent_id(load_key(tmp_path / "k.pem")) == out.stdout.strip()
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(tmp_path / "o.pem")],
                   check=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(tmp_path / "o.pem"), "-pubout", "-outform",
                          "DER"], check=True, capture_output=True).stdout
    assert stemedb.agent_id(load_key(tmp_path / "o.pem")) == der[-32:].hex()
    # A PKCS#8 v2 key (version 1, the public key appended as [1]) loads to the same key.
    pub = key.verify_key.encode()
    v2 = (bytes.fromhex("3051020101300506032b657004220420") + bytes(key)
          + bytes.fromhex("812100") + pub)
    (tmp_path / "v2.pem").write_text("-----BEGIN PRIVATE KEY-----\n"
                                     + base64.b64encode(v2).decode()
                                     + "\n-----END PRIVATE KEY-----\n")
    assert bytes(load_key(tmp_path / "v2.pem")) == bytes(key)
    x25519 = bytes.fromhex("302e020100300506032b656e04220420") + bytes(32)  # OID 1.3.101.110
    (tmp_path / "x.pem").write_text("-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(x25519).decode()
                                    + "\n-----END PRIVATE KEY-----\n")
    with pytest.raises(stemedb.StemeDBError):
        load_key(tmp_path / "x.pem")
    (tmp_path / "bad.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(stemedb.StemeDBError):
        load_key(tmp_path / "bad.pem")
    with pytest.raises(stemedb.StemeDBError):
        load_key(tmp_path / "missing.pem")


def test_signed_envelope_has_the_id_the_server_computes():
    key = generate_key()
    env = stemedb.sign(key, stemedb.statement("kb/a/b", "p", {"x": [1, "ü"]}, stemedb.agent_id(key),
                                              ts=1_700_000_000_000, confidence=0.5))
    out = subprocess.run([BIN, "check-envelope", "-"], input=env.body, capture_output=True)
    assert out.returncode == 0, out.stderr.decode()
    assert json.loads(out.stdout)["id"] == env.id
    assert stemedb.envelope_id(json.loads(env.body)) == env.id
    with pytest.raises(ValueError):
        stemedb.sign(key, stemedb.statement("kb/a", "p", 1, "00" * 32))


def test_assert_then_duplicate_then_read_back(server):
    db = Client(server, key=generate_key())
    env = db.sign("kb/python/dup", "fact", {"n": 1}, confidence=0.6)
    first = db.assert_(env)
    assert first.status == "created" and first.id == env.id and first.log_index is not None
    again = db.assert_(env)
    assert (again.status, again.id, again.log_index) == ("duplicate", env.id, first.log_index)
    stored = db.assertion(env.id)
    assert stored["log_index"] == first.log_index
    assert base64.b64decode(stored["envelope"]["payload"]) == base64.b64decode(
        json.loads(env.body)["payload"])


def test_batch_returns_one_result_per_item_and_a_bad_one_fails_alone(server):
    db = Client(server, key=generate_key())
    good = [db.sign(f"kb/python/batch/{i}", "fact", i) for i in range(3)]
    tampered = json.loads(good[1].body)
    payload = base64.b64decode(tampered["payload"]).replace(b'"object":1', b'"object":7')
    tampered["payload"] = base64.b64encode(payload).decode()
    bad = stemedb.SignedEnvelope(json.dumps(tampered).encode(), "x", {})
    out = db.assert_batch([good[0], bad, good[2]])
    assert [type(o).__name__ for o in out] == ["Accepted", "InvalidStatement", "Accepted"]
    assert out[0].id == good[0].id and out[2].id == good[2].id and out[0].stored
    assert out[1].code == "bad_signature"


def test_consensus_conflict_and_inclusion_proof(server):
    subject = "kb/services/python-test/owner"
    a, b, c = (Client(server, key=generate_key()) for _ in range(3))
    ida = a.assert_(subject, "team", "payments", confidence=0.9, ts=1_000).id
    a.assert_(b.sign(subject, "team", "payments", confidence=0.7, ts=2_000))
    c.assert_(subject, "team", "growth", confidence=0.95, ts=3_000)
    cons = a.query(subject, lens="consensus")
    assert len(cons.results) == 1
    r = cons.results[0]
    assert (r.subject, r.predicate, r.winner.object) == (subject, "team", "payments")
    assert r.conflict is True and 0 < r.agreement < 1 and len(r.alternatives) == 2
    latest = a.query(subject, lens="latest").results[0]
    assert latest.winner.object == "growth" and latest.winner.agent == stemedb.agent_id(c.key)
    raw = a.query(subject, lens="raw")
    assert sorted(x.winner.object for x in raw.results) == ["growth", "payments", "payments"]
    cp = a.verify_inclusion(ida)
    assert cp.tree_size >= 3 and cp.tree_size <= a.checkpoint().tree_size


def test_proofs_that_do_not_verify_are_refused(server):
    db = Client(server, key=generate_key())
    acc = db.assert_("kb/python/proof", "fact", True)
    cp = db.checkpoint()
    p = db._request("GET", f"/v1/proof/inclusion?id={acc.id}&tree_size={cp.tree_size}")[1]
    stemedb.proof.verify_inclusion(acc.id, p["leaf_index"], p["tree_size"], p["audit_path"], cp)
    forged = Checkpoint(cp.origin, cp.tree_size, bytes(32), cp.text)
    with pytest.raises(VerificationError):
        stemedb.proof.verify_inclusion(acc.id, p["leaf_index"], p["tree_size"], p["audit_path"], forged)
    with pytest.raises(VerificationError):
        stemedb.proof.verify_inclusion("00" * 32, p["leaf_index"], p["tree_size"], p["audit_path"], cp)
    # A checkpoint key the server does not hold: the signed note no longer verifies.
    k = db.checkpoint_key()
    other = stemedb.agent_id(generate_key())
    pinned = Client(server, checkpoint_key=stemedb.CheckpointKey(k.origin, k.key_name, other, k.vkey))
    with pytest.raises(VerificationError):
        pinned.verify_inclusion(acc.id)


def test_problems_become_typed_exceptions(server):
    db = Client(server, key=generate_key())
    with pytest.raises(InvalidStatement) as e:
        db.assert_("no//empty/segments", "fact", 1)
    assert e.value.status == 422 and e.value.code and e.value.detail
    with pytest.raises(BadRequest) as e:
        db.query("kb/x", lens="no-such-lens")
    assert e.value.status == 400
    with pytest.raises(NotFound):
        db.assertion("ab" * 32)
    assert isinstance(e.value, ProblemError)
    with pytest.raises(stemedb.TransportError):
        Client("http://127.0.0.1:9", timeout=2).query("kb/x")


def test_the_example_runs(server):
    out = subprocess.run([sys.executable, str(HERE.parent / "examples" / "agent_memory.py"), server],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
    assert out.returncode == 0, out.stderr
    assert "consensus: 'payments-platform'" in out.stdout and "verified in the log" in out.stdout
