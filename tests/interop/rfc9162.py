"""An independent RFC 9162 verifier over BLAKE3, and a C2SP signed-note checker with PyNaCl.
Written from the RFC's text, not from the server's code."""
import base64
import hashlib

import blake3
from nacl.signing import VerifyKey


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


def mth(leaves: list) -> bytes:
    """RFC 9162 MTH over leaf hashes."""
    n = len(leaves)
    if n == 0:
        return blake3.blake3(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return h_node(mth(leaves[:k]), mth(leaves[k:]))
