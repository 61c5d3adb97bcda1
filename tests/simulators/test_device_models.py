"""The virtual devices err exactly as their models say: readings scored against the ground truth
(the JSON-lines file a run writes) show the stated noise, lag, calibration bias, drift, spikes and
losses; dose devices are late and miss doses at the stated rates. Statistical checks use sample
sizes where the tolerance is several standard errors wide, and fixed seeds."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from device_simulators.biosensor import Biosensor, BiosensorParams
from device_simulators.cohort import CohortConfig, merged_messages, read_ground_truth, simulate_cohort, write_ground_truth
from device_simulators.device import DeviceIdentity
from device_simulators.dosing import every
from device_simulators.infusion_pump import InfusionPump, InfusionPumpParams
from device_simulators.pillbox import Pillbox, PillboxParams
from device_simulators.poc_meter import POC_PRESETS
from device_simulators.trajectory import first_order_lag, from_arrays
from device_simulators.vancomycin_model import OneCompartmentVancomycin
from tests.simulators.scoring import doses_by_device, readings_by_device, series, truth_at

NOW = time.time()
DAY = 86400.0
ISF = "x-mipd-vancomycin-isf"
PLASMA = "20578-1"


def _cohort(tmp_path, biosensor: BiosensorParams, patients=8, days=2.0, seed=11, **config):
    """A cohort ending an hour ago, its messages and its ground truth read back from the file."""
    start = NOW - days * DAY - 3600.0
    cfg = CohortConfig(biosensor=biosensor, truth_grid_s=60.0, **config)
    cohort = simulate_cohort(OneCompartmentVancomycin(), patients, start, days * DAY, seed, cfg)
    truth = read_ground_truth(write_ground_truth(cohort, tmp_path / "truth.jsonl"))
    return start, merged_messages(cohort), truth


def _biosensor_scores(tmp_path, params: BiosensorParams, **kw):
    """Per sensor: (truth record, reading times, values, latent ISF, model SD of the noise)."""
    start, messages, truth = _cohort(tmp_path, params, **kw)
    readings = readings_by_device(messages, NOW)
    out = []
    for patient in truth:
        sensor = patient["devices"]["biosensor"]
        t, v, _ = series(readings[sensor], ISF)
        latent = truth_at(patient, ISF, t)
        cal = patient["device_truth"][sensor]["calibration"]
        days = (t - start) / DAY
        signal = cal["gain"] * (1 + params.drift_per_day * days) * latent + cal["offset"]
        sd = np.sqrt(params.noise_sd**2 + (params.noise_cv * signal) ** 2)
        out.append((patient, t, v, latent, signal, sd))
    return start, out


QUIET = BiosensorParams(spike_probability=0.0, loss_probability=0.0, gaps_per_day=0.0, loq=0.1)


def test_biosensor_noise_has_the_stated_sd_around_the_calibrated_latent_level(tmp_path):
    _, sensors = _biosensor_scores(tmp_path, QUIET)
    z = np.concatenate([(v - signal) / sd for _, _, v, _, signal, sd in sensors])
    assert len(z) > 3000
    assert abs(z.mean()) < 0.06  # SE 1/sqrt(n) ~ 0.017
    assert z.std() == pytest.approx(1.0, abs=0.05)
    # and the noise is what makes the difference: against the uncalibrated latent level it is worse
    raw = np.concatenate([(v - latent) / sd for _, _, v, latent, _, sd in sensors])
    assert raw.std() > z.std() * 1.1


def test_biosensor_readings_lag_plasma_by_the_stated_time_constant(tmp_path):
    """Fit the lag from plasma truth alone: regress each sensor's readings on lagged plasma
    (free gain, drift, offset) for candidate time constants; the best one is the model's."""
    params = replace(QUIET, lag_tau_s=1200.0, noise_sd=0.5, noise_cv=0.03)
    start, sensors = _biosensor_scores(tmp_path, params)
    candidates = [0.0, 300.0, 600.0, 900.0, 1200.0, 1500.0, 1800.0, 2700.0]
    sse = []
    for tau in candidates:
        total = 0.0
        for patient, t, v, *_ in sensors:
            plasma = from_arrays(np.asarray(patient["times"]), np.asarray(patient["trajectories"][PLASMA]))
            lagged = first_order_lag(plasma, np.concatenate([[start], t]), tau)[1:]
            days = (t - start) / DAY
            design = np.column_stack([lagged, lagged * days, np.ones_like(t)])
            _, residual, *_ = np.linalg.lstsq(design, v, rcond=None)
            total += float(residual[0])
        sse.append(total)
    best = candidates[int(np.argmin(sse))]
    assert best in (900.0, 1200.0, 1500.0), dict(zip(candidates, sse))
    assert min(sse) < 0.8 * sse[0]  # no lag fits clearly worse


def test_biosensor_calibration_bias_and_drift_are_recovered_from_the_readings(tmp_path):
    params = replace(QUIET, drift_per_day=-0.05, calibration_gain_sd=0.08, calibration_offset_sd=1.0)
    start, sensors = _biosensor_scores(tmp_path, params, days=3.0)
    drifts = []
    for patient, t, v, latent, *_ in sensors:
        days = (t - start) / DAY
        design = np.column_stack([latent, latent * days, np.ones_like(t)])
        (gain, gain_drift, offset), *_ = np.linalg.lstsq(design, v, rcond=None)
        cal = patient["device_truth"][patient["devices"]["biosensor"]]["calibration"]
        assert gain == pytest.approx(cal["gain"], abs=0.03)
        assert offset == pytest.approx(cal["offset"], abs=0.5)
        drifts.append(gain_drift / gain)
    assert np.mean(drifts) == pytest.approx(-0.05, abs=0.01)


def test_calibration_errors_are_drawn_with_the_stated_sd():
    params = BiosensorParams(calibration_gain_sd=0.05, calibration_offset_sd=0.5)
    sensors = [Biosensor(DeviceIdentity(f"s-{i}"), params, np.random.default_rng(i)) for i in range(2000)]
    gains = np.array([s.calibration.gain for s in sensors])
    offsets = np.array([s.calibration.offset for s in sensors])
    assert gains.mean() == pytest.approx(1.0, abs=0.005)
    assert gains.std() == pytest.approx(0.05, rel=0.08)
    assert offsets.std() == pytest.approx(0.5, rel=0.08)


def test_biosensor_warm_up_losses_gaps_and_spikes(tmp_path):
    params = BiosensorParams(warmup_s=7200.0, loss_probability=0.1, gaps_per_day=0.0, spike_probability=0.04,
                             spike_scale=30.0, loq=0.1)
    start, sensors = _biosensor_scores(tmp_path, params, days=2.0, patients=10)
    scheduled = len(np.arange(start + 7200.0, start + 2 * DAY, params.cadence_s))
    counts = np.array([len(t) for _, t, *_ in sensors])
    assert all(t.min() >= start + 7200.0 - 1e-3 for _, t, *_ in sensors)
    assert counts.sum() / (scheduled * len(sensors)) == pytest.approx(0.9, abs=0.015)  # SE ~0.004
    z = np.concatenate([(v - signal) / sd for _, _, v, _, signal, sd in sensors])
    # a spike is +-Exp(30 mg/L); P(|spike| > 6 SD ~ 7.5-11 mg/L) ~ exp(-0.3) ~ 0.75
    outliers = np.mean(np.abs(z) > 6)
    assert outliers == pytest.approx(0.04 * 0.75, abs=0.01)

    _, gappy = _biosensor_scores(tmp_path, replace(params, loss_probability=0.0, spike_probability=0.0,
                                                   gaps_per_day=3.0, gap_mean_s=3600.0), days=2.0, patients=10)
    steps = np.concatenate([np.diff(t) for _, t, *_ in gappy])
    assert np.sum(steps > 1.5 * params.cadence_s) >= 20  # ~60 dropouts expected
    assert np.mean(steps > 1.5 * params.cadence_s) < 0.05


def test_point_of_care_meter_has_the_stated_error_against_plasma_truth(tmp_path):
    meter = POC_PRESETS["vancomycin"]
    start, messages, truth = _cohort(tmp_path, None, patients=80, days=2.0, seed=3)
    readings = readings_by_device(messages, NOW)
    z = []
    for patient in truth:
        t, v, bloq = series(readings[patient["devices"]["meter"]], PLASMA)
        true = truth_at(patient, PLASMA, t)
        keep = ~bloq
        z.append((v[keep] - true[keep]) / np.sqrt(meter.noise_sd**2 + (meter.noise_cv * true[keep]) ** 2))
        # creatinine is measured once a day on the same meter
        t_scr, v_scr, _ = series(readings[patient["devices"]["meter"]], "2160-0")
        assert len(t_scr) <= 2 and np.all(np.abs(v_scr - patient["covariates"]["scr_mg_dl"]) < 0.5)
    z = np.concatenate(z)
    assert len(z) > 200
    assert abs(z.mean()) < 0.2
    assert z.std() == pytest.approx(1.0, abs=0.12)


def test_infusion_pump_is_late_and_misses_doses_at_the_stated_rates():
    params = InfusionPumpParams(delay_mean_s=600.0, late_probability=0.1, late_mean_s=5400.0, missed_probability=0.05)
    schedule = every(NOW - 400 * DAY, 12 * 3600.0, NOW - DAY, "vancomycin", 1000.0, "iv_infusion", 3600.0)
    pump = InfusionPump(DeviceIdentity("pump-1"), params, np.random.default_rng(5))
    given = pump.administer(schedule)
    missed = np.array([not d.given for d in given])
    assert missed.mean() == pytest.approx(0.05, abs=0.015)  # n=798, SE 0.008
    delays = np.array([d.t - d.scheduled.t for d in given if d.given])
    assert delays.min() >= 0
    assert delays.mean() == pytest.approx(600.0 + 0.1 * 5400.0, rel=0.15)
    # the wire carries what really happened: start, planned time, infusion duration
    doses = doses_by_device(pump.messages(given), NOW)["pump-1"]
    assert len(doses) == (~missed).sum()
    for sent, truth in zip(doses, [d for d in given if d.given]):
        assert sent.dose.t == pytest.approx(truth.t, abs=1e-3)
        assert sent.dose.scheduled_t == pytest.approx(truth.scheduled.t, abs=1e-3)
        assert sent.dose.dur == pytest.approx(truth.duration_s, abs=1e-3)
        assert sent.amount_mg == 1000.0 and sent.dose.route == "iv_infusion"


def test_pillbox_reports_late_and_missed_doses():
    params = PillboxParams(missed_probability=0.1, late_probability=0.2)
    schedule = every(NOW - 300 * DAY, DAY, NOW - DAY, "warfarin", 5.0, "oral")
    box = Pillbox(DeviceIdentity("box-1"), params, np.random.default_rng(8))
    given = box.administer(schedule)
    doses = doses_by_device(box.messages(given), NOW)["box-1"]
    statuses = np.array([d.dose.status for d in doses])
    assert len(doses) == len(schedule)  # a missed dose is reported too
    assert (statuses == "missed").sum() == sum(not d.given for d in given)
    assert np.mean(statuses == "missed") == pytest.approx(0.1 + 0.2 * np.exp(-6 / 3), abs=0.05)
    late = [d.dose.t - d.dose.scheduled_t for d in doses if d.dose.status == "administered"]
    # late (0.2) by |N(0, 15 min)| + Exp(3 h), taken if within 6 h and not missed (0.9):
    # 0.2 * 0.9 * P(1 h < offset <= 6 h) ~ 0.2 * 0.9 * (0.72 - 0.135) ~ 0.105 of all doses,
    # ~0.12 of those taken
    assert np.mean(np.array(late) > 3600) == pytest.approx(0.12, abs=0.05)


def test_every_message_of_a_cohort_is_valid_on_the_wire_and_ids_are_unique(tmp_path):
    start, messages, truth = _cohort(tmp_path, BiosensorParams(), patients=5, days=1.0)
    readings = readings_by_device(messages, NOW)  # asserts each one validates
    doses = doses_by_device(messages, NOW)
    ids = [(device, r.reading.id) for device, rs in readings.items() for r in rs]
    ids += [(device, d.dose.id) for device, ds in doses.items() for d in ds]
    assert len(ids) == len(set(ids))
    for device, rs in readings.items():
        assert [r.reading.seq for r in rs] == sorted(r.reading.seq for r in rs)
    assert {p["devices"]["dosing"] for p in truth} == set(doses)


def test_the_seed_decides_everything_and_patient_i_does_not_depend_on_cohort_size():
    start = NOW - 2 * DAY
    small = simulate_cohort(OneCompartmentVancomycin(), 3, start, DAY, seed=42)
    large = simulate_cohort(OneCompartmentVancomycin(), 6, start, DAY, seed=42)
    other = simulate_cohort(OneCompartmentVancomycin(), 3, start, DAY, seed=43)
    assert [p.messages for p in small] == [p.messages for p in large[:3]]
    assert small[0].parameters != other[0].parameters


def test_covariates_follow_their_stated_distributions():
    from device_simulators.covariates import cockcroft_gault_ml_min, sample_ward_patient

    rng = np.random.default_rng(0)
    patients = [sample_ward_patient(rng) for _ in range(4000)]
    age = np.array([p["age_y"] for p in patients])
    female = np.array([p["female"] for p in patients])
    weight = np.array([p["weight_kg"] for p in patients])
    assert age.mean() == pytest.approx(60, abs=1.0) and age.min() >= 18 and age.max() <= 95
    assert female.mean() == pytest.approx(0.5, abs=0.03)
    assert weight[female == 1].mean() == pytest.approx(70, abs=1.5)
    assert weight[female == 0].mean() == pytest.approx(82, abs=1.5)
    p = patients[0]
    assert p["CRCL"] == p["crcl_ml_min"] == cockcroft_gault_ml_min(p["age_y"], p["weight_kg"], p["scr_mg_dl"], bool(p["female"]))
    assert np.mean([p["VKORC1"] == "A/A" for p in patients]) == pytest.approx(0.16, abs=0.02)


def test_first_order_lag_matches_the_exact_step_response():
    tau = 900.0
    step = lambda t: np.where(np.asarray(t) >= 0.0, 10.0, 0.0)  # noqa: E731
    t = np.linspace(0.0, 5000.0, 51)
    y = first_order_lag(step, np.concatenate([[-1e-9], t]), tau, step_s=10.0)[1:]
    assert np.allclose(y, 10.0 * (1 - np.exp(-t / tau)), atol=0.1)


def test_clock_skew_shows_in_the_payload_and_is_recorded_in_the_ground_truth(tmp_path):
    start, messages, truth = _cohort(tmp_path, None, patients=6, days=1.0, clock_offset_sd_s=120.0)
    doses = doses_by_device(messages, NOW + 3600)
    offsets = []
    for patient in truth:
        pump = patient["devices"]["dosing"]
        clock = patient["device_truth"][pump]["clock"]
        given = [d for d in patient["doses"] if d["given"]]
        sent = doses[pump]
        assert len(sent) == len(given)
        for wire_dose, real in zip(sent, given):
            assert wire_dose.dose.t - real["t"] == pytest.approx(clock["offset_s"], abs=2e-3)
        offsets.append(clock["offset_s"])
    assert np.std(offsets) > 20.0  # the clocks really are off, each differently
