"""Shared fixtures: real Mosquitto, real influxd and the embedded broker, each on a free port."""

from __future__ import annotations

import gc
import sys

import pytest

from ingest.broker import EmbeddedBroker
from tests.servers import Influxd, Mosquitto, ServiceMissing, services_required


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every XLA:CPU executable holds a few memory mappings; one process running the whole suite
    compiles thousands of programs and crossed the kernel's vm.max_map_count (65,530) near its
    end, where LLVM then crashed with a segfault instead of an error. Programs are
    rarely shared between modules, so recompiling the few that are costs little.
    """
    yield
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.clear_caches()
        gc.collect()


def _start_or_skip(factory):
    try:
        return factory().start()
    except ServiceMissing as missing:
        if services_required():
            pytest.fail(f"MIPD_REQUIRE_SERVICES=1 but {missing}")
        pytest.skip(str(missing))


@pytest.fixture
def mosquitto(tmp_path_factory):
    """A running Mosquitto 2 (MQTT 5 and 3.1.1) with a generated config; `.url`, `.stop()`, `.start()`."""
    server = _start_or_skip(lambda: Mosquitto(tmp_path_factory.mktemp("mosquitto")))
    yield server
    server.stop()


@pytest.fixture
def influxd(tmp_path_factory):
    """A running influxd 1.x serving `/write` and `/query`; `.url`, `.stop()`, `.start()`."""
    server = _start_or_skip(lambda: Influxd(tmp_path_factory.mktemp("influxd")))
    yield server
    server.stop()


@pytest.fixture
def embedded_broker():
    """The in-process amqtt broker the demo uses (MQTT 3.1.1); `.url`."""
    with EmbeddedBroker() as broker:
        yield broker
