"""`stemedb.langgraph.StemeStore` with `langgraph` from PyPI, against a real server: put, get,
search, delete and list_namespaces (sync and async), and a LangGraph graph that stores a memory
in one node and recalls it in another through the store."""
import asyncio
import operator
import uuid
from typing import Annotated, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

from stemedb import Client, generate_key
from stemedb.langgraph import (Quarantined, StemeStore, key_to_predicate, namespace_to_subject,
                               predicate_to_key, subject_to_namespace)


def root() -> str:
    return "lg-" + uuid.uuid4().hex[:12]


def test_names_round_trip_through_concept_paths():
    for ns in [("users", "ana", "memories"), ("a b", "ü", "+", "x/y", "."), ("..", "ok")]:
        subject = namespace_to_subject(ns)
        assert subject_to_namespace(subject) == ns
        assert len(subject.split("/")) == len(ns)
    for key in ["m1", "a key with spaces", "k/with/slash", "+plus", "ключ"]:
        assert predicate_to_key(key_to_predicate(key)) == key
    with pytest.raises(ValueError):
        namespace_to_subject(())
    # The concept path's limits hold after escaping, with a clear error before anything is sent.
    assert namespace_to_subject(("é" * 21,)) == "+C3+A9" * 21  # 126 characters
    for too_long in [("é" * 22,), ("x" * 129,), tuple("n" * 33)]:
        with pytest.raises(ValueError, match="at most"):
            namespace_to_subject(too_long)
    assert len(key_to_predicate("ü" * 42)) == 252
    with pytest.raises(ValueError, match="at most 256"):
        key_to_predicate("ü" * 43)


def test_put_get_search_delete_and_list_namespaces(server):
    client = Client(server, key=generate_key())
    store = StemeStore(client)
    r = root()
    ns = (r, "ana", "memories")
    assert store.get(ns, "m1") is None
    store.put(ns, "m1", {"text": "likes green tea", "kind": "pref", "n": 3})
    store.put(ns, "m2", {"text": "works on apollo", "kind": "fact", "n": 7})
    store.put((r, "bo", "memories"), "m1", {"text": "prefers coffee", "kind": "pref", "n": 1})
    item = store.get(ns, "m1")
    assert item is not None and item.value == {"text": "likes green tea", "kind": "pref", "n": 3}
    assert item.key == "m1" and item.namespace == ns
    assert item.updated_at.year >= 2024

    # Overwriting corrects the agent's own memory; the history keeps both.
    store.put(ns, "m1", {"text": "likes oolong", "kind": "pref", "n": 4})
    assert store.get(ns, "m1").value["text"] == "likes oolong"
    h = client.history(namespace_to_subject(ns), "m1")
    assert [e["status"] for e in h["entries"]] == ["superseded", "live"]

    # search: prefix, filter, query, limit and offset.
    everything = store.search((r,))
    assert {(i.namespace, i.key) for i in everything} == {
        (ns, "m1"), (ns, "m2"), ((r, "bo", "memories"), "m1")}
    prefs = store.search((r,), filter={"kind": "pref"})
    assert sorted(i.value["text"] for i in prefs) == ["likes oolong", "prefers coffee"]
    assert [i.value["n"] for i in store.search((r,), filter={"n": {"$gt": 4}})] == [7]
    assert [i.key for i in store.search((r, "ana"), filter={"kind": {"$ne": "pref"}})] == ["m2"]
    ranked = store.search((r,), query="coffee")
    assert [i.value["text"] for i in ranked] == ["prefers coffee"] and ranked[0].score == 1.0
    assert len(store.search((r,), limit=2)) == 2
    assert len(store.search((r,), limit=2, offset=2)) == 1

    # list_namespaces, with prefix, suffix, wildcards and max_depth.
    assert store.list_namespaces(prefix=(r,)) == [(r, "ana", "memories"), (r, "bo", "memories")]
    assert store.list_namespaces(prefix=(r, "*", "memories"), suffix=("memories",)) == [
        (r, "ana", "memories"), (r, "bo", "memories")]
    assert store.list_namespaces(prefix=(r,), max_depth=2) == [(r, "ana"), (r, "bo")]
    assert store.list_namespaces(prefix=(r,), limit=1, offset=1) == [(r, "bo", "memories")]

    # delete: a signed retraction of one's own memory.
    store.delete(ns, "m1")
    assert store.get(ns, "m1") is None
    h = client.history(namespace_to_subject(ns), "m1")
    assert [e["status"] for e in h["entries"]] == ["superseded", "retracted", "retraction"]
    assert {i.key for i in store.search((r, "ana"))} == {"m2"}
    store.put(ns, "m2", None)
    assert store.get(ns, "m2") is None
    assert store.list_namespaces(prefix=(r,)) == [(r, "bo", "memories")]
    # Deleting what is not there is a no-op.
    store.delete(ns, "never-written")

    with pytest.raises(ValueError):
        store.put(ns, "bad", ["not", "a", "dict"])


def test_another_agents_memory_shows_through_the_lens_and_cannot_be_deleted(server):
    r = root()
    ns = (r, "shared")
    mine = StemeStore(Client(server, key=generate_key()))
    theirs = StemeStore(Client(server, key=generate_key()))
    theirs.put(ns, "fact", {"v": "theirs"})
    assert mine.get(ns, "fact").value == {"v": "theirs"}
    mine.delete(ns, "fact")  # not mine: nothing to retract
    assert mine.get(ns, "fact").value == {"v": "theirs"}
    mine.put(ns, "fact", {"v": "mine"})
    assert mine.get(ns, "fact").value == {"v": "mine"}  # the newest belief wins under latest
    mine.delete(ns, "fact")
    assert mine.get(ns, "fact").value == {"v": "theirs"}


def test_async_methods(server):
    store = StemeStore(Client(server, key=generate_key()))
    r = root()

    async def run():
        await store.aput((r, "x"), "k", {"a": 1})
        got = await store.aget((r, "x"), "k")
        assert got.value == {"a": 1}
        found = await store.asearch((r,))
        assert [i.key for i in found] == ["k"]
        assert await store.alist_namespaces(prefix=(r,)) == [(r, "x")]
        await store.adelete((r, "x"), "k")
        assert await store.aget((r, "x"), "k") is None

    asyncio.run(run())


class State(TypedDict):
    user: str
    log: Annotated[list, operator.add]


def test_a_langgraph_graph_remembers_and_recalls_through_the_store(server):
    store = StemeStore(Client(server, key=generate_key()))
    r = root()

    def remember(state: State, store: BaseStore) -> dict:
        store.put((r, state["user"], "memories"), "drink", {"text": "likes green tea"})
        return {"log": ["remembered"]}

    def recall(state: State, store: BaseStore) -> dict:
        hits = store.search((r, state["user"]), query="tea", limit=3)
        return {"log": [h.value["text"] for h in hits]}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    graph = builder.compile(store=store)
    out = graph.invoke({"user": "ana", "log": []})
    assert out["log"] == ["remembered", "likes green tea"]
    # A second graph run (a new "session") recalls what the first stored.
    recall_only = StateGraph(State)
    recall_only.add_node("recall", recall)
    recall_only.add_edge(START, "recall")
    recall_only.add_edge("recall", END)
    assert recall_only.compile(store=store).invoke({"user": "ana", "log": []})["log"] == ["likes green tea"]


def test_groups_another_writer_named_outside_the_mapping_are_not_items(server):
    """`search` and `list_namespaces` list only what `get` and `delete` can name: a subject or
    predicate this store would not have written (a bare `+`, a lowercase escape, a `.` that
    LangGraph does not allow in a label) is skipped, and what they list reads back."""
    r = root()
    raw = Client(server, key=generate_key())
    for subject, predicate in [(f"{r}/bad+zz", "p"), (f"{r}/x+2b", "q"), (f"{r}/ok", "q+zz"),
                               (f"{r}/dot.seg", "q")]:
        assert raw.assert_(subject, predicate, {"a": 1}).stored
    store = StemeStore(Client(server, key=generate_key()))
    store.put((r, "mine"), "k.with.dots", {"a": 2})
    found = store.search((r,))
    assert [(i.namespace, i.key) for i in found] == [((r, "mine"), "k.with.dots")]
    for i in found:
        assert store.get(i.namespace, i.key).value == {"a": 2}
    assert store.list_namespaces(prefix=(r,)) == [(r, "mine")]
    with pytest.raises(ValueError):
        subject_to_namespace(f"{r}/bad+zz")
    with pytest.raises(ValueError):
        predicate_to_key("q+2b")


def test_a_write_the_server_holds_in_quarantine_raises(server):
    """Design §8: a value over the server's soft size limit (32 KiB by default) is held for
    review; `put` says so instead of returning as if it were stored."""
    store = StemeStore(Client(server, key=generate_key()))
    r = root()
    with pytest.raises(Quarantined) as held:
        store.put((r, "big"), "k", {"blob": "x" * 40_000})
    assert len(held.value.id) == 64
    assert store.get((r, "big"), "k") is None
