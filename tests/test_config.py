"""Configuration keys are checked against conf/defaults.yaml: a typo fails, naming the nearest
valid key."""
import re
from pathlib import Path

import pytest

from demandlake import cli
from demandlake.config import ConfigKeyError, check_override, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_set_key_fails_naming_the_nearest_key():
    with pytest.raises(ConfigKeyError) as err:
        load_config(overrides=["training.epoks=5"])
    assert str(err.value) == ("unknown config key 'training.epoks' (from --set): "
                              "did you mean 'training.epochs'?")


def test_misspelled_section_in_set_names_the_whole_nearest_path():
    with pytest.raises(ConfigKeyError, match=r"'trainig\.epochs' \(from --set\): "
                                             r"did you mean 'training\.epochs'\?"):
        load_config(overrides=["trainig.epochs=5"])


def test_typo_in_a_yaml_file_fails_naming_the_file_and_the_nearest_key(tmp_path):
    extra = tmp_path / "typo.yaml"
    extra.write_text("sessions:\n  gap_minutes: 45\nsequence_model:\n  hiden: 8\n")
    with pytest.raises(ConfigKeyError) as err:
        load_config([extra])
    assert str(err.value) == (f"unknown config key 'sequence_model.hiden' (from {extra}): "
                              "did you mean 'sequence_model.hidden'?")


def test_every_unknown_key_of_every_layer_is_named_at_once(tmp_path):
    extra = tmp_path / "two.yaml"
    extra.write_text("lake:\n  timezon: UTC\nscoring:\n  recommendations:\n    als: {rnak: 4}\n")
    with pytest.raises(ConfigKeyError) as err:
        load_config([extra])
    assert str(err.value).split("; ") == [
        f"unknown config key 'lake.timezon' (from {extra}): did you mean 'lake.timezone'?",
        f"unknown config key 'scoring.recommendations.als.rnak' (from {extra}): "
        "did you mean 'scoring.recommendations.als.rank'?"]


def test_key_in_the_wrong_section_names_the_sections_that_have_it():
    with pytest.raises(ConfigKeyError, match=r"'training\.hidden' \(from --set\): did you mean "
                                             r"'sentiment_model\.hidden' or "
                                             r"'sequence_model\.hidden'\?"):
        load_config(overrides=["training.hidden=8"])


def test_key_below_a_plain_value_is_unknown():
    with pytest.raises(ConfigKeyError, match=r"'sessions\.gap_minutes\.x' \(from --set\)"):
        load_config(overrides=["sessions.gap_minutes.x=1"])


def test_spark_conf_accepts_any_spark_property_from_set_and_yaml(tmp_path):
    extra = tmp_path / "spark.yaml"
    extra.write_text("spark:\n  conf:\n    spark.sql.files.maxPartitionBytes: 64m\n")
    cfg = load_config([extra], ["spark.conf.spark.executor.memoryOverhead=1g"])
    assert cfg["spark.conf"]["spark.sql.files.maxPartitionBytes"] == "64m"
    assert cfg["spark.conf"]["spark.executor.memoryOverhead"] == "1g"


def test_free_names_take_entries_of_a_checked_shape(tmp_path):
    extra = tmp_path / "names.yaml"
    extra.write_text(
        "quality:\n  tables:\n    gold.recommendations:\n      min_rows: 5\n"
        "      max_null_rate: {any_column: 0.1}\n"
        "ingest:\n  sources:\n    - {format: taobao, path: t/*.csv, timezone: Asia/Shanghai}\n")
    cfg = load_config([extra], ["quality.tables.gold.user_profiles.history_runs=3"])
    tables = cfg["quality.tables"]
    assert tables["gold.recommendations"]["max_null_rate"] == {"any_column": 0.1}
    assert tables["gold.user_profiles"]["history_runs"] == 3
    with pytest.raises(ConfigKeyError, match=r"'quality\.tables\.gold\.x\.min_rowz' "
                                             r"\(from --set\): did you mean "
                                             r"'quality\.tables\.gold\.x\.min_rows'\?"):
        load_config(overrides=["quality.tables.gold.x.min_rowz=5"])
    bad = tmp_path / "source.yaml"
    bad.write_text("ingest:\n  sources:\n    - {format: taobao, path: t/*.csv, timezon: UTC}\n")
    with pytest.raises(ConfigKeyError, match=r"'ingest\.sources\[0\]\.timezon' .*"
                                             r"'ingest\.sources\[0\]\.timezone'\?"):
        load_config([bad])


def test_with_overrides_checks_keys_of_a_whole_section():
    cfg = load_config()
    with pytest.raises(ConfigKeyError, match=r"'training\.bach_size' \(from overrides\): "
                                             r"did you mean 'training\.batch_size'\?"):
        cfg.with_overrides({"training": {"epochs": 1, "bach_size": 8}})


def test_cli_reports_an_unknown_key_as_a_configuration_error(capsys):
    assert cli.main(["--set", "features.top_kk=3", "status"]) == 2
    assert capsys.readouterr().err.strip() == (
        "demandlake: configuration error: unknown config key 'features.top_kk' (from --set): "
        "did you mean 'features.top_k'?")


def test_every_dotted_key_the_code_reads_is_in_the_defaults():
    """A key read with cfg.get("a.b") or cfg["a.b"] but missing from defaults.yaml could never be
    set: the check would reject it."""
    schema = load_config().schema
    pattern = re.compile(r"\bcfg(?:\.get\(|\[)\"([a-z_]+(?:\.[a-z_]+)+)\"")
    read = {(m.group(1), str(path.relative_to(ROOT)))
            for top in ("lib", "jobs", "bench")
            for path in (ROOT / top).rglob("*.py")
            for m in pattern.finditer(path.read_text())}
    assert len(read) > 50  # the pattern still finds the code's reads
    missing = []
    for key, where in sorted(read):
        try:
            check_override(schema, key, None, where)
        except ConfigKeyError as exc:
            missing.append(str(exc))
    assert missing == []
