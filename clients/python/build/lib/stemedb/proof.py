"""RFC 9162 Merkle proofs over BLAKE3 and the C2SP signed checkpoint note, checked with
PyNaCl: a client trusts the server's key, not the server's answers."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Sequence

import blake3
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from .errors import VerificationError


def leaf_hash(assertion_id: str) -> bytes:
    """`BLAKE3(0x00 || id)`."""
    return blake3.blake3(b"\x00" + bytes.fromhex(assertion_id)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """`BLAKE3(0x01 || left || right)`."""
    return blake3.blake3(b"\x01" + left + right).digest()


def root_from_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root an inclusion proof implies (RFC 9162 §2.1.3.2); raises if the proof is malformed."""
    if index >= size:
        raise VerificationError(f"leaf index {index} is not below tree size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise VerificationError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is shorter than the tree is deep")
    return r


@dataclass(frozen=True)
class Checkpoint:
    """A verified signed tree head."""
    origin: str
    tree_size: int
    root_hash: bytes
    text: str


def key_id(key_name: str, public_key: bytes) -> bytes:
    """C2SP note key id: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || key)."""
    return hashlib.sha256(key_name.encode() + b"\n\x01" + public_key).digest()[:4]


def verify_checkpoint(text: str, key_name: str, public_key_hex: str,
                      origin: str | None = None) -> Checkpoint:
    """Checks the signed note against the trusted key and returns its tree head."""
    body, sep, sigs = text.partition("\n\n")
    if not sep:
        raise VerificationError("checkpoint has no signature block")
    lines = body.split("\n")
    if len(lines) < 3:
        raise VerificationError("checkpoint body needs origin, size and root lines")
    pub = bytes.fromhex(public_key_hex)
    kid = key_id(key_name, pub)
    signed = (body + "\n").encode()
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            continue
        parts = line[2:].split(" ")
        if len(parts) != 2 or parts[0] != key_name:
            continue
        blob = base64.b64decode(parts[1])
        if len(blob) != 68 or blob[:4] != kid:
            continue
        try:
            VerifyKey(pub).verify(signed, blob[4:])
        except BadSignatureError as e:
            raise VerificationError("checkpoint signature does not verify") from e
        if origin is not None and lines[0] != origin:
            raise VerificationError(f"checkpoint origin {lines[0]!r} is not {origin!r}")
        try:
            size = int(lines[1])
            root = base64.b64decode(lines[2], validate=True)
        except ValueError as e:
            raise VerificationError(f"checkpoint body is malformed: {e}") from e
        return Checkpoint(lines[0], size, root, text)
    raise VerificationError(f"no signature by {key_name} on the checkpoint")


def verify_inclusion(assertion_id: str, leaf_index: int, tree_size: int,
                     audit_path_hex: Sequence[str], checkpoint: Checkpoint) -> None:
    """Raises VerificationError unless the proof puts `assertion_id` at `leaf_index` of the
    tree the checkpoint signs."""
    if tree_size != checkpoint.tree_size:
        raise VerificationError(
            f"proof is for tree size {tree_size}, the checkpoint for {checkpoint.tree_size}")
    root = root_from_inclusion(leaf_hash(assertion_id), leaf_index, tree_size,
                               [bytes.fromhex(h) for h in audit_path_hex])
    if root != checkpoint.root_hash:
        raise VerificationError("inclusion proof does not lead to the checkpoint's root")
