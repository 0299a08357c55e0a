"""A real `vigil serve` for the tests, on free loopback ports and a store of its own.

The binary is ``VIGIL_BIN`` when set; otherwise the tests build it with cargo (the repository
is two folders up) and use cargo's target directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]


def _binary() -> str:
    if os.environ.get("VIGIL_BIN"):
        return os.environ["VIGIL_BIN"]
    subprocess.run(["cargo", "build", "-q", "--bin", "vigil"], cwd=REPO, check=True)
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(Path(json.loads(meta.stdout)["target_directory"]) / "debug" / "vigil")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vigil serve` on fixed ports and a SurrealKV store, so that it can be restarted."""

    def __init__(self, binary: str, store_dir: Path, env: Optional[dict] = None) -> None:
        self.binary = binary
        self.env = env or {}
        self.store = f"surrealkv://{store_dir}/db"
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None
        self.log: List[str] = []

    def start(self) -> None:
        # Half a second of grace: a loaded machine that delays a beat does not make an agent
        # late, while a client beating at its interval or slower still is.
        env = dict(os.environ, RUST_LOG="warn,vigil=info", NO_COLOR="1", VIGIL_POLICY__GRACE="500ms", **self.env)
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--agent-listen", self.address, "--http-listen", "127.0.0.1:0", "--store", self.store],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            if "vigil is supervising" in line:
                return
        self.stop()
        raise RuntimeError("vigil serve did not start:\n" + "".join(self.log))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def vigil_binary() -> str:
    return _binary()


@pytest.fixture
def server(vigil_binary: str, tmp_path: Path) -> Iterator[Server]:
    s = Server(vigil_binary, tmp_path)
    s.start()
    yield s
    s.stop()


#: The test certificates of the Rust tests (a CA, and a certificate for `localhost`).
TLS_DIR = REPO / "tests" / "fixtures" / "tls"


@pytest.fixture
def tls_server(vigil_binary: str, tmp_path: Path) -> Iterator[Server]:
    s = Server(
        vigil_binary,
        tmp_path,
        {
            "VIGIL_SERVER__TLS_CERT": str(TLS_DIR / "cert.pem"),
            "VIGIL_SERVER__TLS_KEY": str(TLS_DIR / "key.pem"),
        },
    )
    s.start()
    yield s
    s.stop()
