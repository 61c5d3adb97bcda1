"""The malformed mode covers every stateless reason of the contract, each case is rejected by the
wire validator with its documented reason, and the network faults do what they say."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from device_simulators.device import DeviceClockError
from device_simulators.faults import Faults, apply_message_faults, offline_windows
from device_simulators.malformed import malformed_cases
from device_simulators.message import Message
from device_simulators.verdict import check_message
from wire.messages import Invalid, RejectReason

NOW = time.time()
REGISTRY_REASONS = {RejectReason.UNKNOWN_DEVICE, RejectReason.NOT_ENROLLED}


def test_malformed_cases_cover_every_reason_the_message_alone_decides():
    reasons = {c.expected for c in malformed_cases("vendor-1", NOW)}
    assert reasons == set(RejectReason) - REGISTRY_REASONS
    names = [c.name for c in malformed_cases("vendor-1", NOW)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", malformed_cases("vendor-1", NOW), ids=lambda c: c.name)
def test_each_malformed_case_is_rejected_by_the_wire_validator_with_its_reason(case):
    verdict = check_message(case.topic, case.payload, received_at=NOW)
    assert not verdict.ok
    assert verdict.reasons == [case.expected], verdict.describe()
    assert case.expected.value in verdict.describe()


def test_the_same_messages_made_valid_pass():
    """Guards against cases that fail for a reason other than the one they are about."""
    good = {"id": "ok-1", "seq": 1, "t": NOW - 60, "n": "20578-1", "u": "mg/L", "v": 15.0}
    assert check_message("mipd/v1/dev/vendor-1/reading", json.dumps(good).encode(), NOW).ok
    dose = {"id": "ok-2", "seq": 2, "t": NOW - 60, "drug": "vancomycin", "amt": 1000.0, "u": "mg",
            "route": "iv_infusion", "dur": 3600.0}
    assert check_message("mipd/v1/dev/vendor-1/dose", json.dumps(dose).encode(), NOW).ok
    assert check_message("mipd/v1/dev/vendor-1/status", b'{"state":"online","battery":0.87}', NOW).ok


def test_fault_spec_parses_and_refuses_nonsense():
    faults = Faults.parse("duplicate=0.01, reorder=0.02,skew=60,offline=0.1,malformed")
    assert (faults.duplicate, faults.reorder, faults.skew, faults.offline, faults.malformed) == (0.01, 0.02, 60.0, 0.1, True)
    assert Faults.parse("") == Faults()
    with pytest.raises(ValueError):
        Faults.parse("teleport=1")
    with pytest.raises(ValueError):
        Faults.parse("duplicate=1.5")


def test_duplicates_and_reordering_happen_at_the_stated_rates():
    messages = [Message(1000.0 + i, "mipd/v1/dev/d/reading", str(i).encode()) for i in range(20000)]
    out = apply_message_faults(messages, Faults(duplicate=0.05, reorder=0.02, reorder_delay_s=50.0), np.random.default_rng(0))
    assert (len(out) - len(messages)) / len(messages) == pytest.approx(0.05, abs=0.006)
    assert {m.payload for m in out} == {m.payload for m in messages}  # nothing lost
    order = [int(m.payload) for m in out]
    overtaken = sum(1 for a, b in zip(order, order[1:]) if b < a)
    assert 0.01 * len(messages) < overtaken < 0.03 * len(messages)


def test_offline_windows_cover_the_stated_fraction():
    windows = offline_windows(0.0, 1000 * 86400.0, Faults(offline=0.2, offline_mean_s=3600.0), np.random.default_rng(1))
    covered = sum(b - a for a, b in windows) / (1000 * 86400.0)
    assert covered == pytest.approx(0.2, abs=0.02)
    assert all(b > a for a, b in windows)


def test_device_clock_offset_and_drift():
    clock = DeviceClockError(offset_s=30.0, drift_ppm=100.0, reference_t=1_800_000_000.0)
    assert clock.device_time(1_800_000_000.0) == pytest.approx(1_800_000_030.0)
    assert clock.device_time(1_800_000_000.0 + 86400.0) == pytest.approx(1_800_000_030.0 + 86400.0 * (1 + 1e-4))


def test_packs_group_each_device_upload_period_and_stay_valid():
    from device_simulators.packing import pack_uploads
    from wire.messages import parse_readings

    readings = [
        Message(NOW - 7200 + 60 * i, f"mipd/v1/dev/d{i % 2}/reading",
                json.dumps({"id": f"r{i}", "seq": i, "t": NOW - 7200 + 60 * i, "n": "20578-1", "u": "mg/L", "v": 1.0 + i}).encode())
        for i in range(100)
    ]
    packs = pack_uploads(readings, every_s=900.0)
    assert sum(m.elements for m in packs) == 100
    assert len(packs) == 2 * 7  # 100 min of readings in 15-min windows, two devices
    assert [m.sim_t for m in packs] == sorted(m.sim_t for m in packs)
    unpacked = []
    for m in packs:
        parsed = parse_readings(m.payload, NOW)
        assert len(parsed) == m.elements and all(not isinstance(p, Invalid) for p in parsed)
        assert {r.reading.id for r in parsed} <= {json.loads(x.payload)["id"] for x in readings if x.topic == m.topic}
        unpacked += [r.reading.id for r in parsed]
    assert sorted(unpacked) == sorted(f"r{i}" for i in range(100))
    assert len(pack_uploads(readings, every_s=1e9, max_elements=30)) == 2 * 2  # 50 per device, packs of <= 30
