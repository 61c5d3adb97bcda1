"""Project-level promises: the compose file parses and names what exists; the CLI answers;
imports point one way between the parts (module by module) and form no cycle."""

import ast
import json
import pathlib
import subprocess
import sys
import time
from typing import NamedTuple

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


PACKAGES = ("wire", "ingest", "assimilation", "dosing_policy", "device_simulators", "mipdstream")
IO_LIBRARIES = {"paho", "amqtt", "sqlite3", "urllib", "urllib3", "http", "socket", "fastapi", "uvicorn", "influxdb_client",
                "httpx", "requests"}
PURE_NUMERICS = ("assimilation", "dosing_policy")


class Module(NamedTuple):
    """One module of the project: what it imports (absolute names, function bodies included,
    ``if TYPE_CHECKING:`` blocks left out, since they never run) and where it reads the
    process environment or a kernel file (/sys, /proc)."""

    name: str
    imports: frozenset[str]
    environment_reads: tuple[str, ...]


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return hidden


def _environment_reads(tree: ast.AST, where: str) -> list[str]:
    """``os.environ`` / ``os.getenv`` / ``from os import environ``, and any path under /sys or /proc."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "environb", "getenv", "putenv"}:
            found.append(f"{where}:{node.lineno} os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{where}:{node.lineno} from os import {a.name}" for a in node.names if a.name in {"environ", "getenv"}]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(("/sys", "/proc")):
            found.append(f"{where}:{node.lineno} {node.value!r}")
    return found


def _parse(name: str, source: str, is_package: bool, known: set[str]) -> Module:
    """Module `name` from its `source`; `known` are the project's module names, which tell
    ``from package import submodule`` (an arrow to the submodule) from ``from module import name``."""
    tree = ast.parse(source)
    hidden = _type_checking_only(tree)
    package = name if is_package else name.rpartition(".")[0]
    imports = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            imports |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            origin = node.module
            if node.level:  # relative: `from . import x`, `from ..a import b`
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            imports |= {f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin for a in node.names}
    return Module(name, frozenset(imports), tuple(_environment_reads(tree, name)))


def _modules() -> dict[str, Module]:
    paths = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    known = {_module_name(path) for path in paths}
    modules = (_parse(_module_name(path), path.read_text(), path.name == "__init__.py", known) for path in paths)
    return {module.name: module for module in modules}


MODULES = _modules()


def _top(name: str) -> str:
    return name.split(".")[0]


def _violations(modules: dict[str, Module], package: str, forbidden: set[str]) -> list[str]:
    """Arrows from modules of `package` to a forbidden top-level package or library."""
    return sorted(f"{m.name} -> {target}" for m in modules.values() if _top(m.name) == package
                  for target in m.imports if _top(target) in forbidden)


def _cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The import graph's strongly connected components of two or more modules, each sorted
    (Tarjan's algorithm, iterative: the graph is deeper than Python's recursion is safe for)."""
    graph = {name: sorted(t for t in m.imports if t in modules and t != name) for name, m in modules.items()}
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            for position in range(child, len(graph[node])):
                target = graph[node][position]
                if target not in index:
                    work += [(node, position + 1), (target, 0)]
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.pop())
                        on_stack.discard(component[-1])
                    if len(component) > 1:
                        components.append(sorted(component))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return sorted(components)


def _without_service_to_api(modules: dict[str, Module]) -> dict[str, Module]:
    def to_api(target: str) -> bool:
        return target == "mipdstream.api" or target.startswith("mipdstream.api.")

    return {name: m._replace(imports=frozenset(t for t in m.imports if not (name.startswith("mipdstream.service") and to_api(t))))
            for name, m in modules.items()}


def test_the_layering_checks_see_relative_and_deferred_imports_and_cycles():
    source = ("import os\nfrom . import sibling\nfrom ..ingest import store\nfrom typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    import sqlite3\n"
              "def f():\n    import paho.mqtt.client\n    return os.environ, os.getenv('X'), open('/sys/kernel/x')\n")
    probe = _parse("assimilation.probe", source, False, {"assimilation.sibling", "ingest.store"})
    assert probe.imports == {"os", "assimilation.sibling", "ingest.store", "typing", "paho.mqtt.client"}
    assert [read.split(" ", 1)[1] for read in probe.environment_reads] == ["os.environ", "os.getenv", "'/sys/kernel/x'"]
    assert _violations({"assimilation.probe": probe}, "assimilation", IO_LIBRARIES | {"ingest"}) == [
        "assimilation.probe -> ingest.store", "assimilation.probe -> paho.mqtt.client"]
    ring = {f"m.{i}": Module(f"m.{i}", frozenset({f"m.{(i + 1) % 3}", "numpy"}), ()) for i in range(3)}
    tail = {"m.3": Module("m.3", frozenset({"m.0"}), ()), "m.4": Module("m.4", frozenset({"m.4"}), ())}
    assert _cycles({**ring, **tail}) == [["m.0", "m.1", "m.2"]]
    service = {"mipdstream.service.x": Module("mipdstream.service.x", frozenset({"mipdstream.api.app"}), ()),
               "mipdstream.api.app": Module("mipdstream.api.app", frozenset({"mipdstream.service.x"}), ())}
    assert len(_cycles(service)) == 1 and _cycles(_without_service_to_api(service)) == []


def test_the_wire_contract_imports_no_other_part_of_the_project():
    assert _violations(MODULES, "wire", set(PACKAGES) - {"wire"}) == []


@pytest.mark.parametrize("package", PURE_NUMERICS)
def test_the_pure_numerics_import_no_io_library_and_no_shell(package):
    assert _violations(MODULES, package, IO_LIBRARIES | {"ingest", "mipdstream", "device_simulators"}) == []


@pytest.mark.parametrize("package", PURE_NUMERICS)
def test_the_pure_numerics_read_neither_the_environment_nor_kernel_files(package):
    assert [read for m in MODULES.values() if _top(m.name) == package for read in m.environment_reads] == []


def test_simulators_speak_only_the_public_wire_contract():
    # they may draw virtual patients from the model library (pure numerics) but never reach
    # into ingest, the policy or the service
    forbidden = {"ingest", "mipdstream", "dosing_policy", "sqlite3", "influxdb_client", "fastapi"}
    assert _violations(MODULES, "device_simulators", forbidden) == []


@pytest.mark.xfail(strict=True, reason="service imports api: being untangled")
def test_the_service_does_not_import_the_api():
    assert MODULES == _without_service_to_api(MODULES)


def test_no_import_cycles_between_modules():
    # the service -> api arrows close the one known cycle and have their own test (above);
    # leaving them out keeps this test strict for every other arrow
    assert _cycles(_without_service_to_api(MODULES)) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_runs_on_the_embedded_default(tmp_path):
    """`make demo`: simulated devices -> embedded broker -> ingest -> live posteriors -> alerts."""
    result = subprocess.run(
        # 150 s: the cold start compiles every kernel of three models on 2 cores; the first alerts come
        # at 55-75 s standalone and later inside a loaded suite run (none within 100 s there)
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
