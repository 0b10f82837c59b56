"""Writes the `invalid` test vectors of docs/spec.md with PyNaCl (an implementation independent
of the server's). Each vector is correctly signed except for the one defect it names, so a
verifier must reject it with exactly that code. Run: python3 tests/interop/make_invalid_vectors.py
"""
import base64
import json
import pathlib
import re

from nacl.signing import SigningKey

TYPE = "application/vnd.stemedb.assertion.v1+json"
SPEC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "spec.md"
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
OTHER = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")


def pae(payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d " % (len(TYPE), TYPE.encode(), len(payload)) + payload


def envelope(statement: bytes, seed=SEED, keyid=None, sigs=1, b64=base64.b64encode):
    sk = SigningKey(seed)
    agent = sk.verify_key.encode().hex()
    sig = sk.sign(pae(statement)).signature
    one = {"keyid": keyid or agent, "sig": base64.b64encode(sig).decode()}
    return json.dumps(
        {"payloadType": TYPE, "payload": b64(statement).decode(), "signatures": [one] * sigs},
        separators=(",", ":"),
    )


def statement(**over) -> bytes:
    agent = SigningKey(SEED).verify_key.encode().hex()
    st = {"v": 1, "subject": "fleet/eu/server-1/cpu", "predicate": "load", "object": 0.5,
          "agent": agent, "ts": 1700000000000}
    st.update(over)
    return json.dumps(st, separators=(",", ":")).encode()


def main():
    good = envelope(statement())
    env = json.loads(good)
    raw = base64.b64decode(env["payload"]).replace(b"0.5", b"0.6")
    env["payload"] = base64.b64encode(raw).decode()
    tampered = json.dumps(env, separators=(",", ":"))
    other_agent = SigningKey(OTHER).verify_key.encode().hex()
    nested = 1
    for _ in range(33):
        nested = [nested]
    cases = [
        ("payload changed after signing", tampered, "bad_signature"),
        ("signed by another key, keyid names that key", envelope(statement(), seed=OTHER, keyid=other_agent), "key_mismatch"),
        ("statement has a field not in the schema", envelope(statement(colour="red")), "unknown_field"),
        ("subject has an empty segment", envelope(statement(subject="fleet//cpu")), "bad_subject"),
        ("confidence above 1", envelope(statement(confidence=1.5)), "bad_confidence"),
        ("object nested 33 deep", envelope(statement(object=nested)), "too_deep"),
        ("integer beyond 2^53-1", envelope(statement(object=9007199254740993)), "unsafe_integer"),
        ("duplicate key in payload", envelope(statement().replace(b'"v":1,', b'"v":1,"v":1,')), "duplicate_key"),
        ("payload is not base64", good.replace('"payload":"', '"payload":"!'), "bad_base64"),
        ("payload in URL-safe base64", envelope(statement(object="??>>"), b64=base64.urlsafe_b64encode), "bad_base64"),
        ("two signatures", envelope(statement(), sigs=2), "signature_count"),
        ("wrong payload type", good.replace(TYPE, "application/json"), "bad_payload_type"),
    ]
    invalid = [{"why": why, "envelope": e, "code": code} for why, e, code in cases]
    text = SPEC.read_text()
    start = text.index("<!-- test-vectors:begin -->\n```json\n") + len("<!-- test-vectors:begin -->\n```json\n")
    end = text.index("```\n<!-- test-vectors:end -->")
    vectors = json.loads(text[start:end])
    vectors["invalid"] = invalid
    SPEC.write_text(text[:start] + json.dumps(vectors, indent=2, ensure_ascii=False) + "\n" + text[end:])


if __name__ == "__main__":
    main()
