"""The CLI: flags validated, help everywhere, and the README's nightly command end to end."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from demandlake import cli
from demandlake.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_has_help(capsys):
    for command in cli.COMMANDS:
        with pytest.raises(SystemExit) as exc:
            cli.build_parser().parse_args([command, "--help"])
        assert exc.value.code == 0
        assert "usage: demandlake" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["2026-13-01", "yesterday", "2026-11-14; DROP TABLE x"])
def test_a_bad_run_date_is_rejected_before_anything_runs(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["features", "--run-date", bad])
    assert exc.value.code == 2
    assert "not a date" in capsys.readouterr().err


def test_table_names_are_validated():
    assert cli.table_name("gold.user_profiles") == "gold.user_profiles"
    for bad in ["gold.x; DROP", "users", "../etc.passwd"]:
        with pytest.raises(Exception):
            cli.table_name(bad)


def test_backfill_range_must_be_ordered():
    assert len(cli.date_range(*map(cli.iso_date, ["2026-11-01", "2026-11-03"]))) == 3
    with pytest.raises(ValueError):
        cli.date_range(cli.iso_date("2026-11-03"), cli.iso_date("2026-11-01"))


def test_config_layers_and_overrides(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("sessions:\n  gap_minutes: 45\n")
    cfg = load_config([extra], ["features.top_k=3", "spark.conf.spark.sql.shuffle.partitions=3"],
                      lake=str(tmp_path / "L"))
    assert cfg["sessions.gap_minutes"] == 45 and cfg["features.top_k"] == 3
    assert cfg["spark.conf"]["spark.sql.shuffle.partitions"] == 3
    assert cfg.lake_uri == str(tmp_path / "L")
    assert load_config(lake="s3a://bucket/lake").lake_uri == "s3a://bucket/lake"
    with pytest.raises(FileNotFoundError):
        load_config([tmp_path / "missing.yaml"])
    with pytest.raises(ValueError):
        load_config(overrides=["no-equals-sign"])


def _cli(lake: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    small = ["--set", "generator.users=40", "--set", "generator.days=8",
             "--set", "training.epochs=1", "--set", "sentiment_model.max_length=48",
             "--set", "spark.master=local[2]", "--set", "spark.conf.spark.sql.shuffle.partitions=2",
             "--set", "spark.conf.spark.driver.memory=2g"]
    return subprocess.run([sys.executable, "-m", "demandlake.cli", "--lake", str(lake), *small, *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.e2e
def test_readme_nightly_command_builds_every_table_and_a_new_session_finds_them(tmp_path):
    lake = tmp_path / "lake"
    run = _cli(lake, "nightly")
    assert run.returncode == 0, run.stderr[-4000:]
    assert "gold.demand_forecasts" in run.stdout and "try:" in run.stdout
    # A separate process (new Spark session, same Derby catalog) queries the tables by name.
    q = _cli(lake, "sql", "SELECT count(*) AS n, min(purchase_probability) >= 0 AS ok "
                          "FROM gold.demand_forecasts")
    assert q.returncode == 0, q.stderr[-4000:]
    assert re.search(r"\|\s*[1-9]\d*\s*\|\s*true\s*\|", q.stdout), q.stdout
    status = _cli(lake, "status")
    assert status.returncode == 0 and "succeeded" in status.stdout
