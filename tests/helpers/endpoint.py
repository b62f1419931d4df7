"""``demandlake serve-sql`` as the tests start it: a separate process, as a user starts it, with
the suite's small Spark settings, on a free port."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers.settings import SHORT_JVM_OPTIONS, SMALL_SPARK

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "lib"), out.get("PYTHONPATH")]))
    out.setdefault("OMP_NUM_THREADS", "2")
    # The tests' endpoints live for minutes and answer small queries: the short-lived JVMs'
    # options (settings.py), not C2's compiles of code that a few hundred rows never need.
    out.setdefault("SPARK_SUBMIT_OPTS", SHORT_JVM_OPTIONS)
    return out


def cli(lake_uri: str, port: int, *args: str) -> list[str]:
    """A ``demandlake`` command line on ``lake_uri`` with the endpoint's port and small Spark."""
    small = [a for s in SMALL_SPARK if "driver.memory" not in s for a in ("--set", s)]
    return [sys.executable, "-m", "demandlake.cli", "--lake", lake_uri, *small,
            "--set", "spark.conf.spark.driver.memory=1g",
            "--set", f"sql_endpoint.port={port}", *args]


class Endpoint:
    """A started ``serve-sql`` process; ``ready()`` waits for its ready line."""

    def __init__(self, lake_uri: str, *sets: str):
        self.lake_uri = lake_uri
        self.port = free_port()
        extra = [a for s in sets for a in ("--set", s)]
        # stderr into a file: a pipe nobody reads while the tests run would fill and block it.
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(cli(lake_uri, self.port, *extra, "serve-sql"),
                                        stdout=subprocess.PIPE, stderr=self.stderr,
                                        text=True, env=env())
        self.t0 = time.monotonic()
        self.started_s: float | None = None
        self.ready_line = ""

    def ready(self) -> str:
        """The ready line; raises with the server's stderr when it stopped instead."""
        if self.started_s is None:
            self.ready_line = self.process.stdout.readline()
            self.started_s = time.monotonic() - self.t0
            if "ready" not in self.ready_line:
                self.process.wait(30)
                raise RuntimeError(f"serve-sql did not start: {self.ready_line}"
                                   f"{self.log()[-3000:]}")
        return self.ready_line

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        self.stderr.seek(0)
        return self.stderr.read()

    def connect(self, user: str = "analyst"):
        from pyhive import hive

        return hive.connect(host="127.0.0.1", port=self.port, username=user)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        self.stderr.close()
