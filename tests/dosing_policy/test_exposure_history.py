"""Exposure per window over a course, replayed from the posterior's particles: checked against
scipy's ODE solution of the same patient and against hand-counted particle weights."""

import numpy as np
import pytest
from scipy.integrate import quad, solve_ivp

from assimilation import Dose, load_model
from dosing_policy.drugs import POLICIES
from dosing_policy.exposure_history import exposure_by_window

MODEL = load_model("vancomycin")
DOSES = [Dose(12.0 * k, 1000.0, None, 1.0) for k in range(6)]


def plasma_by_scipy(theta: dict, t: np.ndarray) -> np.ndarray:
    """Goti's two compartments, infusions as rates, solved by scipy (float64)."""
    def rate(time):
        return sum(d.amount / d.duration for d in DOSES if d.time <= time < d.time + d.duration)

    def field(time, x):
        k10, k12, k21 = theta["CL"] / theta["V1"], theta["Q"] / theta["V1"], theta["Q"] / theta["V2"]
        return [-(k10 + k12) * x[0] + k21 * x[1] + rate(time), k12 * x[0] - k21 * x[1]]

    solution = solve_ivp(field, (0.0, t[-1]), [0.0, 0.0], t_eval=t, rtol=1e-10, atol=1e-10, max_step=0.05, dense_output=True)
    return solution


def test_auc24_per_day_of_one_patient_matches_scipy():
    log_params = MODEL.prior_mean({"CRCL": 70.0, "WT": 80.0, "DIAL": 0})
    theta = {name: float(np.exp(log_params[i])) for i, name in enumerate(MODEL.population.names)}
    result = exposure_by_window(MODEL, np.repeat(log_params[None], 4, 0), np.zeros(4), DOSES, POLICIES["vancomycin"].target,
                                [0.0, 24.0, 48.0])
    solution = plasma_by_scipy(theta, np.linspace(0.0, 72.0, 2000))
    for day, (median, low, high) in enumerate(result.quantiles[:, [2, 0, 4]]):
        exact = quad(lambda t: solution.sol(t)[0] / theta["V1"], 24.0 * day, 24.0 * (day + 1), limit=400,
                     points=[d.time + e for d in DOSES for e in (0.0, d.duration)])[0]
        assert median == pytest.approx(exact, rel=5e-3) and low == median == high  # one patient: no spread


def test_pta_and_quantiles_weigh_the_particles():
    """Two kinds of patient with weights 1/4 and 3/4: typical clearance (day-2 AUC24 below 400)
    and 70 % of it (inside 400-600)."""
    typical = MODEL.prior_mean({"CRCL": 120.0, "WT": 70.0, "DIAL": 0})
    slow = typical.copy()
    slow[MODEL.population.index("CL")] += np.log(0.7)
    log_params = np.stack([typical, slow])
    log_weights = np.log([0.25, 0.75])
    target = POLICIES["vancomycin"].target
    both = exposure_by_window(MODEL, log_params, log_weights, DOSES, target, [24.0])
    each = [exposure_by_window(MODEL, p[None], np.zeros(1), DOSES, target, [24.0]) for p in log_params]
    in_range = [float(e.pta[0]) for e in each]
    assert in_range == [0.0, 1.0], [float(e.mean[0]) for e in each]
    assert float(both.pta[0]) == pytest.approx(0.25 * in_range[0] + 0.75 * in_range[1], abs=1e-6)
    assert float(both.mean[0]) == pytest.approx(0.25 * float(each[0].mean[0]) + 0.75 * float(each[1].mean[0]), rel=1e-4)
    assert float(both.quantiles[0, 2]) == pytest.approx(float(each[1].mean[0]), rel=1e-5)  # the median is the heavier patient's
