"""Statements and DSSE envelopes (docs/spec.md): PAE, Ed25519 signature, BLAKE3 id."""
from __future__ import annotations

import base64
import json
import time
from typing import Any, Optional, Sequence

import blake3
from nacl.signing import SigningKey

from .keys import agent_id

PAYLOAD_TYPE = "application/vnd.stemedb.assertion.v1+json"


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE pre-authentication encoding: the bytes that are signed and hashed into the id."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d " % (len(t), t, len(payload)) + payload


def statement(subject: str, predicate: str, obj: Any, agent: str, *,
              ts: Optional[int] = None, confidence: Optional[float] = None,
              supersedes: Sequence[str] = (), retract: bool = False,
              valid_from: Optional[int] = None, valid_until: Optional[int] = None) -> dict:
    """A statement dict with the optional fields only when they are set."""
    st: dict[str, Any] = {"v": 1, "subject": subject, "predicate": predicate, "object": obj,
                          "agent": agent, "ts": int(time.time() * 1000) if ts is None else ts}
    if confidence is not None:
        st["confidence"] = confidence
    if supersedes:
        st["supersedes"] = list(supersedes)
    if retract:
        st["retract"] = True
    if valid_from is not None:
        st["valid_from"] = valid_from
    if valid_until is not None:
        st["valid_until"] = valid_until
    return st


class SignedEnvelope:
    """A signed envelope: its JSON bytes as sent, and its content address."""

    def __init__(self, body: bytes, assertion_id: str, statement: dict):
        self.body = body
        self.id = assertion_id
        self.statement = statement

    def __repr__(self) -> str:
        return f"SignedEnvelope(id={self.id!r})"


def sign(key: SigningKey, st: dict) -> SignedEnvelope:
    """Signs a statement. `agent` must be this key's (it is filled in when missing)."""
    st = dict(st)
    me = agent_id(key)
    st.setdefault("agent", me)
    if st["agent"] != me:
        raise ValueError(f"statement agent {st['agent']} is not this key ({me})")
    payload = json.dumps(st, separators=(",", ":"), ensure_ascii=False,
                         allow_nan=False).encode()
    signed = pae(payload)
    sig = key.sign(signed).signature
    env = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
           "signatures": [{"keyid": me, "sig": base64.b64encode(sig).decode()}]}
    return SignedEnvelope(json.dumps(env, separators=(",", ":")).encode(),
                          blake3.blake3(signed).hexdigest(), st)


def envelope_id(envelope: dict) -> str:
    """The content address of an envelope (as returned by `GET /v1/assertions/{id}`)."""
    payload = base64.b64decode(envelope["payload"], validate=True)
    return blake3.blake3(pae(payload, envelope.get("payloadType", PAYLOAD_TYPE))).hexdigest()
