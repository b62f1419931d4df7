"""spark-submit entry point: Delta housekeeping (OPTIMIZE, optionally VACUUM).

    spark-submit --master local[*] jobs/maintain.py [--lake URI] [--conf-file F]
        [--table silver.sessions] [--vacuum] [--retain-hours 168]

Run it weekly, or after a backfill; see docs/OPERATIONS.md and docs/BENCHMARKS.md.
"""
import argparse
import sys

from demandlake.cli import main

if __name__ == "__main__":
    # The CLI takes its global flags before the command; accept them anywhere here.
    g = argparse.ArgumentParser(add_help=False)
    g.add_argument("--lake")
    g.add_argument("--conf-file", action="append", default=[])
    g.add_argument("--set", action="append", default=[])
    known, rest = g.parse_known_args()
    argv = ([*(["--lake", known.lake] if known.lake else []),
             *[x for f in known.conf_file for x in ("--conf-file", f)],
             *[x for kv in known.set for x in ("--set", kv)]])
    sys.exit(main([*argv, "maintain", *rest]))
