"""Structural invariants of the closed-loop benchmark (benchmarks/closedloop.py) on a handful
of patients: same truth in every arm, fractions that add up, the weight-based rule as stated,
a filter with no readings dosing as from its prior, decision AUCs that match a simulation."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from assimilation import Dose, load_model
from assimilation.online import init, update

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cl():
    spec = importlib.util.spec_from_file_location("closedloop_under_test", ROOT / "benchmarks" / "closedloop.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cohort(cl):
    return cl.make_cohort(4, 11, ("vancomycin_thomson", "vancomycin"))


def test_truth_does_not_depend_on_the_truth_selection_and_arms_share_it(cl, cohort):
    alone = cl.make_cohort(4, 11, ("vancomycin_thomson",))
    np.testing.assert_array_equal(alone.truth_log_params["vancomycin_thomson"], cohort.truth_log_params["vancomycin_thomson"])
    np.testing.assert_array_equal(alone.level_z, cohort.level_z)
    assert not np.allclose(cohort.truth_log_params["vancomycin"], cohort.truth_log_params["vancomycin_thomson"])
    a = cl.run_arm("weight_based", "vancomycin_thomson", cohort, 11, 0, 0, log=lambda s: None)
    b = cl.run_arm("trough_guided", "vancomycin_thomson", cohort, 11, 0, 0, log=lambda s: None)
    # same patients, same first 36 h of doses (the trough arm acts from the 35.5 h trough on): same true day-1 AUC
    np.testing.assert_allclose(a.auc[:, 0], b.auc[:, 0], rtol=1e-6)
    assert np.all(b.plasma_levels == len(cl.TROUGH_TIMES)) and np.all(a.plasma_levels == 0)


def test_weight_based_doses_are_25_then_15_mg_per_kg_q12h_rounded_to_250(cl, cohort):
    result = cl.run_arm("weight_based", "vancomycin", cohort, 11, 0, 0, log=lambda s: None)
    for c, doses in zip(cohort.covariates, result.doses):
        load = min(3000.0, max(500.0, 250.0 * round(25.0 * c["WT"] / 250.0)))
        maintenance = min(3000.0, max(500.0, 250.0 * round(15.0 * c["WT"] / 250.0)))
        assert [d.time for d in doses] == [0.0, 12.0, 24.0, 36.0, 48.0, 60.0]
        assert doses[0].amount == load and all(d.amount == maintenance for d in doses[1:])
        assert all(d.amount / d.duration <= 600.0 + 1e-9 and d.duration >= 1.0 for d in doses)  # <= 10 mg/min, >= 1 h


def test_rows_fractions_add_up_and_wilson_intervals_bracket_them(cl):
    auc = np.array([[350.0, 450.0, 650.0], [500.0, 610.0, 399.0], [400.0, 600.0, 601.0], [700.0, 300.0, 500.0]])
    result = cl.ArmResult(auc, [[]] * 4, np.array([3, 3, 3, 3]), np.array([10, 0, 0, 0]), np.zeros(4, int))
    rows = cl.rows_of("filter", "vancomycin_thomson", result, 0)
    assert [r["day"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert math.isclose(r["in_range"] + r["above_600"] + r["below_400"], 1.0)
        for key in ("in_range", "above_600", "below_400"):
            low, high = r[key + "_ci95"]
            assert 0.0 <= low <= r[key] <= high <= 1.0
    assert rows[0]["in_range"] == 0.5 and rows[2]["above_600"] == 0.5  # 400 and 600 are in range
    assert rows[0]["samples_per_patient"] == 3 + 2.5
    assert cl.wilson(0, 10)[0] == 0.0 and math.isclose(cl.wilson(10, 10)[1], 1.0)


def test_paired_difference_is_agrestis_interval_for_dependent_proportions(cl):
    # 10 patients: both arms in range for 3, only the first for 3, only the second for 1, neither for 3.
    first = np.array([500.0] * 3 + [500.0] * 3 + [700.0] * 1 + [300.0] * 3)
    second = np.array([500.0] * 3 + [350.0] * 3 + [450.0] * 1 + [650.0] * 3)
    diff, low, high = cl.paired_difference(first, second)
    # Agresti, Categorical Data Analysis, 10.1: var = [(p12 + p21) - (p12 - p21)^2] / n
    p12, p21, n = 0.3, 0.1, 10
    se = math.sqrt((p12 + p21 - (p12 - p21) ** 2) / n)
    assert math.isclose(diff, 0.2) and math.isclose(low, 0.2 - 1.959964 * se) and math.isclose(high, 0.2 + 1.959964 * se)
    assert cl.paired_difference(second, second) == (0.0, 0.0, 0.0)


def test_filter_with_no_readings_doses_as_from_its_prior(cl, cohort):
    model = load_model(cl.CONTROLLER)
    covariates = list(cohort.covariates)
    prior = init(model, covariates, key=3, n_particles=64, dose_slots=8)
    doses = [[Dose(0.0, 2000.0, 0, 3.5), Dose(12.0, 1250.0, 0, 2.5)] for _ in covariates]
    after = update(prior, doses)  # doses only: nothing to learn from
    np.testing.assert_array_equal(np.asarray(after.state.log_params), np.asarray(prior.state.log_params))
    np.testing.assert_allclose(np.asarray(after.state.log_weights), np.asarray(prior.state.log_weights))
    P = len(covariates)
    choose = lambda post: cl.choose(model, np.asarray(post.state.log_params)[:P], np.asarray(post.state.log_weights)[:P],
                                    doses, 12.0, covariates, point=False, starts=cl.SENSOR_STARTS)
    assert choose(after) == choose(prior)


def test_point_decision_matches_a_simulation_of_the_chosen_regimen(cl, cohort):
    """MAP rule at 12 h on the prior mode: the chosen regimen's simulated calendar-day AUCs are
    the ones the decision kernel scored (no candidate is closer to 500 by the same measure)."""
    model = load_model(cl.CONTROLLER)
    covariates = list(cohort.covariates)[:2]
    from assimilation.parameters import prior_mean
    modes = np.stack([prior_mean(model.population, c) for c in covariates])[:, None, :]
    history = [[Dose(0.0, 1500.0, 0, 2.5)] for _ in covariates]
    chosen = cl.choose(model, modes, np.zeros((2, 1)), history, 12.0, covariates, point=True, starts=cl.SENSOR_STARTS)

    def loss(i, regimen):
        doses = history[i] + [d for d in regimen.doses(0.0, 96.0)]
        plasma, _ = cl.simulate_truth(model, modes[i:i + 1, 0], [doses])
        today, tomorrow = cl.daily_auc(plasma)[0, :2]
        return (abs(today - 500.0) + 0.5 * abs(tomorrow - 500.0)) / 1.5, doses  # the MAP arm's loss

    for i, regimen in enumerate(chosen):
        assert regimen.start in (12.0, 16.0)
        best, doses = loss(i, regimen)
        assert all(d.time >= 12.0 for d in doses[1:])
        # no other candidate is better by the simulated loss (up to the 0.5 h grid's trapezoid error)
        others = [loss(i, r)[0] for r in cl.candidates(12.0, cl.SENSOR_STARTS)[::7]]
        assert best <= min(others) + 0.02 * 500.0


def test_a_controller_variant_of_the_truths_population_counts_as_well_specified(cl, monkeypatch):
    """`--controller benchmarks/models/vancomycin_goti_error.py`: Goti's population with the
    published plasma residual; a Goti truth is then well-specified, a Thomson truth is not."""
    variant = ROOT / "benchmarks" / "models" / "vancomycin_goti_error.py"
    model, library = load_model(variant), load_model("vancomycin")
    assert model.population is library.population and model.analytes[1] == library.analytes[1]
    sd = lambda m, c: m.analytes[0].error.variance(c) ** 0.5
    assert sd(model, 15.0) == pytest.approx((3.4**2 + (0.227 * 15.0) ** 2) ** 0.5)  # Goti 2018 Table 2: 4.8 mg/L
    assert sd(library, 15.0) < 0.5 * sd(model, 15.0)  # the point-of-care error: 1.6 mg/L
    monkeypatch.setattr(cl, "CONTROLLER", str(variant))
    result = cl.ArmResult(np.full((2, 3), 500.0), [[]] * 2, np.zeros(2, int), np.zeros(2, int), np.zeros(2, int))
    assert [r["misspecified"] for r in cl.rows_of("map", "vancomycin", result, 0)] == [False] * 3
    assert [r["misspecified"] for r in cl.rows_of("map", "vancomycin_thomson", result, 0)] == [True] * 3


def test_a_truth_whose_cl_varies_by_day_is_one_continuous_course(cl, cohort, monkeypatch):
    """`--truth-cl-day-sd`: each calendar day has its own true CL; the course runs on across
    midnight, and with the same CL every day it is the one-pass simulation."""
    truth = load_model("vancomycin_thomson")
    lp = cohort.truth_log_params["vancomycin_thomson"]
    doses = [[Dose(0.0, 2000.0, 0, 3.5), Dose(12.0, 1250.0, 0, 2.5), Dose(36.0, 1250.0, 0, 2.5)] for _ in lp]
    whole, _ = cl.simulate_truth(truth, lp, doses)
    same_every_day, _ = cl.simulate_truth(truth, np.repeat(lp[:, None, :], 3, axis=1), doses)
    np.testing.assert_array_equal(same_every_day, whole)

    monkeypatch.setattr(cl, "TRUTH_CL_DAY_SD", 0.3)
    daily = cl.truth_parameters(truth, cohort, "vancomycin_thomson")
    cl_index = truth.population.names.index("CL")
    np.testing.assert_allclose(daily[:, :, cl_index] - lp[:, None, cl_index], 0.3 * cohort.cl_day_z, rtol=1e-6)
    others = [j for j in range(lp.shape[1]) if j != cl_index]
    np.testing.assert_array_equal(daily[:, :, others], np.repeat(lp[:, None, others], 3, axis=1))
    varying, _ = cl.simulate_truth(truth, daily, doses)
    # on day 1 (nothing carried over yet) a higher CL than the patient's own gives a lower AUC
    auc_whole, auc_varying = cl.daily_auc(whole), cl.daily_auc(varying)
    assert np.all(np.sign(auc_whole[:, 0] - auc_varying[:, 0]) == np.sign(cohort.cl_day_z[:, 0]))
    assert not np.allclose(auc_whole[:, 1:], auc_varying[:, 1:], rtol=0.02)
    assert np.all(np.abs(np.diff(varying, axis=1)) < 5.0)  # continuous across midnight: no jump in 5 min
