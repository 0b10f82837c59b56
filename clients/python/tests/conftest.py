"""Starts a real `stemedb serve` (from $STEMEDB_BIN, or the workspace's target/debug/stemedb)
on a fresh data directory and a free port for the tests."""
import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = os.environ.get("STEMEDB_BIN", str(ROOT / "target" / "debug" / "stemedb"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    assert pathlib.Path(BIN).is_file(), f"build the server first (cargo build): {BIN} is missing"
    data = tmp_path_factory.mktemp("stemedb") / "data"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, STEMEDB_ADMIN_TOKEN="python-client-test-token")
    proc = subprocess.Popen([BIN, "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
                             "--log", "warn"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"stemedb exited: {proc.stderr.read().decode()}")
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError("stemedb did not become ready in 30 s")
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
