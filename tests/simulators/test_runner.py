"""`mipd simulate` (the plain function) and the clock: a run against Mosquitto writes its ground
truth, delivers everything, and an accelerated run takes the wall time its speed says."""

from __future__ import annotations

import json
import time

import pytest

from device_simulators.cli import simulate
from device_simulators.clock import SimClock
from device_simulators.runner import run_simulation
from device_simulators.vancomycin_model import OneCompartmentVancomycin
from tests.publishing import wait_until
from tests.simulators.mqtt_helpers import Collector


def test_simulate_command_publishes_everything_and_writes_the_ground_truth(mosquitto, tmp_path):
    collector = Collector(mosquitto.url)
    try:
        summary = simulate(model="vancomycin-1cmt", patients=2, speed=0.0, broker=mosquitto.url, duration_h=3.0,
                           faults=["duplicate=0.1", "malformed"], seed=4, truth_out=tmp_path / "truth.jsonl",
                           outbox_dir=tmp_path / "outbox")
        assert summary["acked"] == summary["messages"] and summary["left_in_outbox"] == 0
        assert wait_until(lambda: len(collector.messages) >= summary["messages"], 10)
        truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
        assert [p["patient"] for p in truth] == ["P00000", "P00001"]
        for patient in truth:
            assert {"cl_l_h", "v_l"} <= set(patient["parameters"])
            assert {"weight_kg", "crcl_ml_min"} <= set(patient["covariates"])
            assert len(patient["times"]) == len(patient["trajectories"]["20578-1"]) > 30
        bad = [t for t, _ in collector.messages if t.endswith("/readings") or t.endswith("/reading/extra")]
        assert len(bad) == 2  # the malformed mode's bad-topic messages went out too
    finally:
        collector.close()


def test_unknown_fault_is_a_usage_error(mosquitto):
    import typer

    with pytest.raises(typer.BadParameter):
        simulate(model="vancomycin-1cmt", patients=1, speed=0.0, broker=mosquitto.url, faults=["meteor=1"])


def test_accelerated_run_takes_duration_over_speed_in_wall_time(mosquitto, tmp_path):
    started = time.monotonic()
    summary = run_simulation(OneCompartmentVancomycin(), 1, 3600.0, mosquitto.url, None, seed=1, duration_h=1.5,
                             progress=False, outbox_path=tmp_path / "outbox", ground_truth_path=tmp_path / "truth.jsonl")
    elapsed = time.monotonic() - started
    assert summary.acked == summary.messages > 0
    assert 1.3 <= summary.wall_s and elapsed < 6.0  # 1.5 simulated hours at 3600x: 1.5 s
    # an accelerated run ends at "now": no measurement time ahead of the wall clock
    assert summary.sim_end <= time.time() + 1.0


def test_sim_clock_maps_simulated_to_wall_time():
    wall = iter([100.0, 100.0, 102.0]).__next__
    clock = SimClock(start=1_800_000_000.0, speed=60.0, wall=wall)
    assert clock.now() == 1_800_000_000.0
    assert clock.now() == 1_800_000_000.0 + 120.0
    fast = SimClock(start=1_800_000_000.0, speed=0.0)
    fast.advance_to(1_800_000_500.0)
    fast.advance_to(1_800_000_100.0)  # never backwards
    assert fast.now() == 1_800_000_500.0 and fast.wall_seconds_until(1_900_000_000.0) == 0.0


def test_unreachable_broker_is_an_error_not_a_hang(tmp_path):
    from ingest.broker import free_port

    started = time.monotonic()
    with pytest.raises(ConnectionError):
        run_simulation(OneCompartmentVancomycin(), 1, 0.0, f"mqtt://127.0.0.1:{free_port()}", None, duration_h=1.0,
                       progress=False, outbox_path=tmp_path / "outbox", ground_truth_path=tmp_path / "truth.jsonl", connect_timeout_s=1.0)
    assert time.monotonic() - started < 10
