"""Under spark-submit, its ``--master`` and ``--conf`` win over conf/defaults.yaml, and the YAML
fills the gaps (scripts/cluster_check.sh found that every job ran on the YAML's ``local[*]``,
whatever ``--master`` said: ``SparkConf()`` read before the gateway existed was empty). And the
venv's JVMs map the class archive that bootstrap made (``demandlake.spark.build_class_archive``):
the spark-submit JVM here, the CLI's in-process one in the second test."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PROBE = textwrap.dedent("""
    import sys
    from demandlake.config import load_config
    from demandlake.spark import get_spark

    cfg = load_config(overrides=[f"lake.uri={sys.argv[1]}", "lake.catalog=in-memory"])
    spark = get_spark(cfg)
    print("MASTER=" + spark.sparkContext.master)
    print("PARTITIONS=" + spark.conf.get("spark.sql.shuffle.partitions"))
    print("SNAPSHOT=" + spark.conf.get("spark.databricks.delta.snapshotPartitions"))
    spark.stop()
""")


def test_spark_submit_master_and_conf_win_over_the_yaml(tmp_path):
    from demandlake.config import load_config
    from demandlake.spark import cached_delta_jars

    yaml = load_config(overrides=[f"lake.uri={tmp_path / 'lake'}"])
    assert yaml.get("spark.master") != "local[1]"  # else the test could not tell them apart
    assert str(yaml.get("spark.conf", {}).get("spark.sql.shuffle.partitions")) != "3"
    snapshot = str(yaml.get("spark.conf", {})["spark.databricks.delta.snapshotPartitions"])

    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    jars = cached_delta_jars()
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
           "--conf", "spark.sql.shuffle.partitions=3", "--driver-memory", "1g",
           "--driver-java-options", f"-Xlog:class+load=info:file={tmp_path / 'classes.log'}",
           *(["--jars", ",".join(jars)] if jars else []), str(probe), str(tmp_path / "lake")]
    # As a user's plain shell has it: no PYSPARK_* and no venv on PATH. The venv's spark-submit
    # must start the venv's Python itself (scripts/bootstrap.sh: PYSPARK_PYTHON's default there).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYSPARK_") and k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if Path(p) != Path(sys.executable).parent)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(ln.split("=", 1) for ln in out.stdout.splitlines() if "=" in ln)
    assert lines.get("MASTER") == "local[1]", out.stdout
    assert lines.get("PARTITIONS") == "3", out.stdout
    assert lines.get("SNAPSHOT") == snapshot, out.stdout  # not submitted: the YAML's value
    # Spark's classes came from the venv's archive ("top": the dynamic layer bootstrap dumped),
    # not from its jars: thousands of them, the bulk of what a session loads.
    loaded = (tmp_path / "classes.log").read_text().splitlines()
    mapped = [ln for ln in loaded if "shared objects file (top)" in ln]
    assert len(mapped) > 3000 and any("org.apache.spark.sql" in ln for ln in mapped), (
        f"{len(mapped)} of {len(loaded)} classes from the class archive")


def test_the_clis_jvm_starts_with_the_class_archive(spark):
    from demandlake.spark import class_archive

    args = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory
                .getRuntimeMXBean().getInputArguments())
    assert f"-XX:SharedArchiveFile={class_archive()}" in args, args
