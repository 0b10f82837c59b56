"""HTTP client for a StemeDB server (standard library http.client, one keep-alive connection
per Client; not thread-safe: give each thread its own Client)."""
from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, Union

from nacl.signing import SigningKey

from .envelope import SignedEnvelope, sign, statement
from .errors import ProblemError, TransportError, VerificationError, problem_error
from .keys import agent_id
from .proof import Checkpoint, verify_checkpoint, verify_inclusion

DEFAULT_SERVER = "http://127.0.0.1:18180"


@dataclass(frozen=True)
class Accepted:
    """What became of one posted envelope: `created`, `duplicate` or `quarantined`."""
    id: str
    status: str
    log_index: Optional[int] = None

    @property
    def stored(self) -> bool:
        return self.status in ("created", "duplicate")


@dataclass(frozen=True)
class Winner:
    id: str
    object: Any
    agent: str
    ts: int
    confidence: float
    # The validity interval [valid_from, valid_until) in Unix ms; None is an open bound.
    valid_from: Optional[int] = None
    valid_until: Optional[int] = None
    log_index: Optional[int] = None


@dataclass(frozen=True)
class Result:
    """One (subject, predicate) group resolved by a lens."""
    subject: str
    predicate: str
    winner: Winner
    conflict: bool
    agreement: float
    alternatives: list = field(default_factory=list)
    proof: Optional[dict] = None
    # How many other live assertions there are in all; `alternatives` lists the newest 32.
    alternatives_total: int = 0


@dataclass(frozen=True)
class Answer:
    tree_size: int
    results: list
    next_cursor: Optional[str]


@dataclass(frozen=True)
class CheckpointKey:
    origin: str
    key_name: str
    public_key: str
    vkey: str


def _result(r: dict) -> Result:
    w = r["winner"]
    return Result(r["subject"], r["predicate"],
                  Winner(w["id"], w.get("object"), w["agent"], w["ts"], w.get("confidence", 1.0),
                         w.get("valid_from"), w.get("valid_until"), w.get("log_index")),
                  bool(r.get("conflict", False)), float(r.get("agreement", 1.0)),
                  list(r.get("alternatives", [])), r.get("proof"),
                  int(r.get("alternatives_total", len(r.get("alternatives", [])))))


class Client:
    """A client for one server. `key` (a PyNaCl SigningKey, e.g. from `load_key`) signs what
    `assert_` and `assert_batch` post; `checkpoint_key` pins the server's checkpoint key for
    proof verification (fetched on first use otherwise)."""

    def __init__(self, server: str = DEFAULT_SERVER, key: Optional[SigningKey] = None,
                 timeout: float = 30.0, checkpoint_key: Optional[CheckpointKey] = None):
        u = urllib.parse.urlsplit(server)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"server must be an http(s) URL, not {server!r}")
        self._scheme, self._host = u.scheme, u.hostname
        self._port = u.port or (443 if u.scheme == "https" else 80)
        self._base = u.path.rstrip("/")
        self._timeout = timeout
        self._conn: Optional[http.client.HTTPConnection] = None
        self.key = key
        self._checkpoint_key = checkpoint_key

    # -- transport ---------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, body: Optional[bytes] = None,
                 headers: Optional[dict] = None) -> tuple:
        hdrs = {"Accept": "application/json"}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        # One retry when a kept-alive connection was closed under us: every call here is
        # idempotent (a resubmitted envelope is a duplicate of itself; the rest are reads).
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self._base + path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if attempt == 1:
                    raise TransportError(f"{method} {path}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise TransportError(f"{method} {path}: {e}") from e
        ctype = resp.getheader("Content-Type", "")
        if resp.status >= 400:
            try:
                problem = json.loads(data)
            except ValueError:
                problem = data.decode("utf-8", "replace")
            raise problem_error(resp.status, problem, resp.getheader("Retry-After"))
        if "json" in ctype:
            try:
                return resp.status, json.loads(data)
            except ValueError as e:
                raise TransportError(f"{method} {path}: the answer is not JSON: {e}") from e
        return resp.status, data.decode("utf-8", "replace")

    # -- writes ------------------------------------------------------------------------------
    def sign(self, subject: str, predicate: str, obj: Any, **kw) -> SignedEnvelope:
        """Signs a statement with this client's key (see `envelope.statement` for `kw`)."""
        if self.key is None:
            raise ValueError("this Client has no key: Client(server, key=load_key(path))")
        return sign(self.key, statement(subject, predicate, obj, agent_id(self.key), **kw))

    def assert_(self, subject_or_envelope: Union[str, SignedEnvelope], predicate: str = "",
                obj: Any = None, **kw) -> Accepted:
        """Records one assertion: either a `SignedEnvelope`, or subject, predicate, object (and
        ts, confidence, supersedes, retract, valid_from, valid_until) signed with the key."""
        env = subject_or_envelope if isinstance(subject_or_envelope, SignedEnvelope) \
            else self.sign(subject_or_envelope, predicate, obj, **kw)
        _, a = self._request("POST", "/v1/assert", env.body)
        return Accepted(a["id"], a["status"], a.get("log_index"))

    def assert_batch(self, envelopes: Iterable[SignedEnvelope]) -> list:
        """Posts up to 1,000 envelopes in one request. Returns, in order, an `Accepted` for each
        stored or quarantined one and a `ProblemError` for each refused one (a bad item does not
        fail the others)."""
        envs = list(envelopes)
        body = b'{"assertions":[' + b",".join(e.body for e in envs) + b"]}"
        _, a = self._request("POST", "/v1/assert", body)
        out: list = []
        for item in a["results"]:
            if "error" in item:
                out.append(problem_error(int(item["error"].get("status", 400)), item["error"]))
            else:
                out.append(Accepted(item["id"], item["status"], item.get("log_index")))
        return out

    # -- reads -------------------------------------------------------------------------------
    def query(self, subject: Optional[str] = None, *, match: str = "exact", lens: str = "latest",
              predicate: Optional[str] = None, agent: Optional[str] = None,
              as_of: Optional[int] = None, since: Optional[int] = None,
              until: Optional[int] = None, include_superseded: bool = False,
              limit: Optional[int] = None, cursor: Optional[str] = None,
              proof: bool = False, valid_at: Optional[int] = None,
              current: bool = False) -> Answer:
        """`POST /v1/query`: groups resolved by `lens` (latest, trusted, consensus, confidence,
        raw). `valid_at` (Unix ms) keeps only assertions whose validity interval contains it;
        `current=True` means valid_at = now; with `as_of` the question is bitemporal."""
        q: dict[str, Any] = {"lens": lens}
        if current:
            q["current"] = True
        for k, v in (("subject", subject), ("predicate", predicate), ("agent", agent),
                     ("as_of", as_of), ("since", since), ("until", until), ("limit", limit),
                     ("cursor", cursor), ("valid_at", valid_at)):
            if v is not None:
                q[k] = v
        if subject is not None:
            q["match"] = match
        if include_superseded:
            q["include_superseded"] = True
        if proof:
            q["proof"] = True
        _, a = self._request("POST", "/v1/query", json.dumps(q).encode())
        return Answer(a["tree_size"], [_result(r) for r in a["results"]], a.get("next_cursor"))

    def history(self, subject: str, predicate: str, *, as_of: Optional[int] = None,
                after: Optional[int] = None, limit: Optional[int] = None) -> dict:
        """`GET /v1/history`: every assertion of one (subject, predicate) group in log order,
        each with `status` (live, superseded, retracted, retraction) and `superseded_by`."""
        params = [("subject", subject), ("predicate", predicate)]
        params += [(k, str(v)) for k, v in (("as_of", as_of), ("after", after), ("limit", limit))
                   if v is not None]
        return self._request("GET", "/v1/history?" + urllib.parse.urlencode(params))[1]

    def assertion(self, assertion_id: str) -> dict:
        """`GET /v1/assertions/{id}`: id, log index, status and the envelope as received."""
        return self._request("GET", f"/v1/assertions/{assertion_id}")[1]

    def checkpoint_key(self) -> CheckpointKey:
        """The server's checkpoint key (pin it: pass it to later Clients)."""
        if self._checkpoint_key is None:
            k = self._request("GET", "/v1/checkpoint/key")[1]
            self._checkpoint_key = CheckpointKey(k["origin"], k["key_name"], k["public_key"], k["vkey"])
        return self._checkpoint_key

    def checkpoint(self) -> Checkpoint:
        """The current signed checkpoint, verified against the (pinned) checkpoint key."""
        key = self.checkpoint_key()
        text = self._request("GET", "/v1/checkpoint", headers={"Accept": "text/plain"})[1]
        return verify_checkpoint(text, key.key_name, key.public_key, key.origin)

    def verify_inclusion(self, assertion_id: str) -> Checkpoint:
        """Proves that `assertion_id` is in the log: fetches a signed checkpoint and an inclusion
        proof for its tree size and checks both locally. Returns the checkpoint; raises
        VerificationError if anything fails to verify."""
        cp = self.checkpoint()
        p = self._request("GET", f"/v1/proof/inclusion?id={assertion_id}&tree_size={cp.tree_size}")[1]
        if p.get("id") != assertion_id:
            raise VerificationError(f"proof is for {p.get('id')}, not {assertion_id}")
        verify_inclusion(assertion_id, int(p["leaf_index"]), int(p["tree_size"]),
                         p["audit_path"], cp)
        return cp
