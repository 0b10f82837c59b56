"""`stemedb mcp` driven by the official MCP Python SDK (`mcp` on PyPI) over stdio and over the
streamable HTTP transport: list the tools and resources, call every tool, and check from outside
(PyNaCl for the Ed25519 signature, blake3 for the id and the RFC 9162 proof) that what `remember`
wrote is a valid signed envelope included in a checkpoint the server signed. `verify` refuses a
forged proof and a forged checkpoint; bad arguments are tool errors with a code.
"""
import asyncio
import base64
import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import blake3
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from nacl.signing import VerifyKey

from rfc9162 import h_leaf, verify_inclusion, verify_note

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("STEMEDB_BIN", str(ROOT / "target" / "debug" / "stemedb"))
TYPE = "application/vnd.stemedb.assertion.v1+json"
TOOLS = {"remember", "recall", "history", "correct", "retract", "verify", "checkpoint"}


def pae(payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d " % (len(TYPE), TYPE.encode(), len(payload)) + payload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("STEMEDB_")}


class Server:
    def __init__(self, tmp, port=None, data="data"):
        port = port or free_port()
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp / data), "--log", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env())
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/v1/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("stemedb serve did not become ready")

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return r.read().decode()


@pytest.fixture
def world(tmp_path):
    server = Server(tmp_path)
    keys = []
    for name in ("agent.pem", "other.pem"):
        out = subprocess.run([BIN, "keygen", "--out", str(tmp_path / name)], capture_output=True,
                             text=True, check=True)
        keys.append((tmp_path / name, out.stdout.strip()))
    yield server, keys
    server.proc.kill()
    server.proc.wait()


def stdio_params(server, key, *extra):
    return StdioServerParameters(command=BIN, args=["mcp", "--key", str(key), "--server", server.url, *extra],
                                 env=clean_env())


def is_error(r):
    return r.is_error if hasattr(r, "is_error") else r.isError


def structured(r):
    return r.structured_content if hasattr(r, "structured_content") else r.structuredContent


async def call(s, tool, args):
    r = await s.call_tool(tool, args)
    body = structured(r)
    if body is None:
        body = json.loads(r.content[0].text)
    return is_error(r), body


async def exercise(s, server, agent_hex, other_key):
    """Every tool and resource through one session; returns nothing, asserts everything."""
    init_tools = (await s.list_tools()).tools
    assert {t.name for t in init_tools} == TOOLS
    for t in init_tools:
        assert t.description and len(t.description) > 40, t.name
        assert t.input_schema["type"] == "object", t.name
    remember = next(t for t in init_tools if t.name == "remember")
    assert set(remember.input_schema["required"]) == {"subject", "predicate", "object"}
    assert "description" in remember.input_schema["properties"]["valid_from"]

    # remember: a signed envelope, checked here with PyNaCl and blake3.
    err, r = await call(s, "remember", {"subject": "proj/apollo", "predicate": "owner", "object": "ana",
                                        "confidence": 0.9, "valid_from": 1000, "valid_until": 5000})
    assert not err and r["status"] == "created" and r["log_index"] == 0, r
    stored = json.loads(server.get(f"/v1/assertions/{r['id']}"))
    env = stored["envelope"]
    payload = base64.b64decode(env["payload"])
    assert blake3.blake3(pae(payload)).hexdigest() == r["id"]
    VerifyKey(bytes.fromhex(agent_hex)).verify(pae(payload), base64.b64decode(env["signatures"][0]["sig"]))
    st = json.loads(payload)
    assert (st["subject"], st["predicate"], st["object"], st["agent"]) == ("proj/apollo", "owner", "ana", agent_hex)
    assert (st["valid_from"], st["valid_until"], st["confidence"]) == (1000, 5000, 0.9)
    # Its inclusion proof, verified independently against the signed checkpoint.
    key = json.loads(server.get("/v1/checkpoint/key"))
    origin, size, root = verify_note(server.get("/v1/checkpoint"), key)
    p = json.loads(server.get(f"/v1/proof/inclusion?id={r['id']}&tree_size={size}"))
    assert verify_inclusion(h_leaf(r["id"]), p["leaf_index"], size, [bytes.fromhex(x) for x in p["audit_path"]], root)
    first = r["id"]

    # verify: checked by the MCP server against the pinned key; the same root we computed.
    err, v = await call(s, "verify", {"id": first})
    assert not err and v["verified"] is True and v["log_index"] == 0, v
    assert v["tree_size"] == size and bytes.fromhex(v["root"]) == root
    # A forged proof (one hash flipped) and a forged checkpoint are refused.
    forged = dict(p)
    forged["root_hash"] = "00" * 32
    err, v = await call(s, "verify", {"id": first, "proof": forged})
    assert err and v["code"] == "verification_failed", v
    note = server.get("/v1/checkpoint")
    lines = note.split("\n")
    lines[2] = base64.b64encode(bytes(32)).decode()
    err, v = await call(s, "verify", {"id": first, "checkpoint": "\n".join(lines)})
    assert err and v["code"] == "verification_failed", v
    err, v = await call(s, "verify", {"id": first, "checkpoint": note, "proof": p})
    assert not err and v["verified"], v
    err, v = await call(s, "verify", {"id": "ab" * 32})
    assert err and v["code"] == "not_found", v

    # checkpoint: verified, matches the independent check.
    err, c = await call(s, "checkpoint", {})
    assert not err and c["verified"] and c["tree_size"] == size and c["origin"] == origin, c
    assert c["public_key"] == key["public_key"]

    # recall, with valid time.
    err, q = await call(s, "recall", {"subject": "proj/apollo"})
    assert not err and q["results"][0]["winner"]["object"] == "ana", q
    err, q = await call(s, "recall", {"subject": "proj/apollo", "valid_at": 6000})
    assert not err and q["results"] == [], q
    err, q = await call(s, "recall", {"subject": "proj", "match": "prefix", "lens": "raw", "valid_at": 1000})
    assert not err and len(q["results"]) == 1, q

    # correct and retract one's own; history shows both.
    err, c = await call(s, "correct", {"id": first, "object": "bo"})
    assert not err and c["status"] == "created", c
    err, q = await call(s, "recall", {"subject": "proj/apollo", "valid_at": 2000})
    assert q["results"][0]["winner"]["object"] == "bo", q
    err, x = await call(s, "retract", {"id": c["id"]})
    assert not err and x["status"] == "created", x
    err, h = await call(s, "history", {"subject": "proj/apollo", "predicate": "owner"})
    assert not err, h
    assert [e["status"] for e in h["entries"]] == ["superseded", "retracted", "retraction"], h
    assert h["entries"][0]["superseded_by"] == c["id"] and h["entries"][0]["valid_until"] == 5000
    assert h["entries"][1]["valid_from"] == 1000  # the correction kept the original's validity

    # Another agent's memory cannot be corrected or retracted through this key.
    theirs = subprocess.run([BIN, "sign", "--key", str(other_key)], input=json.dumps(
        {"subject": "proj/apollo", "predicate": "budget", "object": 5}), capture_output=True, text=True, check=True)
    req = urllib.request.Request(server.url + "/v1/assert", data=theirs.stdout.encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        other_id = json.loads(resp.read())["id"]
    for tool, args in (("correct", {"id": other_id, "object": 6}), ("retract", {"id": other_id})):
        err, v = await call(s, tool, args)
        assert err and v["code"] == "not_own_assertion", (tool, v)

    # Bad arguments: tool errors with a code, and the session keeps working.
    bad = [
        ("remember", {"subject": "proj/apollo", "predicate": "owner", "object": 1, "confidence": "high"}, "bad_argument"),
        ("remember", {"subject": "proj//apollo", "predicate": "owner", "object": 1}, "bad_subject"),
        ("remember", {"subject": "a", "predicate": "p", "object": 1, "confidence": 7}, None),
        ("remember", {"predicate": "owner", "object": 1}, "bad_argument"),
        ("recall", {"subject": "proj/apollo", "lens": "loudest"}, "unknown_lens"),
        ("recall", {"subject": "proj/apollo", "valid_at": 5, "current": True}, "bad_query"),
        ("history", {"subject": "proj/apollo"}, "bad_argument"),
        ("verify", {"id": "not-an-id"}, "bad_id"),
        ("correct", {"id": "ab" * 32, "object": 1}, "not_found"),
        ("checkpoint", {"extra": 1}, "bad_argument"),
    ]
    for tool, args, code in bad:
        err, v = await call(s, tool, args)
        assert err, (tool, args, v)
        assert isinstance(v["code"], str) and v["code"] and v["detail"], (tool, v)
        if code:
            assert v["code"] == code, (tool, args, v)

    # Resources.
    resources = (await s.list_resources()).resources
    assert [str(x.uri) for x in resources] == ["stemedb://checkpoint"]
    templates = (await s.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == ["stemedb://assertion/{id}"]
    rr = await s.read_resource(f"stemedb://assertion/{first}")
    got = json.loads(rr.contents[0].text)
    assert got["envelope"] == env and got["log_index"] == 0
    rr = await s.read_resource("stemedb://checkpoint")
    assert json.loads(rr.contents[0].text)["verified"] is True


def test_mcp_over_stdio_with_the_official_sdk(world):
    server, ((key, agent_hex), (other, _)) = world

    async def run():
        async with stdio_client(stdio_params(server, key)) as (r, w):
            async with ClientSession(r, w) as s:
                init = await s.initialize()
                assert init.server_info.name == "stemedb"
                await exercise(s, server, agent_hex, other)

    asyncio.run(asyncio.wait_for(run(), 120))


def test_a_pinned_key_that_does_not_match_refuses_every_proof(world):
    server, ((key, _), _) = world

    async def run():
        async with stdio_client(stdio_params(server, key, "--trust-key", "ab" * 32)) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                for tool, args in (("checkpoint", {}), ("verify", {"id": "cd" * 32})):
                    err, v = await call(s, tool, args)
                    assert err and v["code"] == "checkpoint_key_mismatch", v
                # Writing needs no checkpoint key.
                err, v = await call(s, "remember", {"subject": "a", "predicate": "p", "object": 1})
                assert not err, v

    asyncio.run(asyncio.wait_for(run(), 60))


def test_a_server_that_changes_its_key_after_the_pin_is_a_key_mismatch(world, tmp_path):
    """The key pinned at first contact stays; a server that later signs with another key is
    named as a key change, not only as a failed verification."""
    server, ((key, _), _) = world

    async def run():
        async with stdio_client(stdio_params(server, key)) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                err, v = await call(s, "checkpoint", {})
                assert not err, v
                server.proc.kill()
                server.proc.wait()
                other = Server(tmp_path, port=server.port, data="other-data")
                try:
                    err, v = await call(s, "checkpoint", {})
                    assert err and v["code"] == "checkpoint_key_mismatch", v
                finally:
                    other.proc.kill()
                    other.proc.wait()

    asyncio.run(asyncio.wait_for(run(), 60))


def test_retracting_a_past_fact_keeps_the_agents_current_one(world):
    """Decision 0020: a retraction holds when the memory it withdraws did."""
    server, ((key, _), _) = world

    async def run():
        async with stdio_client(stdio_params(server, key)) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                _, old = await call(s, "remember", {"subject": "org/acme", "predicate": "ceo", "object": "alice",
                                                    "valid_from": 1000, "valid_until": 2000})
                _, new = await call(s, "remember", {"subject": "org/acme", "predicate": "ceo", "object": "bob",
                                                    "valid_from": 2000})
                err, x = await call(s, "retract", {"id": old["id"]})
                assert not err, x
                err, q = await call(s, "recall", {"subject": "org/acme", "current": True})
                assert [r["winner"]["object"] for r in q["results"]] == ["bob"], q
                err, q = await call(s, "recall", {"subject": "org/acme", "valid_at": 1500})
                assert q["results"] == [], q
                err, h = await call(s, "history", {"subject": "org/acme", "predicate": "ceo"})
                assert [e["status"] for e in h["entries"]] == ["retracted", "live", "retraction"], h
                assert (h["entries"][2]["valid_from"], h["entries"][2]["valid_until"]) == (1000, 2000)
                # A proof whose id is another assertion's is refused, not rewritten.
                p = json.loads(server.get(f"/v1/proof/inclusion?id={new['id']}"))
                err, v = await call(s, "verify", {"id": old["id"], "proof": p})
                assert err and v["code"] == "verification_failed", v

    asyncio.run(asyncio.wait_for(run(), 60))


def test_an_empty_token_is_refused(world):
    server, ((key, _), _) = world
    env = clean_env()
    env["STEMEDB_MCP_TOKEN"] = " "
    out = subprocess.run([BIN, "mcp", "--key", str(key), "--server", server.url, "--http", "127.0.0.1:0"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode != 0 and "empty" in out.stderr, out.stderr


def start_http(server, key, token=None, bind="127.0.0.1"):
    port = free_port()
    env = clean_env()
    if token:
        env["STEMEDB_MCP_TOKEN"] = token
    proc = subprocess.Popen([BIN, "mcp", "--key", str(key), "--server", server.url, "--http", f"{bind}:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()
    assert "listening on" in line, line
    return proc, f"http://127.0.0.1:{port}/mcp"


def test_mcp_over_streamable_http_with_a_bearer_token(world):
    server, ((key, agent_hex), (other, _)) = world
    token = "mcp-test-token-0123456789"
    proc, url = start_http(server, key, token=token)
    try:
        async def run():
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http:
                async with streamable_http_client(url, http_client=http) as (r, w):
                    async with ClientSession(r, w) as s:
                        await s.initialize()
                        await exercise(s, server, agent_hex, other)

        asyncio.run(asyncio.wait_for(run(), 120))
        # Without the token, or with a wrong one: 401 before any MCP handling.
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            resp = httpx2.post(url, headers={"content-type": "application/json",
                                             "accept": "application/json, text/event-stream", **headers},
                               content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            assert resp.status_code == 401, resp.text
            assert resp.json()["code"] == "unauthorized"
    finally:
        proc.kill()
        proc.wait()


def test_http_on_a_public_address_needs_a_token(world):
    server, ((key, _), _) = world
    out = subprocess.run([BIN, "mcp", "--key", str(key), "--server", server.url, "--http", "0.0.0.0:0"],
                         capture_output=True, text=True, env=clean_env(), timeout=30)
    assert out.returncode != 0
    assert "token" in out.stderr
