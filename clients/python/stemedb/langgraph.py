"""LangGraph long-term memory in StemeDB: `StemeStore`, a `langgraph.store.base.BaseStore`.

    from stemedb import Client, load_key
    from stemedb.langgraph import StemeStore
    store = StemeStore(Client("http://127.0.0.1:18180", key=load_key("agent.pem")))
    graph = builder.compile(store=store)

The mapping (design §12):

- a namespace tuple is a concept path: `("users", "ana", "memories")` is `users/ana/memories`;
- a key is the predicate, and the value (a dict) is the object;
- `put` signs an assertion with the client's key; over one of this agent's own live assertions
  of the same key it is a correction (`supersedes`), so the history keeps both;
- `get` and `search` read through a lens (`latest` by default), so with several agents writing
  one namespace the answer is the lens's winner, and `Item` carries no private state;
- `delete` (or `put(..., None)`) retracts this agent's own live assertions of the key; another
  agent's memory of the same key, if any, then shows through the lens;
- `search` is a prefix query; `filter` matches value fields exactly (or with `$eq`, `$ne`,
  `$gt`, `$gte`, `$lt`, `$lte`); `query` ranks by the share of its words found in the value's
  JSON (StemeDB has no embeddings: `index` arguments are ignored).

Labels and keys may hold any characters: those a concept path does not allow (and `+` itself)
are written `+XX` (uppercase hex of each UTF-8 byte), so every label maps to one segment and
back. A concept path's limits still hold after escaping (docs/spec.md §1): at most 32 labels,
each at most 128 characters, and a key at most 256; an escaped character takes 3 per UTF-8
byte (`é` 6, a CJK character 9), so about 14 CJK characters fill a label. Past them `put`,
`get` and `delete` raise `ValueError` before anything is sent. Values must be JSON StemeDB
accepts: integers within ±(2^53 − 1) and no NaN or infinity. `search` and `list_namespaces`
show only groups in that form: a subject or predicate
another writer made that this store would not have written (`a+b`, a lowercase `+2b`, a
segment with `.`, which LangGraph does not allow in a label) is not a LangGraph item, since
`get` and `delete` could not name it.

A `put` or `delete` the server holds in quarantine (design §8: a content-defense rule such as
the soft size limit) raises `Quarantined` with the assertion's id: it is stored for an operator
to review, and reads do not see it until it is released.

`search(query=…)` and `list_namespaces` read every group under their prefix (page by page):
their cost grows with what the prefix holds, so give them a narrow prefix.

The store is thread-safe (one lock around the client, which keeps one connection); the async
methods run the same calls in a worker thread.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import json
import threading
from typing import Any, Iterable, Optional

from langgraph.store.base import (BaseStore, GetOp, Item, ListNamespacesOp, MatchCondition, Op,
                                  PutOp, Result, SearchItem, SearchOp)

from .client import Client
from .keys import agent_id

_SEGMENT_OK = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~:@-")
_PAGE = 1000


def _escape(text: str, extra_ok: str = "") -> str:
    out = []
    for ch in text:
        if ch in _SEGMENT_OK or ch in extra_ok:
            out.append(ch)
        else:
            out.extend(f"+{b:02X}" for b in ch.encode("utf-8"))
    s = "".join(out)
    # A segment may not be exactly "." or "..".
    if s in (".", ".."):
        s = s.replace(".", "+2E")
    return s


def _unescape(text: str, extra_ok: str = "") -> Optional[str]:
    """The inverse of `_escape(…, extra_ok)`: the text it was written from, or None when `text`
    is not something `_escape` writes (a `+` not followed by two uppercase hex digits, bytes
    that are not UTF-8, a character it would have escaped)."""
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "+":
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or not all(c in "0123456789ABCDEF" for c in pair):
                return None
            raw.append(int(pair, 16))
            i += 3
        else:
            raw.extend(text[i].encode("utf-8"))
            i += 1
    try:
        label = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return label if _escape(label, extra_ok) == text else None


_MAX_LABELS = 32
_MAX_SEGMENT = 128
_MAX_PREDICATE = 256


def namespace_to_subject(namespace: tuple) -> str:
    """The concept path of a namespace tuple (each label one segment). ValueError past the
    limits of a concept path (docs/spec.md §1): at most 32 labels, each at most 128 characters
    once escaped."""
    if not namespace:
        raise ValueError("a StemeDB memory needs a non-empty namespace")
    if len(namespace) > _MAX_LABELS:
        raise ValueError(f"a namespace has at most {_MAX_LABELS} labels, this one {len(namespace)}")
    segments = [_escape(str(label)) for label in namespace]
    for label, seg in zip(namespace, segments):
        if len(seg) > _MAX_SEGMENT:
            raise ValueError(
                f"label {str(label)[:40]!r}… is {len(seg)} characters once escaped; a label may "
                f"take at most {_MAX_SEGMENT} (a character outside [A-Za-z0-9._~:@-] takes 3 per "
                "UTF-8 byte)")
    return "/".join(segments)


def subject_to_namespace(subject: str) -> tuple:
    """The namespace tuple of a concept path `namespace_to_subject` wrote; ValueError for any
    other path."""
    labels = tuple(_unescape(seg) for seg in subject.split("/"))
    if any(label is None for label in labels):
        raise ValueError(f"{subject!r} is not a path this store writes")
    return labels


def key_to_predicate(key: str) -> str:
    """The predicate of a key (`/` is allowed in predicates and kept)."""
    if not key:
        raise ValueError("a key is a non-empty string")
    predicate = _escape(key, extra_ok="/")
    if len(predicate) > _MAX_PREDICATE:
        raise ValueError(
            f"key {key[:40]!r}… is {len(predicate)} characters once escaped; a key may take at "
            f"most {_MAX_PREDICATE} (a character outside [A-Za-z0-9._~:@-/] takes 3 per UTF-8 byte)")
    return predicate


def predicate_to_key(predicate: str) -> str:
    """The key of a predicate `key_to_predicate` wrote; ValueError for any other."""
    key = _unescape(predicate, "/")
    if key is None:
        raise ValueError(f"{predicate!r} is not a predicate this store writes")
    return key


def _item_names(subject: str, predicate: str) -> Optional[tuple]:
    """(namespace, key) of a group this store could have written and LangGraph can name (no
    `.` in a label, not under `langgraph`), else None."""
    try:
        ns, key = subject_to_namespace(subject), predicate_to_key(predicate)
    except ValueError:
        return None
    if any("." in label or not label for label in ns) or ns[0] == "langgraph":
        return None
    return ns, key


class Quarantined(Exception):
    """The server held a write in quarantine (design §8) instead of logging it: `id` names the
    assertion an operator may release or reject."""

    def __init__(self, id: str):
        super().__init__(f"the server holds assertion {id} in quarantine for review; "
                         "reads do not see it until an operator releases it")
        self.id = id


def _when(ms: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc)


def _as_dict(obj: Any) -> dict:
    return obj if isinstance(obj, dict) else {"value": obj}


_OPS = {
    "$eq": lambda a, b: a == b,
    "$ne": lambda a, b: a != b,
    "$gt": lambda a, b: a is not None and float(a) > float(b),
    "$gte": lambda a, b: a is not None and float(a) >= float(b),
    "$lt": lambda a, b: a is not None and float(a) < float(b),
    "$lte": lambda a, b: a is not None and float(a) <= float(b),
}


def _matches(value: Any, cond: Any) -> bool:
    if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
        try:
            return all(_OPS[op](value, want) for op, want in cond.items())
        except (KeyError, TypeError, ValueError):
            return False
    if isinstance(cond, dict):
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in cond.items())
    return value == cond


def _score(query: str, value: dict) -> float:
    words = [w for w in query.lower().split() if w]
    if not words:
        return 0.0
    text = json.dumps(value, ensure_ascii=False).lower()
    return sum(1 for w in words if w in text) / len(words)


def _namespace_matches(ns: tuple, cond: MatchCondition) -> bool:
    path = tuple(cond.path)
    if len(path) > len(ns):
        return False
    part = ns[:len(path)] if cond.match_type == "prefix" else ns[len(ns) - len(path):]
    return all(p == "*" or p == n for p, n in zip(path, part))


def _logged(a) -> None:
    if a.status == "quarantined":
        raise Quarantined(a.id)


class StemeStore(BaseStore):
    """A LangGraph `BaseStore` over a `stemedb.Client` that has a signing key."""

    supports_ttl = False

    def __init__(self, client: Client, *, lens: str = "latest"):
        if client.key is None:
            raise ValueError("StemeStore needs a Client with a key: Client(url, key=load_key(path))")
        self.client = client
        self.lens = lens
        self.agent = agent_id(client.key)
        self._lock = threading.Lock()

    # -- BaseStore ---------------------------------------------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        with self._lock:
            return [self._one(op) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        return await asyncio.get_running_loop().run_in_executor(None, self.batch, ops)

    # -- the operations ----------------------------------------------------------------------
    def _one(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            return self._get(tuple(op.namespace), op.key)
        if isinstance(op, PutOp):
            if op.value is None:
                self._delete(tuple(op.namespace), op.key)
            else:
                self._put(tuple(op.namespace), op.key, op.value)
            return None
        if isinstance(op, SearchOp):
            return self._search(tuple(op.namespace_prefix), op.filter, op.limit, op.offset, op.query)
        if isinstance(op, ListNamespacesOp):
            return self._list_namespaces(op.match_conditions or (), op.max_depth, op.limit, op.offset)
        raise ValueError(f"unknown operation {op!r}")

    def _get(self, namespace: tuple, key: str) -> Optional[Item]:
        subject, predicate = namespace_to_subject(namespace), key_to_predicate(key)
        answer = self.client.query(subject, predicate=predicate, lens=self.lens, limit=1)
        for r in answer.results:
            if r.subject == subject and r.predicate == predicate:
                when = _when(r.winner.ts)
                return Item(value=_as_dict(r.winner.object), key=key, namespace=namespace,
                            created_at=when, updated_at=when)
        return None

    def _own_live(self, subject: str, predicate: str) -> list:
        """This agent's live (not superseded, not retracted) assertions of the key, every page."""
        out, cursor = [], None
        while True:
            answer = self.client.query(subject, predicate=predicate, agent=self.agent, lens="raw",
                                       limit=_PAGE, cursor=cursor)
            out.extend(r.winner for r in answer.results)
            cursor = answer.next_cursor
            if cursor is None:
                return out

    def _put(self, namespace: tuple, key: str, value: dict) -> None:
        if not isinstance(value, dict):
            raise ValueError(f"a LangGraph store value is a dict, not {type(value).__name__}")
        subject, predicate = namespace_to_subject(namespace), key_to_predicate(key)
        previous = [w.id for w in self._own_live(subject, predicate)]
        _logged(self.client.assert_(subject, predicate, value, supersedes=previous))

    def _delete(self, namespace: tuple, key: str) -> None:
        subject, predicate = namespace_to_subject(namespace), key_to_predicate(key)
        previous = self._own_live(subject, predicate)
        if not previous:
            return
        # A retraction holds when what it withdraws did (decision 0020): with one interval
        # shared by every target, the retraction states it.
        intervals = {(w.valid_from, w.valid_until) for w in previous}
        valid_from, valid_until = intervals.pop() if len(intervals) == 1 else (None, None)
        _logged(self.client.assert_(subject, predicate, None, supersedes=[w.id for w in previous],
                                    retract=True, valid_from=valid_from, valid_until=valid_until))

    def _groups(self, subject: Optional[str]):
        """Every (subject, predicate) group at or below `subject` (all when None), resolved by
        the lens, page by page."""
        cursor = None
        while True:
            if subject is None:
                answer = self.client.query(None, lens=self.lens, limit=_PAGE, cursor=cursor)
            else:
                answer = self.client.query(subject, match="prefix", lens=self.lens, limit=_PAGE,
                                           cursor=cursor)
            yield from answer.results
            cursor = answer.next_cursor
            if cursor is None:
                return

    def _search(self, prefix: tuple, filter: Optional[dict], limit: int, offset: int,
                query: Optional[str]) -> list[SearchItem]:
        subject = namespace_to_subject(prefix) if prefix else None
        hits = []
        for r in self._groups(subject):
            names = _item_names(r.subject, r.predicate)
            if names is None:
                continue
            value = _as_dict(r.winner.object)
            if filter and not all(_matches(value.get(k), v) for k, v in filter.items()):
                continue
            score = _score(query, value) if query else None
            if query and not score:
                continue
            when = _when(r.winner.ts)
            hits.append(SearchItem(names[0], names[1], value, when, when, score))
            if not query and len(hits) >= offset + limit:
                break
        if query:
            hits.sort(key=lambda h: -(h.score or 0.0))
        return hits[offset:offset + limit]

    def _list_namespaces(self, conditions: tuple, max_depth: Optional[int], limit: int,
                         offset: int) -> list[tuple]:
        # A prefix condition without wildcards narrows the scan itself.
        start = None
        for c in conditions:
            if c.match_type == "prefix" and c.path and "*" not in c.path:
                start = namespace_to_subject(tuple(c.path))
                break
        seen = set()
        for r in self._groups(start):
            names = _item_names(r.subject, r.predicate)
            if names is None:
                continue
            ns = names[0]
            if not all(_namespace_matches(ns, c) for c in conditions):
                continue
            seen.add(ns[:max_depth] if max_depth is not None else ns)
        return sorted(seen)[offset:offset + limit]
