"""Loopback helpers for the tests that start a server process (safemerge serve, a Ray head)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(proc: subprocess.Popen, ready: Callable[[], Any], what: str, timeout: float = 120.0,
             pause: float = 0.3) -> Any:
    """Call ``ready()`` until it returns something truthy (an ``OSError``: not up yet) and return that, while
    ``proc`` runs: its output is the failure message if it exits, ``"<what> did not start"`` after ``timeout``."""
    t0 = time.time()
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.time() - t0 < timeout, f"{what} did not start"
        try:
            got = ready()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(pause)
