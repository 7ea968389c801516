"""A real ``pgfork serve`` on a real pool for the tests: a home on the XFS
pool that scripts/test.sh mounts (``PGFORK_TEST_XFS``), a source ``shop``
with data, a snapshot, and the daemon on a free loopback port. Nothing is
mocked; a missing pool is a failure, not a skip."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Server:
    """The daemon under test."""

    url: str
    token: str
    home: Path
    binary: str

    def pgfork(self, *args: str) -> subprocess.CompletedProcess:
        """Runs ``pgfork --home HOME --json ARGS``."""
        return subprocess.run(
            [self.binary, "--home", str(self.home), "--json", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    def json(self, *args: str):
        out = self.pgfork(*args)
        assert out.returncode == 0, f"pgfork {' '.join(args)}: {out.stdout}{out.stderr}"
        return json.loads(out.stdout)


def _binary() -> str:
    binary = os.environ.get("PGFORK_BIN") or str(ROOT / "target" / "debug" / "pgfork")
    assert os.access(binary, os.X_OK), f"{binary} missing: cargo build first (or set PGFORK_BIN)"
    return binary


def _pool() -> Path:
    pool = os.environ.get("PGFORK_TEST_XFS")
    assert pool, (
        "PGFORK_TEST_XFS is not set: these tests run on the XFS pool that "
        "scripts/test.sh mounts (as root). They are never skipped."
    )
    return Path(pool)


def _start(binary: str, home: Path, extra: List[str]) -> "tuple[subprocess.Popen, str]":
    proc = subprocess.Popen(
        [binary, "--home", str(home), "serve", "--listen", "127.0.0.1:0", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening on http://" in line, f"serve did not start: {line}{proc.stderr.read()}"
    url = line.split("listening on ")[1].split()[0]
    return proc, url


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = _binary()
    home = _pool() / f"py-{os.getpid()}"
    # Ports 28000-31999, in slots of 40, below the kernel's ephemeral range
    # and above the Rust tests' (20000-27999).
    first = 28000 + (os.getpid() % 100) * 40
    init = subprocess.run(
        [binary, "--home", str(home), "--json", "init", "--ports", f"{first}-{first + 39}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    token = json.loads(init.stdout)["api_token"]
    proc = None
    srv = Server(url="", token=token, home=home, binary=binary)
    try:
        srv.json("source", "create", "shop")
        dsn = srv.json("source", "dsn", "shop")["dsn"]
        with psycopg.connect(dsn) as conn:
            conn.execute(
                "CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL UNIQUE);"
                "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " customer_id bigint NOT NULL REFERENCES customers(id), total numeric(10,2));"
                "INSERT INTO customers SELECT g, 'c' || g || '@example.com' FROM generate_series(1, 500) g;"
                "INSERT INTO orders (customer_id, total) SELECT 1 + g % 500, g FROM generate_series(1, 2000) g;"
            )
        srv.json("snapshot", "create", "shop")
        proc, srv.url = _start(binary, home, ["--reap-every", "1s", "--idle-stop", "0"])
        yield srv
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if (home / "meta.db").exists():
            subprocess.run(
                [binary, "--home", str(home), "source", "delete", "shop", "--force"],
                capture_output=True,
                timeout=300,
            )
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture()
def client(server: Server):
    from pgfork import Client

    return Client(server.url, token=server.token, timeout=120)


def wait_for(check, timeout: float = 30.0) -> bool:
    """Polls ``check`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def proxy(server: Server) -> Iterator[int]:
    """A `pgfork proxy` on the server's home, for one test module; its port."""
    port = _free_port()
    proc = subprocess.Popen(
        [server.binary, "--home", str(server.home), "proxy", "--listen", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening" in line, f"pgfork proxy did not start: {line}"
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
