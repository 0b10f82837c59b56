"""Interop with an independent Ed25519 implementation (PyNaCl, i.e. libsodium) and an
independent BLAKE3 (the `blake3` package), against the real `stemedb` binary.

Run from the repository root after `cargo build`: `python3 -m pytest tests/interop`.
The binary is taken from $STEMEDB_BIN, or target/debug/stemedb.
"""
import base64
import json
import os
import pathlib
import re
import subprocess

import blake3
import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("STEMEDB_BIN", str(ROOT / "target" / "debug" / "stemedb"))
TYPE = "application/vnd.stemedb.assertion.v1+json"


def pae(payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d " % (len(TYPE), TYPE.encode(), len(payload)) + payload


def stemedb(*args, stdin=None, cwd=None):
    return subprocess.run([BIN, *args], input=stdin, capture_output=True, cwd=cwd, timeout=60)


def pynacl_envelope(sk: SigningKey, statement: dict) -> tuple[bytes, str]:
    payload = json.dumps(statement, separators=(",", ":")).encode()
    sig = sk.sign(pae(payload)).signature
    env = {
        "payloadType": TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": sk.verify_key.encode().hex(), "sig": base64.b64encode(sig).decode()}],
    }
    return json.dumps(env).encode(), blake3.blake3(pae(payload)).hexdigest()


def test_binary_exists():
    assert pathlib.Path(BIN).is_file(), f"build the binary first: {BIN} is missing"


def test_pynacl_signed_statement_passes_check_envelope_with_the_same_id():
    sk = SigningKey.generate()
    agent = sk.verify_key.encode().hex()
    statement = {
        "v": 1, "subject": "fleet/eu/server-1/cpu", "predicate": "load.p99",
        "object": {"value": 0.93, "tags": ["a", "ü", None]}, "agent": agent,
        "ts": 1700000000000, "confidence": 0.8,
    }
    envelope, expected_id = pynacl_envelope(sk, statement)
    out = stemedb("check-envelope", "-", stdin=envelope)
    assert out.returncode == 0, out.stderr.decode()
    result = json.loads(out.stdout)
    assert result == {**result, "valid": True, "id": expected_id, "agent": agent}


def test_pynacl_tampered_and_wrong_key_are_rejected():
    sk, other = SigningKey.generate(), SigningKey.generate()
    statement = {"v": 1, "subject": "a/b", "predicate": "p", "object": 1,
                 "agent": sk.verify_key.encode().hex(), "ts": 1}
    envelope, _ = pynacl_envelope(sk, statement)
    env = json.loads(envelope)
    tampered_payload = base64.b64decode(env["payload"]).replace(b'"object":1', b'"object":2')
    env["payload"] = base64.b64encode(tampered_payload).decode()
    out = stemedb("check-envelope", "-", stdin=json.dumps(env).encode())
    assert out.returncode == 1
    assert json.loads(out.stdout)["code"] == "bad_signature"
    # Signed by another key while the statement names sk's key.
    payload = json.dumps(statement, separators=(",", ":")).encode()
    env = json.loads(envelope)
    env["signatures"][0]["sig"] = base64.b64encode(other.sign(pae(payload)).signature).decode()
    out = stemedb("check-envelope", "-", stdin=json.dumps(env).encode())
    assert out.returncode == 1
    assert json.loads(out.stdout)["code"] == "bad_signature"


def test_stemedb_sign_with_an_openssl_key_verifies_in_pynacl(tmp_path):
    key = tmp_path / "openssl.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    openssl_public = der[-32:].hex()
    statement = json.dumps({"subject": "svc/api/billing/latency", "predicate": "p99_ms",
                            "object": 412, "confidence": 0.6}).encode()
    out = stemedb("sign", "--key", str(key), "-", stdin=statement)
    assert out.returncode == 0, out.stderr.decode()
    env = json.loads(out.stdout)
    assert env["payloadType"] == TYPE
    payload = base64.b64decode(env["payload"], validate=True)
    st = json.loads(payload)
    assert st["agent"] == openssl_public and isinstance(st["ts"], int) and st["v"] == 1
    assert env["signatures"][0]["keyid"] == openssl_public
    sig = base64.b64decode(env["signatures"][0]["sig"], validate=True)
    VerifyKey(bytes.fromhex(openssl_public)).verify(pae(payload), sig)  # raises if invalid
    with pytest.raises(BadSignatureError):
        VerifyKey(bytes.fromhex(openssl_public)).verify(pae(payload + b" "), sig)
    out = stemedb("check-envelope", "-", stdin=json.dumps(env).encode())
    assert json.loads(out.stdout)["id"] == blake3.blake3(pae(payload)).hexdigest()


def test_keygen_writes_a_key_openssl_reads_with_the_printed_public_key(tmp_path):
    out = stemedb("keygen", "--out", str(tmp_path / "k.pem"))
    assert out.returncode == 0, out.stderr.decode()
    printed = out.stdout.decode().strip()
    der = subprocess.run(["openssl", "pkey", "-in", str(tmp_path / "k.pem"), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    assert der[-32:].hex() == printed
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600


def spec_vectors():
    text = (ROOT / "docs" / "spec.md").read_text()
    block = re.search(r"<!-- test-vectors:begin -->\n```json\n(.*?)```\n<!-- test-vectors:end -->", text, re.S)
    assert block, "docs/spec.md has no test-vectors block"
    return json.loads(block.group(1))


def test_spec_valid_vectors_hold_in_pynacl_and_blake3():
    vectors = spec_vectors()["valid"]
    assert len(vectors) >= 3
    for v in vectors:
        sk = SigningKey(bytes.fromhex(v["seed"]))
        assert sk.verify_key.encode().hex() == v["public_key"]
        statement = v["statement"].encode()
        assert pae(statement) == v["pae"].encode()
        assert sk.sign(pae(statement)).signature.hex() == v["signature"]
        assert blake3.blake3(pae(statement)).hexdigest() == v["id"]
        env = json.loads(v["envelope"])
        assert base64.b64decode(env["payload"], validate=True) == statement
        assert base64.b64decode(env["signatures"][0]["sig"]).hex() == v["signature"]
        out = stemedb("check-envelope", "-", stdin=v["envelope"].encode())
        assert json.loads(out.stdout)["id"] == v["id"]


def test_spec_invalid_vectors_are_rejected_by_the_binary_with_their_codes():
    for v in spec_vectors()["invalid"]:
        out = stemedb("check-envelope", "-", stdin=v["envelope"].encode())
        assert out.returncode == 1, v["why"]
        assert json.loads(out.stdout)["code"] == v["code"], v["why"]


def test_mixed_order_nonce_is_rejected_by_libsodium_and_stemedb_alike():
    """A signer adds a small-order point to its nonce R. libsodium (strict) rejects the
    signature; StemeDB must too (docs/decisions/0001-strict-batch-verification.md)."""
    import hashlib
    from nacl import bindings as b

    order8 = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
    seed = bytes(range(32))
    h = hashlib.sha512(seed).digest()
    a = bytearray(h[:32])
    a[0] &= 248
    a[31] &= 127
    a[31] |= 64
    a = b.crypto_core_ed25519_scalar_reduce(bytes(a) + bytes(32))
    big_a = b.crypto_scalarmult_ed25519_base_noclamp(a)
    assert big_a == SigningKey(seed).verify_key.encode()
    agent = big_a.hex()
    for attempt in range(8):
        payload = json.dumps({"v": 1, "subject": "a/b", "predicate": "p", "object": attempt,
                              "agent": agent, "ts": 1}, separators=(",", ":")).encode()
        msg = pae(payload)
        r = b.crypto_core_ed25519_scalar_reduce(hashlib.sha512(b"nonce%d" % attempt).digest())
        big_r = b.crypto_core_ed25519_add(b.crypto_scalarmult_ed25519_base_noclamp(r), order8)
        k = b.crypto_core_ed25519_scalar_reduce(hashlib.sha512(big_r + big_a + msg).digest())
        s = b.crypto_core_ed25519_scalar_add(r, b.crypto_core_ed25519_scalar_mul(k, a))
        sig = big_r + s
        with pytest.raises(BadSignatureError):
            VerifyKey(big_a).verify(msg, sig)
        env = {"payloadType": TYPE, "payload": base64.b64encode(payload).decode(),
               "signatures": [{"keyid": agent, "sig": base64.b64encode(sig).decode()}]}
        out = stemedb("check-envelope", "-", stdin=json.dumps(env).encode())
        assert out.returncode == 1
        assert json.loads(out.stdout)["code"] == "bad_signature"
        # Control: the same construction without the torsion point verifies in both.
        honest_r = b.crypto_scalarmult_ed25519_base_noclamp(r)
        k = b.crypto_core_ed25519_scalar_reduce(hashlib.sha512(honest_r + big_a + msg).digest())
        honest = honest_r + b.crypto_core_ed25519_scalar_add(r, b.crypto_core_ed25519_scalar_mul(k, a))
        VerifyKey(big_a).verify(msg, honest)
        env["signatures"][0]["sig"] = base64.b64encode(honest).decode()
        out = stemedb("check-envelope", "-", stdin=json.dumps(env).encode())
        assert out.returncode == 0, out.stdout


def test_spec_merkle_vectors_hold_independently():
    from rfc9162 import h_leaf, mth, verify_consistency, verify_inclusion, verify_note

    text = (ROOT / "docs" / "spec.md").read_text()
    block = re.search(r"<!-- merkle-vectors:begin -->\n```json\n(.*?)```\n<!-- merkle-vectors:end -->", text, re.S)
    assert block, "docs/spec.md has no merkle-vectors block"
    m = json.loads(block.group(1))
    ids = [v["id"] for v in spec_vectors()["valid"]]
    assert [leaf["id"] for leaf in m["leaves"]] == ids
    leaves = [h_leaf(i) for i in ids]
    assert [bytes.fromhex(leaf["leaf_hash"]) for leaf in m["leaves"]] == leaves
    roots = {}
    for tree in m["trees"]:
        n = tree["size"]
        root = bytes.fromhex(tree["root"])
        assert root == mth(leaves[:n]), f"root of size {n}"
        roots[n] = root
        for inc in tree.get("inclusion", []):
            path = [bytes.fromhex(x) for x in inc["audit_path"]]
            assert verify_inclusion(leaves[inc["leaf_index"]], inc["leaf_index"], n, path, root)
        for con in tree.get("consistency", []):
            proof = [bytes.fromhex(x) for x in con["proof"]]
            assert verify_consistency(con["from"], n, roots[con["from"]], root, proof)
    cp = m["checkpoint"]
    sk = SigningKey(bytes.fromhex(cp["key_seed"]))
    assert sk.verify_key.encode().hex() == cp["public_key"]
    key = {"public_key": cp["public_key"], "key_name": cp["key_name"], "vkey": cp["vkey"]}
    origin, size, root = verify_note(cp["note"], key)
    assert (origin, size, root) == (cp["key_name"], len(ids), roots[len(ids)])
