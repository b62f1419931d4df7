"""spark-submit entry point: the review_sentiment stage.

    spark-submit --master local[*] jobs/review_sentiment.py --run-date 2026-11-14 [--lake URI] [--conf-file F]

On a cluster, ship the package with `--py-files dist/demandlake-*.zip` (the wheel under a
.zip name: pyspark puts only .zip/.egg on the executors' path) or install it on the
nodes, and pass the lake URI (s3a://, abfss://, hdfs://).
"""
import sys

from demandlake.jobs import run_job

if __name__ == "__main__":
    sys.exit(run_job("review_sentiment"))
