"""The CLI: flags validated, help everywhere (the README nightly command: test_fresh_machine.py)."""
from __future__ import annotations

import argparse
import re

import pytest

from demandlake import cli
from demandlake.config import load_config
from demandlake.pipeline import graph


# The flags each hand-written command documents (README, docs/OPERATIONS.md).
COMMAND_FLAGS = {
    "generate": {"--out", "--users", "--days", "--start-date", "--seed", "--events", "--workers",
                 "--faults"},
    "train": {"--run-date", "--if-none-serving"},
    "nightly": {"--run-date", "--no-train"},
    "backfill": {"--start-date", "--end-date", "--force"},
    "sql": {"--limit"},
    "serve-sql": {"--host", "--port"},
    "metastore": set(),
    "status": {"--limit"},
    "report": {"--run-date", "--out"},
    "forget": {"--user-id", "--user-id-file", "--request-id", "--vacuum-hours"},
    "maintain": {"--table", "--vacuum", "--retain-hours"},
}
# Every stage command of pipeline/graph.py runs for a date or a range of dates.
STAGE_FLAGS = {"--run-date", "--start-date", "--end-date", "--dry-run"}


def _stage_flags(stage: str) -> set[str]:
    extra = {"--source", "--timezone", "--history"} if stage == "ingest" else set()
    return STAGE_FLAGS | extra | {f"--{o.replace('_', '-')}" for o in graph.options_of(stage)}


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args([*args, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_there_is_one_command_per_stage_of_the_graph_and_each_hand_written_one():
    stages = set(graph.stage_names()) - {"maintain"}  # maintain: whole tables, no run date
    assert set(cli.COMMANDS) == stages | set(COMMAND_FLAGS)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_commands_help_names_its_own_flags(command, capsys):
    out = _help(capsys, command)
    assert out.startswith(f"usage: demandlake {command} "), out[:200]
    want = COMMAND_FLAGS[command] if command in COMMAND_FLAGS else _stage_flags(command)
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", out))
    assert want <= shown, f"{command}: missing {sorted(want - shown)}"


def test_the_top_level_help_lists_every_command_with_what_it_does(capsys):
    out = " ".join(_help(capsys).split())  # help lines wrap
    for stage in set(graph.stage_names()) - {"maintain"}:
        assert f"{stage} {' '.join(graph.stage(stage).does.split())}" in out, stage
    for command in COMMAND_FLAGS:
        assert re.search(rf"\b{command}\b", out), command


@pytest.mark.parametrize("bad", ["2026-13-01", "yesterday", "2026-11-14; DROP TABLE x"])
def test_a_bad_run_date_is_rejected_before_anything_runs(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["features", "--run-date", bad])
    assert exc.value.code == 2
    assert "not a date" in capsys.readouterr().err


def test_table_names_are_validated():
    assert cli.table_name("gold.user_profiles") == "gold.user_profiles"
    for bad in ["gold.x; DROP", "users", "../etc.passwd", "GOLD.user_profiles"]:
        with pytest.raises(argparse.ArgumentTypeError, match=r"^not a table name \(layer\.table\)"):
            cli.table_name(bad)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^unknown table 'gold\.nope'; known: "):
        cli.table_name("gold.nope")


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


# ---- status: a reader of the run log -------------------------------------------------------
def test_status_reads_the_run_log_through_the_shared_catalog_or_in_memory_beside_embedded_derby(
        spark, scored_lake, monkeypatch, capsys, tmp_path):
    """``demandlake status`` on the embedded default uses the lake's shared catalog (the
    metastore server), which a running nightly uses too; with embedded Derby (one process at a
    time) it opens an in-memory catalog instead, as the SQL readers do. On a lake without a run
    log it says so and creates nothing."""
    sessions = []
    monkeypatch.setattr(cli, "_spark", lambda c, short_lived=False: sessions.append(c) or spark)
    shared = scored_lake.cfg.with_overrides({"lake.catalog": "hive"}, source="test")
    embedded = shared.with_overrides({"metastore.mode": "embedded"}, source="test")

    assert cli.cmd_status(embedded, argparse.Namespace(limit=100)) == 0
    assert sessions[-1]["lake.catalog"] == "in-memory"
    capsys.readouterr()
    assert cli.cmd_status(shared, argparse.Namespace(limit=100)) == 0
    assert sessions[-1]["lake.catalog"] == "hive"
    out = capsys.readouterr().out
    assert re.search(r"\|\s*score\s*\|\s*2026-11-10\s*\|\s*succeeded\s*\|", out), out

    empty = embedded.with_overrides({"lake.uri": str(tmp_path / "empty")}, source="test")
    assert cli.cmd_status(empty, argparse.Namespace(limit=100)) == 0
    assert "no runs yet" in capsys.readouterr().out
    assert not (tmp_path / "empty" / "ops").exists()
