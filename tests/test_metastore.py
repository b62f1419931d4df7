"""The embedded default's shared catalog (``demandlake.metastore``): Derby's network server,
started once for every process, stopped when idle, never mistaken for another program."""
from __future__ import annotations

import socket
import time

import pytest

from demandlake import metastore
from demandlake.config import load_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server_cfg(tmp_path, monkeypatch):
    # A state folder and port of its own: the user's server (if one runs) is not touched.
    monkeypatch.setenv("DEMANDLAKE_METASTORE_STATE", str(tmp_path / "state"))
    cfg = load_config(overrides=[f"lake.uri={tmp_path / 'lake'}",
                                 f"metastore.port={_free_port()}", "metastore.idle_s=3"])
    yield cfg
    metastore.stop_server(cfg)


def test_one_server_serves_every_caller_and_stops_itself_when_idle(server_cfg):
    first = metastore.ensure_server(server_cfg)
    again = metastore.ensure_server(server_cfg)
    assert again["pid"] == first["pid"]  # started once; the second caller only renews the lease
    host, port = metastore.address(server_cfg)
    with socket.create_connection((host, port)):  # a client: the server stays while it is open
        time.sleep(6)
        assert metastore.server_info(port) is not None
    deadline = time.monotonic() + 60
    while metastore.server_info(port) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metastore.server_info(port) is None, "the server did not stop after 3 s idle"
    log = (metastore.state_dir() / f"server-{port}.log").read_text()
    assert "idle for 3 s: stopping" in log
    assert metastore.ensure_server(server_cfg)["pid"] != first["pid"]  # the next caller restarts it


def test_a_port_held_by_another_program_is_an_error_naming_the_setting(server_cfg):
    host, port = metastore.address(server_cfg)
    with socket.socket() as other:
        other.bind((host, port))
        other.listen()
        with pytest.raises(RuntimeError, match="metastore.port"):
            metastore.ensure_server(server_cfg)


def test_open_connections_are_counted_from_the_kernels_table():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert metastore.established_connections(port) == 0
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = listener.accept()
            with accepted:
                assert metastore.established_connections(port) == 1


def test_only_a_local_lakes_hive_catalog_goes_to_the_server(tmp_path):
    local = load_config(overrides=[f"lake.uri={tmp_path}"])
    assert metastore.uses_server(local) and metastore.shared(local)
    assert metastore.jdbc_url(local).startswith("jdbc:derby://127.0.0.1:1527//")
    for overrides in (["lake.uri=s3a://b/lake"], ["lake.catalog=in-memory"],
                      ["spark.conf.spark.hadoop.hive.metastore.uris=thrift://m:9083"]):
        cfg = load_config(overrides=[f"lake.uri={tmp_path}", *overrides])
        assert metastore.metastore_dir(cfg) is None and not metastore.uses_server(cfg)
    embedded = local.with_overrides({"metastore.mode": "embedded"})
    assert not metastore.uses_server(embedded) and not metastore.shared(embedded)
    with pytest.raises(ValueError, match="';'"):
        metastore.jdbc_url(load_config(overrides=[f"lake.uri={tmp_path}/a;b"]))


def test_the_metastore_command_starts_reports_and_stops_the_server(server_cfg, capsys):
    from demandlake import cli

    lake = str(metastore.metastore_dir(server_cfg).parents[1])
    port = metastore.address(server_cfg)[1]
    args = ["--lake", lake, "--set", f"metastore.port={port}", "metastore"]
    assert cli.main([*args, "start"]) == 0
    out = capsys.readouterr().out
    conf = metastore.metastore_dir(server_cfg).parent / "spark-sql.conf"
    assert f"spark-sql --properties-file {conf}" in out and conf.is_file()
    assert f"spark.hadoop.javax.jdo.option.ConnectionURL {metastore.jdbc_url(server_cfg)}" in (
        conf.read_text().splitlines())
    assert cli.main([*args, "status"]) == 0 and "running" in capsys.readouterr().out
    assert cli.main([*args, "stop"]) == 0 and "stopped" in capsys.readouterr().out
    assert cli.main([*args, "status"]) == 3 and "not running" in capsys.readouterr().out
    assert cli.main([*args[:3], "lake.catalog=in-memory", "metastore", "status"]) == 2
