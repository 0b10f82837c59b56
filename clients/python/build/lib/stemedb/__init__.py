"""StemeDB client: sign assertions with an agent's Ed25519 key, post them, query them through
lenses, and verify Merkle inclusion against the server's signed checkpoint.

    from stemedb import Client, load_key
    db = Client("http://127.0.0.1:18180", key=load_key("agent.pem"))
    db.assert_("fleet/eu/server-1/cpu", "load.p99", 0.93, confidence=0.8)
    answer = db.query("fleet/eu/server-1/cpu", lens="consensus")
    db.verify_inclusion(answer.results[0].winner.id)
"""
from .client import Accepted, Answer, CheckpointKey, Client, Result, Winner
from .envelope import PAYLOAD_TYPE, SignedEnvelope, envelope_id, pae, sign, statement
from .errors import (BadRequest, Conflict, InvalidStatement, NotFound, PayloadTooLarge,
                     ProblemError, RateLimited, StemeDBError, TransportError, Unauthorized,
                     Unavailable, UnsupportedMediaType, VerificationError)
from .keys import agent_id, generate_key, key_from_pem, key_to_pem, load_key
from .proof import Checkpoint, verify_checkpoint

__all__ = [
    "Accepted", "Answer", "BadRequest", "Checkpoint", "CheckpointKey", "Client", "Conflict",
    "InvalidStatement", "NotFound", "PAYLOAD_TYPE", "PayloadTooLarge", "ProblemError",
    "RateLimited", "Result", "SignedEnvelope", "StemeDBError", "TransportError", "Unauthorized",
    "Unavailable", "UnsupportedMediaType", "VerificationError", "Winner", "agent_id",
    "envelope_id", "generate_key", "key_from_pem", "key_to_pem", "load_key", "pae", "sign",
    "statement", "verify_checkpoint",
]
