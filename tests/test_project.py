"""Project-level promises: the compose file parses and names what exists; the CLI answers;
the pure numerics packages import no I/O library."""

import ast
import pathlib
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_compose_file_services_and_mounted_files_exist():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"mosquitto", "influxdb", "ingest"} <= set(compose["services"])
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), source
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").exists()


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


def test_demo_runs_on_the_embedded_default(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mipdstream.cli", "demo", "--duration", "5", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "embedded MQTT broker" in result.stdout
    last = [line for line in result.stdout.splitlines() if "stored readings" in line][-1]
    counts = [int(part.split(":")[1].strip().rstrip(";").split(";")[0]) for part in last.split("stored readings")[1].split(",")[:3]]
    assert all(c > 0 for c in counts), last
    assert "invalid_field" in result.stdout  # the faulty device was told why
