"""Truth models: the library-backed one and the self-contained one obey mass balance and the
library's own prior, and a cohort drawn from the library model is valid on the wire."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from device_simulators.cohort import CohortConfig, merged_messages, simulate_cohort
from device_simulators.dosing import AdministeredDose, ScheduledDose
from device_simulators.truth_models import truth_model
from device_simulators.vancomycin_model import OneCompartmentVancomycin
from tests.simulators.scoring import readings_by_device

NOW = time.time()
T0 = NOW - 30 * 86400.0


def _single_infusion(amount=1000.0, duration_s=3600.0) -> list[AdministeredDose]:
    scheduled = ScheduledDose(T0, "vancomycin", amount, "iv_infusion", duration_s)
    return [AdministeredDose(scheduled, T0, duration_s, True)]


def _auc_mg_h_per_l(model, parameters, covariates, doses, code="20578-1", hours=600.0) -> float:
    times = T0 + np.linspace(0.0, hours * 3600.0, 30001)
    concentration = model.trajectories(parameters, covariates, doses, times)[code]
    return float(np.trapezoid(concentration, (times - T0) / 3600.0))


@pytest.fixture(scope="module")
def library_vancomycin():
    pytest.importorskip("jax")
    return truth_model("vancomycin")


def test_library_model_conserves_mass_auc_equals_dose_over_clearance(library_vancomycin):
    model = library_vancomycin
    covariates = model.sample_covariates(np.random.default_rng(1))
    parameters = model.sample_parameters(covariates, np.random.default_rng(2))
    auc = _auc_mg_h_per_l(model, parameters, covariates, _single_infusion(1000.0))
    assert auc == pytest.approx(1000.0 / parameters["CL"], rel=0.02)
    # a missed dose contributes nothing
    missed = [AdministeredDose(_single_infusion()[0].scheduled, T0, 0.0, False)]
    assert _auc_mg_h_per_l(model, parameters, covariates, missed, hours=10) == 0.0


def test_library_model_draws_parameters_from_the_library_prior(library_vancomycin):
    from assimilation.parameters import prior_mean

    model = library_vancomycin
    population = model.model.population
    covariates = model.sample_covariates(np.random.default_rng(0))
    rng = np.random.default_rng(3)
    draws = np.log([[model.sample_parameters(covariates, rng)[n] for n in population.names] for _ in range(3000)])
    assert np.allclose(draws.mean(axis=0), prior_mean(population, covariates), atol=0.03)
    # 4 sampling SDs of each covariance entry: Var(s_ij) = (ω_ii ω_jj + ω_ij²) / n for normal draws
    omega = population.omega
    tolerance = 4.0 * np.sqrt((np.outer(np.diag(omega), np.diag(omega)) + omega**2) / len(draws)) + 1e-9
    assert (np.abs(np.cov(draws.T) - omega) <= tolerance).all()


def test_library_model_readings_are_unsorted_time_safe(library_vancomycin):
    model = library_vancomycin
    covariates = model.sample_covariates(np.random.default_rng(1))
    parameters = model.sample_parameters(covariates, np.random.default_rng(2))
    times = T0 + np.array([7200.0, 600.0, 36000.0, 1800.0])
    shuffled = model.trajectories(parameters, covariates, _single_infusion(), times)["20578-1"]
    ordered = model.trajectories(parameters, covariates, _single_infusion(), np.sort(times))["20578-1"]
    assert np.allclose(shuffled, ordered[np.argsort(np.argsort(times))])


def test_library_cohort_messages_are_valid_on_the_wire(library_vancomycin):
    cohort = simulate_cohort(library_vancomycin, 3, NOW - 86400.0 - 3600.0, 86400.0, seed=1)
    readings = readings_by_device(merged_messages(cohort), NOW)
    assert sum(len(r) for r in readings.values()) > 3 * 200
    assert {p.devices["biosensor"] for p in cohort} <= set(readings)


def test_closed_form_vancomycin_conserves_mass():
    model = OneCompartmentVancomycin()
    covariates = model.sample_covariates(np.random.default_rng(4))
    parameters = model.sample_parameters(covariates, np.random.default_rng(5))
    auc = _auc_mg_h_per_l(model, parameters, covariates, _single_infusion(1500.0, 5400.0))
    assert auc == pytest.approx(1500.0 / parameters["cl_l_h"], rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("name, analyte, drug, days", [
    ("docetaxel_friberg", "751-8", "docetaxel", 7.0),
    ("warfarin_hamberg", "34714-6", "warfarin", 3.0),
])
def test_other_library_models_get_the_right_devices_and_valid_messages(name, analyte, drug, days):
    """No vancomycin biosensor on a docetaxel patient: the meter measures the model's analyte."""
    pytest.importorskip("jax")
    try:
        model = truth_model(name)
    except ValueError as missing:
        pytest.skip(str(missing))
    config = CohortConfig(truth_grid_s=3600.0)
    cohort = simulate_cohort(model, 1, NOW - days * 86400.0 - 3600.0, days * 86400.0, seed=2, config=config)
    patient = cohort[0]
    assert "biosensor" not in patient.devices
    readings = readings_by_device(merged_messages(cohort), NOW)[patient.devices["meter"]]
    assert len(readings) >= 2 and {r.reading.n for r in readings} == {analyte}
    truth = np.interp([r.reading.t for r in readings], patient.truth_times, patient.truth[analyte])
    assert np.allclose([r.value for r in readings], truth, rtol=0.5)  # the meter reads this patient's level
    doses = [json.loads(m.payload) for m in patient.messages if m.topic.endswith("/dose")]
    assert doses and {d["drug"] for d in doses} == {drug}


def test_library_vancomycin_patient_decides_the_biosensor_lag_ratio_and_gain(library_vancomycin):
    if "keo" not in library_vancomycin.model.population.names:
        pytest.skip("the library's vancomycin model has no effect compartment yet")
    patient = simulate_cohort(library_vancomycin, 1, NOW - 86400.0 - 3600.0, 86400.0, seed=3)[0]
    sensor = patient.device_truth[patient.devices["biosensor"]]
    assert sensor["params"]["lag_tau_s"] == pytest.approx(3600.0 / patient.parameters["keo"])
    assert sensor["params"]["isf_ratio"] == pytest.approx(patient.parameters["R_isf"])
    assert sensor["calibration"]["gain"] == pytest.approx(patient.parameters["bias"])


def test_a_worn_out_biosensor_is_replaced_by_a_new_device_with_its_own_calibration_and_drift(library_vancomycin):
    """wear_s = 1 day over 3 days: three ISF devices, each reading only while it is worn (after
    its own warm-up), the first with the patient's bias and drift, the next ones with fresh
    draws of both; the gain of each restarts at its calibration (values / latent level right
    after insertion match the new sensor's gain, not the old sensor's aged one)."""
    from dataclasses import replace

    from device_simulators.biosensor import BiosensorParams

    day = 86400.0
    config = CohortConfig(biosensor=replace(BiosensorParams(), wear_s=day, noise_sd=0.0, noise_cv=0.0, calibration_offset_sd=0.0,
                                            spike_probability=0.0, resolution=0.0), drug_meter=None, creatinine_meter=None)
    start = NOW - 3 * day - 3600.0
    patient = simulate_cohort(library_vancomycin, 1, start, 3 * day, seed=4, config=config)[0]
    sensors = [patient.devices[role] for role in ("biosensor", "biosensor-2", "biosensor-3")]
    assert len(set(sensors)) == 3 and "biosensor-4" not in patient.devices
    readings = readings_by_device(merged_messages([patient]), NOW)
    truths = [patient.device_truth[s] for s in sensors]
    assert [t["inserted_t"] for t in truths] == pytest.approx([start, start + day, start + 2 * day])
    assert truths[0]["calibration"]["gain"] == pytest.approx(patient.parameters["bias"])
    assert len({t["calibration"]["gain"] for t in truths}) == 3 and len({t["params"]["drift_per_day"] for t in truths}) == 3
    for sensor, truth in zip(sensors, truths):
        times = np.array([r.reading.t for r in readings[sensor]])
        worn = truth["inserted_t"] + truth["params"]["warmup_s"] - 1e-3, truth["inserted_t"] + day  # the wire keeps ms
        assert worn[0] <= times.min() and times.max() < worn[1]
        latent = np.interp(times, patient.truth_times, patient.truth["x-mipd-vancomycin-isf"])
        ratio = np.array([r.value for r in readings[sensor]]) / latent
        days = (times - truth["inserted_t"]) / day
        expected = truth["calibration"]["gain"] * (1.0 + truth["params"]["drift_per_day"] * days)
        np.testing.assert_allclose(ratio[latent > 2.0], expected[latent > 2.0], rtol=0.03)  # 5-min truth grid


@pytest.mark.parametrize("name", ["vancomycin", "warfarin_hamberg"])
def test_library_model_computed_in_pieces_equals_one_pass(name):
    """The simulator runs long time grids through its jitted forward model in fixed-size pieces
    (one compiled shape per model); the pieces must join up exactly as one pass of `amounts_at`."""
    import jax.numpy as jnp

    from assimilation import Dose
    from assimilation.simulate import amounts_at, dose_table_of, predict_readings

    model = truth_model(name)
    covariates = model.sample_covariates(np.random.default_rng(4))
    parameters = model.sample_parameters(covariates, np.random.default_rng(5))
    scheduled = model.regimen(covariates, T0, T0 + 10 * 86400.0)
    doses = [AdministeredDose(s, s.t, s.duration_s, True) for s in scheduled]
    times = T0 + np.linspace(0.0, 10 * 86400.0, 2500)  # three pieces
    ours = model.trajectories(parameters, covariates, doses, times)[model.plasma_analyte]

    library = model.model
    log_params = jnp.log(jnp.asarray([parameters[n] for n in library.population.names], jnp.float32))
    log_params = jnp.concatenate([log_params, jnp.zeros(library.n_parameters - log_params.size, jnp.float32)])
    table = dose_table_of(library, [Dose((d.t - T0) / 3600.0, d.amount_mg, library.dose_compartment, d.duration_s / 3600.0)
                                    for d in doses])
    amounts = amounts_at(library, log_params, table, jnp.asarray((times - T0) / 3600.0, jnp.float32))
    column = [a.name.lower() for a in library.analytes].index(next(k for k, v in model.binding.analyte_codes.items()
                                                                     if v == model.plasma_analyte))
    reference = np.array([predict_readings(library, library.parameters(log_params), x)[column] for x in amounts])
    np.testing.assert_allclose(ours, np.maximum(reference, 0.0), rtol=1e-4, atol=1e-4)  # float32 sums
