"""The README's nightly command, run as a new user runs it: a fresh copy of the project, a plain
shell (no ``PYSPARK_*``, no ``VIRTUAL_ENV``, no venv on ``PATH``), ``make nightly`` on an empty
lake; then the sample query it prints, pasted exactly as printed, must answer, and a second
process must find the tables by name in the catalog. While the nightly runs, analysts query the
same lake by name through its shared catalog (the metastore server): a bare ``spark-sql`` with
the properties file the lake carries, and ``demandlake sql``; each answer must be one committed
version of the table.

The bootstrap reuses the cached venv (keyed by requirements.txt), as it does for a user whose
machine already has one. The venv's editable install keeps pointing at the clone that installed it
(scripts/bootstrap.sh); `make` runs the copy's own code through PYTHONPATH.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
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


# Queried during the nightly: ops.runs gains a row at every stage, so its count moves through
# the whole run and each committed version has its own.
PROBE_TABLE = "ops.runs"
PROBE = f"SELECT count(*) AS n FROM {PROBE_TABLE}"


def _venv() -> Path:
    out = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=ROOT, env=_plain_env(),
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return Path(out.stdout.strip().splitlines()[-1])


class _Analyst(threading.Thread):
    """Queries the lake by name while ``make nightly`` runs, as an analyst would: a bare
    ``spark-sql`` with ``<lake>/_catalog/spark-sql.conf`` and ``demandlake sql``, in turn, from
    the moment the probe table is in the catalog until the nightly ends (at most ``rounds``)."""

    def __init__(self, clone: Path, venv: Path, nightly: subprocess.Popen, rounds: int = 2):
        super().__init__(daemon=True)
        self.clone, self.venv, self.nightly, self.rounds = clone, venv, nightly, rounds
        self.answers: list[tuple[str, float, float, int | None, str]] = []

    def _ask(self, kind: str) -> subprocess.CompletedProcess:
        lake = self.clone / "lake"
        if kind == "spark-sql":
            cmd = [str(self.venv / "bin" / "spark-sql"), "--properties-file",
                   str(lake / "_catalog" / "spark-sql.conf"), "-e", PROBE]
        else:
            cmd = [str(self.venv / "bin" / "demandlake"), "--lake", str(lake), "sql", PROBE]
        return subprocess.run(cmd, cwd=self.clone, env=_plain_env(), capture_output=True,
                              text=True, timeout=600)

    def run(self) -> None:
        # Its second commit: the table was created and named in the catalog before it.
        second = self.clone / "lake" / "ops" / "runs" / "_delta_log" / f"{1:020d}.json"
        conf = self.clone / "lake" / "_catalog" / "spark-sql.conf"
        while self.nightly.poll() is None and not (conf.exists() and second.exists()):
            time.sleep(1)
        kinds = ["spark-sql", "demandlake sql"]
        for i in range(self.rounds):
            if self.nightly.poll() is not None:
                return
            t0 = time.monotonic()
            out = self._ask(kinds[i % 2])
            found = re.findall(r"^\|?\s*(\d+)\s*\|?$", out.stdout, re.MULTILINE)
            self.answers.append((kinds[i % 2], t0, time.monotonic(),
                                 int(found[-1]) if out.returncode == 0 and found else None,
                                 out.stdout[-1500:] + out.stderr[-3000:]))


def _committed_counts(table_dir: Path) -> list[int]:
    """The row count at each committed version of a Delta table, from its log's file stats."""
    counts, files = [], {}
    for commit in sorted((table_dir / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                files[action["add"]["path"]] = json.loads(action["add"]["stats"])["numRecords"]
            elif "remove" in action:
                files.pop(action["remove"]["path"], None)
        counts.append(sum(files.values()))
    return counts


@pytest.fixture(scope="module")
def fresh_nightly(tmp_path_factory):
    clone = _fresh_copy(tmp_path_factory.mktemp("fresh") / "demandlake")
    readme = (ROOT / "README.md").read_text()
    assert "make nightly" in readme  # the command under test is the README's
    venv = _venv()
    t0 = time.monotonic()
    nightly = subprocess.Popen(["bash", "-c", "make nightly"], cwd=clone, env=_plain_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    analyst = _Analyst(clone, venv, nightly)
    analyst.start()
    stdout, stderr = nightly.communicate(timeout=1800)
    seconds = time.monotonic() - t0
    analyst.join(600)
    run = subprocess.CompletedProcess(nightly.args, nightly.returncode, stdout, stderr)
    return clone, run, seconds, analyst.answers, (t0, t0 + seconds)


def test_make_nightly_in_a_fresh_copy_and_plain_shell_succeeds_quietly(fresh_nightly):
    clone, run, seconds, _, _ = fresh_nightly
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
    clone, run, *_ = fresh_nightly
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
    clone, run, *_ = fresh_nightly
    lines = run.stdout.splitlines()
    status = lines[lines.index("try:") + 2].strip()
    assert status.endswith(" status"), status
    answer = _shell(status, clone, timeout=600)
    assert answer.returncode == 0, answer.stderr[-4000:]
    for stage in ("ingest", "sessions", "features", "score", "nightly"):
        assert re.search(rf"\|\s*{stage}\s*\|[^|]*\|\s*succeeded\s*\|", answer.stdout), \
            (stage, answer.stdout)


def test_analysts_query_the_lake_by_name_while_the_nightly_writes_it(fresh_nightly):
    """The catalog is shared: spark-sql and demandlake sql answered during the nightly (no
    Derby XSDB6), each from one committed version of the table, never a half-written one."""
    clone, run, _, answers, (started, ended) = fresh_nightly
    assert run.returncode == 0, run.stderr[-3000:]
    assert {kind for kind, *_ in answers} == {"spark-sql", "demandlake sql"}, answers
    failed = [(kind, text) for kind, _, _, n, text in answers if n is None]
    assert not failed, failed[0]
    assert any(t1 < ended for _, _, t1, _, _ in answers), "no answer came while the nightly ran"
    committed = _committed_counts(clone / "lake" / "ops" / "runs")
    seen = [n for *_, n, _ in answers]
    assert set(seen) <= set(committed), (seen, committed)
    assert seen == sorted(seen), seen  # never an older version after a newer one
    print("answers during the nightly: " + ", ".join(
        f"{kind} {n} rows in {t1 - t0:.0f} s" for kind, t0, t1, n, _ in answers)
        + f" (committed versions: {committed})")
