"""Proofs from the HTTP API checked by an independent verifier: RFC 9162 inclusion and
consistency verification written here in Python over the `blake3` package, and the C2SP signed
checkpoint checked with PyNaCl (libsodium). Starts the real `stemedb serve` on a temp dir.
"""
import base64
import json
import os
import pathlib
import subprocess
import urllib.error
import urllib.request

import blake3
import pytest
from nacl.signing import SigningKey

from rfc9162 import h_leaf, verify_consistency, verify_inclusion, verify_note

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("STEMEDB_BIN", str(ROOT / "target" / "debug" / "stemedb"))
TYPE = "application/vnd.stemedb.assertion.v1+json"


class Server:
    def __init__(self, tmp):
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp / "data"), "--log-format", "json"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")},
        )
        for line in self.proc.stderr:
            rec = json.loads(line)
            if rec.get("message") == "stemedb listening":
                self.url = "http://" + rec["listen"]
                return
        raise AssertionError("server did not start")

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return r.read().decode()

    def post(self, body: bytes):
        req = urllib.request.Request(self.url + "/v1/assert", data=body,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def close(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.close()


def envelope(sk: SigningKey, n: int) -> dict:
    payload = json.dumps({"v": 1, "subject": f"proofs/item-{n}", "predicate": "p", "object": n,
                          "agent": sk.verify_key.encode().hex(), "ts": 1700000000000 + n},
                         separators=(",", ":")).encode()
    pae = b"DSSEv1 %d %s %d " % (len(TYPE), TYPE.encode(), len(payload)) + payload
    return {"payloadType": TYPE, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": sk.verify_key.encode().hex(),
                            "sig": base64.b64encode(sk.sign(pae).signature).decode()}]}


def test_inclusion_and_consistency_proofs_verify_independently(server):
    sk = SigningKey.generate()
    key = json.loads(server.get("/v1/checkpoint/key"))
    origin0, size0, root0 = verify_note(server.get("/v1/checkpoint"), key)
    assert (size0, root0) == (0, blake3.blake3(b"").digest())
    ids = []
    for start in range(0, 37, 12):
        batch = [envelope(sk, n) for n in range(start, min(start + 12, 37))]
        results = server.post(json.dumps({"assertions": batch}).encode())["results"]
        ids += [r["id"] for r in results]
        assert all(r["status"] == "created" for r in results)
    mid = verify_note(server.get("/v1/checkpoint"), key)
    assert mid[1] == 37
    # A single write right after: the checkpoint fetched after the ack covers it.
    single = server.post(json.dumps(envelope(sk, 99)).encode())
    ids.append(single["id"])
    origin, size, root = verify_note(server.get("/v1/checkpoint"), key)
    assert origin == origin0 and size == 38
    for i, id_hex in enumerate(ids):
        p = json.loads(server.get(f"/v1/proof/inclusion?id={id_hex}&tree_size={size}"))
        assert p["leaf_index"] == i and p["tree_size"] == size and bytes.fromhex(p["root_hash"]) == root
        path = [bytes.fromhex(x) for x in p["audit_path"]]
        assert verify_inclusion(h_leaf(id_hex), i, size, path, root), f"inclusion of leaf {i}"
        assert not verify_inclusion(h_leaf(ids[(i + 1) % len(ids)]), i, size, path, root)
    for old in range(0, size + 1):
        c = json.loads(server.get(f"/v1/proof/consistency?from={old}&to={size}"))
        proof = [bytes.fromhex(x) for x in c["proof"]]
        assert bytes.fromhex(c["to_root"]) == root
        if old == 0:
            continue
        assert verify_consistency(old, size, bytes.fromhex(c["from_root"]), root, proof), f"{old} -> {size}"
        # The size-37 checkpoint signed earlier is a prefix of the current one.
        if old == mid[1]:
            assert bytes.fromhex(c["from_root"]) == mid[2]
            assert verify_consistency(old, size, mid[2], root, proof)
        forged = bytes(32)
        assert not verify_consistency(old, size, forged, root, proof)


def test_a_forged_checkpoint_signature_fails(server):
    key = json.loads(server.get("/v1/checkpoint/key"))
    note = server.get("/v1/checkpoint")
    with pytest.raises(Exception):
        verify_note(note.replace("\n0\n", "\n1\n", 1), key)


def test_unknown_ids_and_sizes_are_problems(server):
    for path, status in [("/v1/proof/inclusion?id=" + "0" * 64, 404),
                         ("/v1/proof/inclusion?id=xyz", 400),
                         ("/v1/proof/consistency?from=5", 400),
                         ("/v1/proof/consistency?from=abc", 400),
                         ("/v1/assertions/" + "0" * 64, 404)]:
        with pytest.raises(urllib.error.HTTPError) as e:
            server.get(path)
        assert e.value.code == status, path
        assert e.value.headers["content-type"] == "application/problem+json"
        assert "code" in json.loads(e.value.read())


def test_query_winners_carry_proofs_that_verify_independently(server):
    sk = SigningKey.generate()
    batch = [envelope(sk, n) for n in range(20)]
    server.post(json.dumps({"assertions": batch}).encode())
    key = json.loads(server.get("/v1/checkpoint/key"))
    answer = json.loads(server.get("/v1/query?subject=proofs&match=prefix&proof=true&limit=7"))
    assert len(answer["results"]) == 7 and answer["next_cursor"]
    origin, size, root = verify_note(answer["checkpoint"], key)
    assert size >= answer["tree_size"] == 20
    for r in answer["results"]:
        p = r["proof"]
        assert p["tree_size"] == size and bytes.fromhex(p["root_hash"]) == root
        path = [bytes.fromhex(x) for x in p["audit_path"]]
        assert verify_inclusion(h_leaf(r["winner"]["id"]), p["leaf_index"], size, path, root)
        assert r["winner"]["object"] == int(r["subject"].rsplit("-", 1)[1])
