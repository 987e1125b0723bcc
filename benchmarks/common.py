"""Shared helpers: statistics, processes, CPU and memory readings."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
KINDS = ("celery-ws", "seed", "socketio", "relay")


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def summary(values: list[float]) -> dict[str, Any]:
    """Median with min and max of repeated measurements."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": vals,
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class CpuMeter:
    """CPU seconds used by a set of processes over a window, as % of one core."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.procs.append(psutil.Process(pid))
        self.start = self._total()
        self.t0 = time.monotonic()

    def _total(self) -> float:
        total = 0.0
        for proc in self.procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def seconds(self) -> float:
        return self._total() - self.start

    def percent(self) -> float:
        wall = time.monotonic() - self.t0
        return 100.0 * (self._total() - self.start) / wall if wall > 0 else 0.0


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@dataclass
class Child:
    """A subprocess that answers one JSON line per command line."""

    args: list[str]
    env: dict[str, str] | None = None
    #: the source tree it runs (a baseline checkout, to compare with)
    root: Path = ROOT
    proc: subprocess.Popen[str] = field(init=False)

    def __post_init__(self) -> None:
        env = {**os.environ, **(self.env or {}), "PYTHONPATH": str(self.root)}
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            cwd=self.root,
            env=env,
            bufsize=1,
        )
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self, timeout: float) -> dict[str, Any]:
        if not self._sel.select(timeout):
            raise TimeoutError(f"{self.args[2:4]} did not answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.args[2:4]} exited ({self.proc.poll()})")
        return json.loads(line)

    def ask(self, command: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)


def fmt(s: dict[str, Any] | None, unit: str = "", digits: int = 1, scale: float = 1.0) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    m, lo, hi = (s["median"] * scale, s["min"] * scale, s["max"] * scale)
    return f"{m:,.{digits}f}{unit} ({lo:,.{digits}f}–{hi:,.{digits}f})"
