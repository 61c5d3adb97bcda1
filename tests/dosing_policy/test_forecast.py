"""Exposure forecasts against closed forms and against the engine's own step-by-step propagation."""

import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose, load_model
from dosing_policy import Grid, PosteriorSample, Regimen, forecast, prior_sample

from .closed_form import infusion_concentration, one_compartment_iv

METHODS = ("superposition", "propagate-superposition", "stepping")


def _sample(log_cl, v, amounts, time):
    n = len(log_cl)
    log_params = np.stack([log_cl, np.full(n, np.log(v))], axis=1)
    return PosteriorSample(jnp.asarray(log_params, jnp.float32), jnp.asarray(np.reshape(amounts, (n, 1)), jnp.float32),
                           jnp.zeros(n, jnp.float32), jnp.asarray(time, jnp.float32))


@pytest.mark.parametrize("method", METHODS)
def test_forecast_continues_from_the_current_state_and_finishes_running_infusions(method):
    """State at t0 = 10 h: amounts x0 on board and a 2 h infusion started at 9 h still running;
    then a candidate (1000 mg over 1 h at +2 h, q12h). Closed form: superpose decay of x0,
    the remaining hour of the running infusion and the candidate doses."""
    model = one_compartment_iv()
    cl = np.array([2.0, 4.0, 8.0])
    v, t0, x0 = 50.0, 10.0, np.array([300.0, 150.0, 50.0])
    history = [Dose(0.0, 500.0, 0, 0.0), Dose(9.0, 600.0, 0, 2.0)]  # the bolus at 0 h is already in x0
    regimen = Regimen(1000.0, 12.0, 1.0, start=2.0)
    grid = Grid.covering(36.0, 0.5)
    fc = forecast(model, _sample(np.log(cl), v, x0, t0), history, [regimen], grid, method=method)
    tau = np.arange(grid.points) * grid.step
    for i, c in enumerate(cl):
        k = c / v
        running = 300.0 / 1.0  # mg/h still infusing for 1 h after t0
        expected = x0[i] / v * np.exp(-k * tau) + infusion_concentration(tau, running * 1.0, 1.0, c, v)
        for start in (2.0, 14.0, 26.0):
            expected = expected + infusion_concentration(tau - start, 1000.0, 1.0, c, v)
        np.testing.assert_allclose(np.asarray(fc.values[0, i]), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fc.times), t0 + tau)


def test_superposition_agrees_with_stepping_on_a_published_two_compartment_model():
    model = load_model("two_compartment_infusion")
    sample = prior_sample(model, {"CRCL": 80.0, "WT": 90.0}, 16, key=3, time=30.0, amounts=np.array([900.0, 400.0]))
    history = [Dose(6.0, 1000.0, 0, 1.0), Dose(18.0, 1000.0, 0, 2.0), Dose(29.0, 1250.0, 0, 2.0)]
    regimens = [Regimen(1500.0, 8.0, 2.5, start=1.5), Regimen(750.0, 12.0, 1.0, 0.0, 2000.0, 3.5), Regimen(2000.0, 24.0, 0.0, 4.0)]
    grid = Grid.covering(24.0, 0.5)
    fast = forecast(model, sample, history, regimens, grid, method="superposition")
    slow = forecast(model, sample, history, regimens, grid, method="stepping")
    np.testing.assert_allclose(np.asarray(fast.values), np.asarray(slow.values), rtol=1e-3, atol=1e-3)


def test_dose_times_off_the_grid_are_refused():
    model = one_compartment_iv()
    sample = prior_sample(model, None, 4)
    with pytest.raises(ValueError, match="not on the forecast grid"):
        forecast(model, sample, [], [Regimen(1000.0, 12.0, 1.0, start=0.25)], Grid(0.5, 10))


def test_fast_auc_scoring_equals_the_auc_of_stepped_trajectories():
    """evaluate() scores AUC without building trajectories (weights folded through the unit
    responses); it must equal the trapezoid AUC of trajectories from the engine's propagate."""
    from dosing_policy import VANCOMYCIN_AUC24, Utility, attainment, evaluate

    model = load_model("two_compartment_infusion")
    sample = prior_sample(model, {"CRCL": 70.0, "WT": 85.0}, 32, key=5, time=13.0, amounts=np.array([700.0, 300.0]))
    history = [Dose(0.0, 1750.0, 0, 3.0), Dose(12.0, 1250.0, 0, 2.0)]
    regimens = [Regimen(1000.0, 8.0, 2.0), Regimen(1500.0, 12.0, 2.5, 1.0), Regimen(750.0, 12.0, 0.0, 0.5, 2000.0, 3.5)]
    utility = Utility((0.0, 6.0), (1.0, 1.0))
    grid = Grid.covering(30.0, 0.5)
    fast = evaluate(model, sample, history, regimens, VANCOMYCIN_AUC24, utility, grid)
    fc = forecast(model, sample, history, regimens, grid, method="stepping")
    auc = jnp.stack([VANCOMYCIN_AUC24.metric(fc.times, fc.values, fc.times[0] + w) for w in utility.windows], axis=1)
    reference = attainment(auc, fc.weights, VANCOMYCIN_AUC24)
    np.testing.assert_allclose(np.asarray(fast.attainment.mean), np.asarray(reference.mean), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(fast.attainment.pta), np.asarray(reference.pta), atol=1.5 / 32)
