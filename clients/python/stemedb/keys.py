"""Ed25519 agent keys in the PKCS#8 PEM format `stemedb keygen` and
`openssl genpkey -algorithm ed25519` write."""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Union

from nacl.signing import SigningKey

from .errors import KeyError_

# DER of a PKCS#8 OneAsymmetricKey for Ed25519 (RFC 8410), up to the 32-byte seed:
# SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_BEGIN, _END = "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----"


def load_key(path: Union[str, os.PathLike]) -> SigningKey:
    """Reads an Ed25519 private key from a PKCS#8 PEM file."""
    try:
        text = Path(path).read_text("ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyError_(f"cannot read key file {path}: {e}") from e
    return key_from_pem(text)


def key_from_pem(text: str) -> SigningKey:
    """Parses an Ed25519 PKCS#8 PEM private key."""
    start, end = text.find(_BEGIN), text.find(_END)
    if start < 0 or end < start:
        raise KeyError_("not a PEM private key (no BEGIN/END PRIVATE KEY lines)")
    try:
        der = base64.b64decode("".join(text[start + len(_BEGIN):end].split()), validate=True)
    except ValueError as e:
        raise KeyError_(f"the PEM body is not base64: {e}") from e
    # PKCS#8 v1 (version 0) is what `stemedb keygen` and OpenSSL write; v2 (version 1, RFC 5958)
    # may append the public key after the seed. The seed is what signs; the public key is
    # derived from it.
    if (len(der) < 48 or der[0] != 0x30 or der[2:4] != b"\x02\x01" or der[4] not in (0, 1)
            or der[5:16] != _PKCS8_PREFIX[5:16]):
        raise KeyError_("not an Ed25519 PKCS#8 key (expected OID 1.3.101.112)")
    seed = der[16:48]
    return SigningKey(seed)


def key_to_pem(key: SigningKey) -> str:
    """The PKCS#8 PEM text of a key."""
    der = _PKCS8_PREFIX + bytes(key)
    b64 = base64.b64encode(der).decode()
    return f"{_BEGIN}\n{b64}\n{_END}\n"


def generate_key(path: Union[str, os.PathLike, None] = None) -> SigningKey:
    """A new key; written to `path` (mode 0600) when given."""
    key = SigningKey.generate()
    if path is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key_to_pem(key))
    return key


def agent_id(key: SigningKey) -> str:
    """The agent name the server knows: the public key as 64 lowercase hex characters."""
    return key.verify_key.encode().hex()
