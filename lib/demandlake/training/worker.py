"""Entry point of one rank under ``horovodrun``: ``python -m demandlake.training.worker --job F``.

The job file (written by :func:`demandlake.training.launch.run_horovodrun`) holds the task, the
configuration, the data spec and the output folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One Horovod rank of a demandlake training job.")
    parser.add_argument("--job", required=True, help="job JSON written by the launcher")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with open(args.job) as fh:
        job = json.load(fh)
    from demandlake.training.horovod_trainer import train

    train(job["task"], job["cfg"], job["data_spec"], job["out_dir"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
