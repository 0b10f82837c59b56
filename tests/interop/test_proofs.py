"""Proofs from the HTTP API checked by an independent verifier: RFC 9162 inclusion and
consistency verification written here in Python over the `blake3` package, and the C2SP signed
checkpoint checked with PyNaCl (libsodium). Starts the real `stemedb serve` on a temp dir.
"""
import base64
import hashlib
import json
import os
import pathlib
import subprocess
import urllib.error
import urllib.request

import blake3
import pytest
from nacl.signing import SigningKey, VerifyKey

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("STEMEDB_BIN", str(ROOT / "target" / "debug" / "stemedb"))
TYPE = "application/vnd.stemedb.assertion.v1+json"


def h_leaf(id_hex: str) -> bytes:
    return blake3.blake3(b"\x00" + bytes.fromhex(id_hex)).digest()


def h_node(left: bytes, right: bytes) -> bytes:
    return blake3.blake3(b"\x01" + left + right).digest()


def verify_inclusion(leaf: bytes, index: int, size: int, path: list, root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = h_node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = h_node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes, proof: list) -> bool:
    """RFC 9162 section 2.1.4.2."""
    if first == second:
        return not proof and first_hash == second_hash
    if first == 0 or first > second or not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = h_node(c, fr)
            sr = h_node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = h_node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


def verify_note(text: str, key: dict) -> tuple:
    """Checks the C2SP signed note with PyNaCl; returns (origin, size, root)."""
    body, _, sigs = text.partition("\n\n")
    body += "\n"
    origin, size, root_b64 = body.splitlines()
    pub = bytes.fromhex(key["public_key"])
    name = key["key_name"]
    key_id = hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4]
    name_in_vkey, id_hex, typed = key["vkey"].split("+", 2)  # key data is base64 and may hold "+"
    assert name_in_vkey == name and bytes.fromhex(id_hex) == key_id
    assert base64.b64decode(typed) == b"\x01" + pub
    for line in sigs.splitlines():
        assert line.startswith("\u2014 "), line
        line_name, blob_b64 = line[2:].split(" ")
        blob = base64.b64decode(blob_b64)
        if line_name == name and blob[:4] == key_id:
            VerifyKey(pub).verify(body.encode(), blob[4:])  # raises if the signature is bad
            return origin, int(size), base64.b64decode(root_b64)
    raise AssertionError("no signature line by the server key")


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
