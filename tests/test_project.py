"""Project-level promises: the compose file parses and names what exists; the CLI answers;
the pure numerics packages import no I/O library."""

import ast
import json
import pathlib
import subprocess
import sys
import time

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_compose_file_services_and_mounted_files_exist():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"mosquitto", "influxdb", "mipd", "grafana"} <= set(compose["services"])
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), source
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").exists()


def test_compose_scale_out_profile_is_a_consistent_deployment():
    """Every shard has exactly one worker, ingest sessions are distinct, all share one directory."""
    from mipdstream.config import Settings

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    scale_out = {name: s for name, s in services.items() if "scale-out" in s.get("profiles", [])}
    by_command = lambda command: [s for s in scale_out.values() if s["command"] == [command]]
    workers, ingest, api = by_command("assimilate"), by_command("ingest"), by_command("api")
    assert len(workers) >= 2 and len(ingest) >= 2 and len(api) == 1
    settings = [Settings(**{k.removeprefix("MIPD_").lower(): v for k, v in s["environment"].items()
                            if k.startswith("MIPD_") and "$" not in v}) for s in scale_out.values()]
    assert {str(s.shared_dir) for s in settings} == {"/shared"}
    shards = sorted((int(s["environment"]["MIPD_SHARD_INDEX"]), int(s["environment"]["MIPD_SHARD_COUNT"])) for s in workers)
    assert shards == [(i, len(workers)) for i in range(len(workers))]
    ids = [s["environment"]["MIPD_INGEST_CLIENT_ID"] for s in ingest]
    assert len(set(ids)) == len(ids)
    assert all(s["environment"]["MIPD_INGEST_NOTIFY"] == "true" and s["environment"]["MIPD_INGEST_SHARED_GROUP"] for s in ingest)
    for s in scale_out.values():  # the shared volume, and a data dir of its own
        own = [v for v in s["volumes"] if v.endswith(":/data")]
        assert "mipd-shared:/shared" in s["volumes"] and len(own) == 1
    owns = [v for s in scale_out.values() for v in s["volumes"] if v.endswith(":/data")]
    assert len(set(owns)) == len(owns)


def test_cli_lists_its_commands():
    out = subprocess.run([sys.executable, "-m", "mipdstream.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("ingest", "enroll", "readings", "demo", "config"):
        assert command in out


def _imports(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_dependencies_point_one_way():
    io = {"paho", "amqtt", "sqlite3", "urllib3", "influxdb_client", "fastapi", "ingest", "mipdstream", "httpx", "requests"}
    for package in ("assimilation", "dosing_policy", "wire"):
        assert _imports(package) & io == set(), package
    # Simulators speak only the public wire contract; they may draw virtual patients from the
    # model library (pure numerics) but never reach into ingest, the policy or the service.
    assert _imports("device_simulators") & {"ingest", "mipdstream", "dosing_policy", "sqlite3", "influxdb_client", "fastapi"} == set()
    assert _imports("dosing_policy") & {"device_simulators"} == set()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_runs_on_the_embedded_default(tmp_path):
    """`make demo`: simulated devices -> embedded broker -> ingest -> live posteriors -> alerts."""
    result = subprocess.run(
        # 150 s: the cold start compiles every kernel of three models on 2 cores; the first alerts came
        # at 55-75 s standalone and later inside a loaded suite run (none within 100 s there, 2026-11-30)
        [sys.executable, "-m", "mipdstream.cli", "demo", "--duration", "150", "--simulate-s", "50", "--port", "0",
         "--particles", "200", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "embedded MQTT broker" in out and "dashboard and API: http://127.0.0.1:" in out
    last = [line for line in out.splitlines() if "stored readings" in line][-1]
    numbers = dict(part.strip().rsplit(" ", 1) for part in last.split("]", 1)[1].replace(";", ",").split(",")[:5])
    # the live filter falls behind a 72 h stream replayed in 50 s on 2 cores (docs/BENCHMARKS.md), but it runs
    assert int(numbers["stored readings"]) > 1000 and int(numbers["assimilated"]) > 100, last
    assert "invalid_field" in out  # the faulty device was told why
    assert "ALERT" in out  # the policy raised at least one alert while the demo ran
    # the compiled kernels were kept for the next start (MIPD_JAX_COMPILATION_CACHE)
    assert len(list((tmp_path / "jax-cache").iterdir())) >= 5


def test_a_new_demo_starts_from_empty_stores_and_keeps_the_compiled_kernels(tmp_path):
    """Every demo simulates the same patients up to now: a rerun must not stack a second
    stream onto the first run's data, but it should reuse the first run's compiled kernels."""
    from mipdstream.config import Settings
    from mipdstream.demo import clear_previous_run

    settings = Settings(data_dir=tmp_path)
    stores = [settings.sqlite_path, settings.service_db_path, settings.registry_path]
    written = [p.with_name(p.name + suffix) for p in stores for suffix in ("", "-wal", "-shm")]
    kernel = tmp_path / "jax-cache" / "jit_step-0123"
    kernel.parent.mkdir()
    for path in written + [kernel]:
        path.write_bytes(b"x")
    assert sorted(clear_previous_run(settings)) == sorted(written)
    assert not any(p.exists() for p in written) and kernel.exists()
    assert clear_previous_run(settings) == []  # nothing left to remove


def test_grafana_provisioning_points_at_the_influxdb_datasource():
    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/influxdb.yml").read_text())["datasources"]
    uids = {d["uid"] for d in datasources}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/mipd-patient.json").read_text())
    used = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert used <= uids
    # every query reads a measurement the service writes
    queries = " ".join(t["query"] for p in dashboard["panels"] for t in p["targets"])
    for measurement in ("reading", "dose", "dead_letter", "posterior", "alert"):
        assert f'FROM "{measurement}"' in queries


def test_production_mosquitto_config_runs_in_a_real_mosquitto(tmp_path, monkeypatch):
    """deploy/mosquitto/mosquitto.conf with generated auth files and a test certificate: the
    service user connects, an anonymous client is refused, and ingest (its own network loop,
    ingest.mqtt.SelectLoop) stores what a device publishes, both over TLS."""
    import shutil

    from ingest.broker import free_port
    from ingest.broker_auth import BrokerUser, hash_password, write_broker_files
    from ingest.consumer import IngestConsumer
    from ingest.mqtt import connect
    from ingest.registry import Registry
    from ingest.sqlite_store import SqliteStore
    from tests.conftest import services_required
    from tests.publishing import AckedPublisher, reading, wait_until
    from tests.servers import MOSQUITTO, _wait_port

    if MOSQUITTO is None or shutil.which("openssl") is None:
        if services_required():
            pytest.fail("MIPD_REQUIRE_SERVICES=1 but mosquitto or openssl is missing")
        pytest.skip("mosquitto or openssl missing")
    write_broker_files([BrokerUser("svc-mipd", "service", hash_password("pw")),
                        BrokerUser("cgm-1", "device", hash_password("pw"))], tmp_path / "auth")
    (tmp_path / "certs").mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(tmp_path / "certs/server.key"), "-out", str(tmp_path / "certs/server.crt")],
                   check=True, capture_output=True)
    shutil.copy(tmp_path / "certs/server.crt", tmp_path / "certs/ca.crt")
    plain, tls = free_port(), free_port()
    config = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    config = config.replace("/mosquitto/", f"{tmp_path}/").replace("listener 1883", f"listener {plain} 127.0.0.1")
    config = config.replace("listener 8883", f"listener {tls} 127.0.0.1")
    (tmp_path / "data").mkdir()
    (tmp_path / "mosquitto.conf").write_text("user root\n" + config)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")], stderr=subprocess.PIPE)
    try:
        _wait_port(plain, proc, 10, "mosquitto")
        _wait_port(tls, proc, 10, "mosquitto (TLS)")
        client, _ = connect(f"mqtt://svc-mipd:pw@127.0.0.1:{plain}", "svc", protocol="5")
        client.disconnect()
        with pytest.raises(ConnectionError):
            connect(f"mqtt://127.0.0.1:{plain}", "anonymous", protocol="5", timeout=3)
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "certs/ca.crt"))  # trust the test certificate
        registry = Registry(tmp_path / "registry.sqlite")
        registry.register_device("cgm-1", "biosensor")
        registry.enroll("cgm-1", "patient-T", time.time() - 3600)
        store = SqliteStore(tmp_path / "store.sqlite")
        consumer = IngestConsumer(f"mqtts://svc-mipd:pw@localhost:{tls}", store, registry, protocol="5").start()
        device = AckedPublisher(f"mqtts://cgm-1:pw@localhost:{tls}", "cgm-1", protocol="5")
        device.publish_readings(("cgm-1", reading("cgm-1", i, time.time() - 60 + i * 0.01)) for i in range(500))
        device.close()
        try:
            assert len(device.acked) == 500
            assert wait_until(lambda: len(store.readings("patient-T")) == 500, timeout=30)
        finally:
            consumer.stop()
            store.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_every_setting_is_documented_in_config_md():
    from mipdstream.config import describe

    documented = (ROOT / "docs" / "CONFIG.md").read_text()
    missing = [name for name, _, _ in describe() if f"`{name}`" not in documented]
    assert not missing, f"run `mipd config --markdown` into docs/CONFIG.md; missing {missing}"
