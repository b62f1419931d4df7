"""One nightly chain SIGKILLed during score and rerun must equal a clean run (minutes).

    python bench/fault_rerun.py [--work DIR]

Was the opt-in test ``test_a_chain_killed_at_a_random_point_and_rerun_equals_a_clean_run`` of
tests/test_reliability.py (run only with DEMANDLAKE_RUN_FAULTS=1): four Spark chains in child
processes are too slow for the test suite, and a test that skips by default proves nothing there.
Same trial as before (``demandlake.faults.run_trials``: 30 users, one day, seed 3, one kill aimed
at the score stage, the stage a kill drawn over the whole chain reaches least often); exits 1,
naming what differed, when the rerun does not equal the clean run. The 20-kill run of
docs/RELIABILITY.md is ``python -m demandlake.faults --kills 20``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))


def main(argv: list[str] | None = None) -> int:
    from demandlake import faults

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default=None,
                   help="work folder, kept afterwards (default: a temporary one)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="demandlake-fault-rerun-"))
    out = work / "faults.json"
    rc = faults.run_trials(kills=1, seed=3, users=30, days=1, work=str(work), out=str(out),
                           stages=["score"])
    if not out.exists():  # the clean run itself failed
        print(f"FAILED: run_trials returned {rc} before any trial; see {work}/children.log",
              file=sys.stderr)
        return 1
    result = json.loads(out.read_text())
    problems = []
    if result["trials"][0]["kill_from"] != "2026-11-01 score":
        problems.append(f"kill not aimed at score: {result['trials'][0]['kill_from']}")
    if not result["rerun_identical"]:
        problems.append("a plain rerun on the clean lake changed it")
    if (result["kills"], result["identical_after_rerun"]) != (1, 1):
        problems.append(f"killed and rerun != clean: {json.dumps(result['trials'])[:2000]}")
    if rc != 0:
        problems.append(f"run_trials returned {rc}")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    print(f"{'FAILED' if problems else 'ok'}: results in {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
