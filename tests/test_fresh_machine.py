"""The README's nightly command, run as a new user runs it: a fresh copy of the project, a plain
shell (no ``PYSPARK_*``, no ``VIRTUAL_ENV``, no venv on ``PATH``), ``make nightly`` on an empty
lake; then the sample query it prints, pasted exactly as printed, must answer, and a second
process must find the tables by name in the catalog.

The bootstrap reuses the cached venv (keyed by requirements.txt), as it does for a user whose
machine already has one. The venv's editable install keeps pointing at the clone that installed it
(scripts/bootstrap.sh); `make` runs the copy's own code through PYTHONPATH.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a login shell has: the system's PATH only.
PLAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Java stack traces, Ivy's resolution listing, Spark's and Python's warnings: none in a healthy run.
NOISE = re.compile(r"^\s+at [\w.$]+\(|Exception|:: resolving dependencies ::|^WARN|WARNING|"
                   r"Traceback", re.MULTILINE)


def _fresh_copy(dest: Path) -> Path:
    """The project's files as a clone has them (tracked and new, not ignored): on CI's clean
    checkout this is a clone of HEAD, and locally it includes the change being tested."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src, dst = ROOT / name.decode(), dest / name.decode()
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
            dst.chmod(src.stat().st_mode)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def _plain_env() -> dict[str, str]:
    keep = ("HOME", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "CI", "DEMANDLAKE_CACHE",
            "JAVA_HOME")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, "PATH": PLAIN_PATH}


def _shell(cmd: str, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=_plain_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fresh_nightly(tmp_path_factory):
    clone = _fresh_copy(tmp_path_factory.mktemp("fresh") / "demandlake")
    readme = (ROOT / "README.md").read_text()
    assert "make nightly" in readme  # the command under test is the README's
    t0 = time.monotonic()
    run = _shell("make nightly", clone, timeout=1800)
    return clone, run, time.monotonic() - t0


def test_make_nightly_in_a_fresh_copy_and_plain_shell_succeeds_quietly(fresh_nightly):
    clone, run, seconds = fresh_nightly
    assert run.returncode == 0, f"make nightly failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    assert "nightly run for" in run.stdout and "gold.demand_forecasts" in run.stdout
    noise = NOISE.findall(run.stdout + run.stderr)
    assert not noise, f"a healthy run printed {noise[:5]}:\n{run.stdout}\n{run.stderr[-4000:]}"
    logs = re.search(r"^logs: (\S+) \(Spark: (\S+)\)$", run.stdout, re.MULTILINE)
    assert logs and Path(logs[1]).is_file() and Path(logs[2]).is_file(), run.stdout
    # One line per stage of the last date, with its seconds.
    for stage in ("ingest", "sessions", "train_sentiment", "review_sentiment", "features",
                  "train_sequence", "score"):
        assert re.search(rf"^\d{{4}}-\d\d-\d\d  {stage}\s+\d+\.\d s", run.stdout, re.MULTILINE), \
            (stage, run.stdout)
    # The run used the copy's code: its stage lines come from the copy's console module.
    assert f"{clone}/lake" in run.stdout
    print(f"make nightly in a fresh copy: {seconds:.0f} s")


def test_the_printed_sample_query_answers_when_pasted_as_printed(fresh_nightly):
    clone, run, _ = fresh_nightly
    lines = run.stdout.splitlines()
    pasted = lines[lines.index("try:") + 1].strip()
    assert pasted.split()[0].endswith("demandlake") and " sql " in pasted, pasted
    answer = _shell(pasted, clone, timeout=600)
    assert answer.returncode == 0, answer.stderr[-4000:]
    # A table of segments with their user counts, from a new process (the catalog persisted).
    rows = re.findall(r"^\|\s*([a-z_ ]+?)\s*\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|$", answer.stdout,
                      re.MULTILINE)
    assert rows and sum(int(n) for _, n, _ in rows) > 0, answer.stdout


def test_status_lists_every_stage_of_the_run_as_succeeded(fresh_nightly):
    clone, run, _ = fresh_nightly
    lines = run.stdout.splitlines()
    status = lines[lines.index("try:") + 2].strip()
    assert status.endswith(" status"), status
    answer = _shell(status, clone, timeout=600)
    assert answer.returncode == 0, answer.stderr[-4000:]
    for stage in ("ingest", "sessions", "features", "score", "nightly"):
        assert re.search(rf"\|\s*{stage}\s*\|[^|]*\|\s*succeeded\s*\|", answer.stdout), \
            (stage, answer.stdout)
