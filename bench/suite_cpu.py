"""CPU seconds of each test, for finding where `make test`'s CPU goes (docs/OPERATIONS.md, "What the
whole suite costs"). The suite is CPU-bound on 2 cores, so wall-clock ``--durations`` measured
while three parts run at once say little about what a test costs; this says what it burns.

As a pytest plugin, loaded into every part of ``make test`` through the environment:

    PYTHONPATH=bench PYTEST_ADDOPTS="-p suite_cpu" DEMANDLAKE_SUITE_CPU=/tmp/cpu.jsonl make test
    python bench/suite_cpu.py /tmp/cpu.jsonl          # the report: per file and the top tests

For each test (set-up, call and tear-down together) it writes one JSON line: the CPU seconds of
the pytest process's whole process tree (user + system, its own and its descendants', the
children it has reaped included), the wall seconds, and the CPU seconds the whole machine was
busy meanwhile (``sysbusy``; with the parts running at once, that is everybody's).

The pytest process makes itself a child subreaper, so that a process whose parent exits first
(the JVM that pyspark starts under a CLI child outlives it by a moment; Spark's daemons) is
re-parented to it and still counted, until it is reaped, instead of vanishing to init. Nothing
here reaps them (that could take a child's exit status from the code under test): they stay as
zombies until pytest exits, which is harmless for one run. Opt-in only; `make test` never loads
it by itself.
"""
from __future__ import annotations

import collections
import ctypes
import json
import os
import sys
import time

_TICK = os.sysconf("SC_CLK_TCK")
_OUT = "DEMANDLAKE_SUITE_CPU"
_PR_SET_CHILD_SUBREAPER = 36


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, utime + stime + cutime + cstime in ticks) of one process, None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every live (or zombie) descendant."""
    children: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        st = _stat(pid)
        if st is not None:
            children[st[0]].append((int(pid), st[1]))
    own = _stat(str(root))
    total, stack = (own[1] if own else 0), [root]
    while stack:
        for pid, ticks in children.get(stack.pop(), ()):
            total += ticks
            stack.append(pid)
    return total / _TICK


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (not idle, not waiting on I/O) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / _TICK


_started: dict[str, tuple[float, float, float]] = {}


def pytest_configure(config) -> None:
    if os.environ.get(_OUT):  # loaded but not recording: no subreaper, no /proc scans
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def pytest_runtest_logstart(nodeid, location) -> None:
    if os.environ.get(_OUT):
        _started[nodeid] = (tree_cpu(os.getpid()), time.monotonic(), machine_busy())


def pytest_runtest_logfinish(nodeid, location) -> None:
    out = os.environ.get(_OUT)
    if not out or nodeid not in _started:
        return
    cpu0, wall0, busy0 = _started.pop(nodeid)
    row = {"test": nodeid, "cpu_s": round(tree_cpu(os.getpid()) - cpu0, 1),
           "wall_s": round(time.monotonic() - wall0, 1),
           "sysbusy_s": round(machine_busy() - busy0, 1), "pid": os.getpid()}
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def report(path: str, top: int = 25) -> str:
    rows = [json.loads(line) for line in open(path)]
    by_file: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        entry = by_file[r["test"].split("::")[0]]
        entry[0] += r["cpu_s"]
        entry[1] += r["wall_s"]
        entry[2] += 1
    lines = [f"{len(rows)} tests, {sum(r['cpu_s'] for r in rows) / 60:.1f} CPU-minutes in all",
             "", f"{'CPU s':>8} {'wall s':>8} {'tests':>5}  file"]
    for name, (cpu, wall, n) in sorted(by_file.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{cpu:8.0f} {wall:8.0f} {n:5d}  {name}")
    lines += ["", f"{'CPU s':>8} {'wall s':>8}  test (the {top} costliest)"]
    for r in sorted(rows, key=lambda r: -r["cpu_s"])[:top]:
        lines.append(f"{r['cpu_s']:8.1f} {r['wall_s']:8.1f}  {r['test']}")
    return "\n".join(lines)


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the report quietly
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(report(sys.argv[1]))
