"""Steady-state doses (NONMEM SS 1 / 2) and resets (EVID 3 / 4) in every filter, against float64
references that give the same doses explicitly: a long dose train by matrix-exponential
superposition (linear models) or solve_ivp (a Michaelis-Menten model), and a body restarted
from zero (tests/assimilation/nonmem_reference.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose, Model, Population, PowerEffect, load_model, online
from assimilation.events import Reading, Reset, SteadyState
from assimilation.steady_state import trough
from tests.assimilation.nonmem_reference import (
    iv_rate_matrix, linear_amounts, michaelis_menten_amounts, natural, oral_rate_matrix, train,
)

ORAL = load_model("one_compartment_oral")
IV = load_model("two_compartment_infusion")
MM = load_model("assimilation/models/examples/michaelis_menten_oral.py")
IV_COVARIATES = {"CRCL": 100.0, "WT": 70.0}
N = 64
LONG = 300  # doses in a reference train: e^{−λ·300·τ} is far below float64 precision for these priors


def _weighted_mean(values, log_weights):
    w = np.exp(np.asarray(log_weights, np.float64))
    return np.asarray(values).T @ (w / w.sum())


def _oral_concentrations(post, doses, times):
    p = online.particles(post)
    values = [[linear_amounts(oral_rate_matrix(q), doses, t)[1] / q["V"] for t in times] for q in natural(ORAL, p.log_params)]
    return _weighted_mean(values, p.log_weights)


def _iv_concentrations(post, doses, times):
    p = online.particles(post)
    values = [[linear_amounts(iv_rate_matrix(q), doses, t)[0] / q["V1"] for t in times] for q in natural(IV, p.log_params)]
    return _weighted_mean(values, p.log_weights)


@pytest.mark.parametrize("method", ["pf", "enkf", "map"])
def test_oral_steady_state_is_the_limit_of_a_long_dose_train(method):
    t0, amount, tau = 50.0, 320.0, 12.0
    post = online.update(online.init(ORAL, {"WT": 70.0}, 3, N, method), [SteadyState(t0, amount, tau)])
    p = online.particles(post)
    assert p.time == t0
    expected = np.array([linear_amounts(oral_rate_matrix(q), train(t0, amount, tau, LONG), t0) for q in natural(ORAL, p.log_params)])
    np.testing.assert_allclose(p.amounts, expected, rtol=2e-4, atol=1e-4 * expected.max())  # the trough at t0
    times = [t0, t0 + 1.0, t0 + 6.0, t0 + 11.9, t0 + 30.0]  # then the dose at t0 itself and no more
    forecast = np.asarray(online.predict(post, times).mean[0])
    np.testing.assert_allclose(forecast, _oral_concentrations(post, train(t0, amount, tau, LONG) + [(t0, amount, 0, 0.0)], times), rtol=2e-4)


@pytest.mark.parametrize("additive", [False, True])
@pytest.mark.parametrize("method", ["pf", "map"])
def test_infusions_longer_than_the_interval_and_what_the_body_held(method, additive):
    """18 h infusions every 12 h: the train's infusion started 12 h before the steady-state dose
    is still running after it. An infusion given earlier and still running at that time is
    stopped by SS=1 and kept by SS=2 (superposition)."""
    t0, amount, tau, duration = 40.0, 1000.0, 12.0, 18.0
    earlier = (30.0, 600.0, 0, 20.0)  # running from 30 to 50 h
    post = online.init(IV, IV_COVARIATES, 5, N, method)
    post = online.update(post, [Dose(*earlier), SteadyState(t0, amount, tau, 0, duration, additive)])
    doses = train(t0, amount, tau, LONG, 0, duration) + [(t0, amount, 0, duration)] + ([earlier] if additive else [])
    p = online.particles(post)
    expected = np.array([linear_amounts(iv_rate_matrix(q), [d for d in doses if d[0] < t0], t0) for q in natural(IV, p.log_params)])
    np.testing.assert_allclose(p.amounts, expected, rtol=2e-4)
    times = [t0 + 0.5, t0 + 5.0, t0 + 8.0, t0 + 12.0, t0 + 20.0, t0 + 40.0]  # the pending infusion ends at t0 + 6
    np.testing.assert_allclose(np.asarray(online.predict(post, times).mean[0]), _iv_concentrations(post, doses, times), rtol=2e-4)


def _lagged_oral(lag: float) -> Model:
    """one_compartment_oral with a fixed absorption lag."""
    population = Population(names=("ka", "CL", "V", "tlag"), typical=np.array([1.57, 2.8, 32.0, lag]),
                            omega=np.diag([0.64**2, 0.17**2, 0.10**2, 0.0]),
                            effects=(PowerEffect("CL", "WT", 70.0, 1.0), PowerEffect("V", "WT", 70.0, 1.0)))
    return Model(name=f"oral_lag_{lag:g}", population=population, dynamics=ORAL.dynamics, compartments=ORAL.compartments,
                 analytes=ORAL.analytes, lag_time=lambda p: jnp.stack([p["tlag"], 0.0 * p["tlag"]]), dose_compartment=0,
                 covariates=ORAL.covariates)


def test_a_lag_longer_than_the_interval_leaves_train_doses_arriving_after_the_steady_state():
    lag, t0, amount, tau = 15.0, 30.0, 200.0, 12.0
    model = _lagged_oral(lag)
    post = online.update(online.init(model, {"WT": 70.0}, 2, N, "pf"), [SteadyState(t0, amount, tau)])
    shifted = [(s + lag, a, c, d) for s, a, c, d in train(t0, amount, tau, LONG) + [(t0, amount, 0, 0.0)]]
    p = online.particles(post)
    times = [t0, t0 + 2.0, t0 + 3.5, t0 + 10.0, t0 + 16.0, t0 + 40.0]  # the dose given at t0 − 12 arrives at t0 + 3
    values = [[linear_amounts(oral_rate_matrix(q), shifted, t)[1] / q["V"] for t in times] for q in natural(model, p.log_params)]
    np.testing.assert_allclose(np.asarray(online.predict(post, times).mean[0]), _weighted_mean(values, p.log_weights), rtol=2e-4)


def test_nonlinear_steady_state_is_the_limit_of_an_explicit_train_with_lag():
    t0, amount, tau = 30.0, 100.0, 12.0
    post = online.update(online.init(MM, {"WT": 70.0}, 4, 8, "pf"), [SteadyState(t0, amount, tau)])
    p = online.particles(post)
    params = natural(MM, p.log_params)
    expected = np.array([michaelis_menten_amounts(q, train(t0, amount, tau, 80), t0) for q in params])
    np.testing.assert_allclose(p.amounts, expected, rtol=1e-4, atol=1e-4)
    times = [t0 + 0.25, t0 + 3.0, t0 + 11.0]  # before the dose's lag ends, then after
    values = [[michaelis_menten_amounts(q, train(t0, amount, tau, 80) + [(t0, amount, 0, 0.0)], t)[1] / q["V"] for t in times] for q in params]
    np.testing.assert_allclose(np.asarray(online.predict(post, times).mean[0]), _weighted_mean(values, p.log_weights), rtol=1e-4)


def test_nonlinear_steady_state_has_the_implicit_derivative():
    """MAP differentiates the dose train's fixed point: its gradient in log Vmax equals central
    differences, and its value the explicit float64 train."""
    with jax.enable_x64(True):
        base = jnp.asarray(MM.typical_log_params(), jnp.float64)
        k = MM.population.index("Vmax")

        def central(log_vmax):
            params = MM.parameters(base.at[k].set(log_vmax))
            F, lag = MM.dose_attributes(params, jnp.float64)
            return trough(MM, params, (), jnp.zeros(2, jnp.float64), 100.0, 0.0, 0, 12.0, jnp.asarray(False), F, lag)[1]

        x = base[k]
        q = dict(zip(MM.population.names, np.exp(np.asarray(base))))

        def explicit(log_vmax):  # the solve_ivp train (rtol 1e-11), not the engine's iteration
            return michaelis_menten_amounts({**q, "Vmax": np.exp(log_vmax)}, train(0.0, 100.0, 12.0, 80), 0.0)[1]

        h = 1e-4
        finite = (explicit(float(x) + h) - explicit(float(x) - h)) / (2 * h)
        assert float(jax.grad(central)(x)) == pytest.approx(finite, rel=1e-4)
        assert float(central(x)) == pytest.approx(explicit(float(x)), rel=1e-5)


def test_map_fits_a_steady_state_history_as_the_dose_train():
    t0, amount, tau = 60.0, 320.0, 12.0
    readings = [Reading(t0 + 2.0, 14.0), Reading(t0 + 10.0, 9.0)]
    post = online.init(ORAL, {"WT": 70.0}, 0, N, "map")
    steady = online.update(post, [SteadyState(t0, amount, tau)] + readings)
    explicit = online.update(post, [Dose(s, a) for s, a, _, _ in train(t0, amount, tau, 60)] + [Dose(t0, amount)] + readings)
    np.testing.assert_allclose(steady.state.mode, explicit.state.mode, rtol=1e-5, atol=1e-6)
    assert not np.allclose(steady.state.mode, online.update(post, [Dose(t0, amount)] + readings).state.mode, atol=1e-2)


@pytest.mark.parametrize("method", ["pf", "enkf", "map"])
def test_reset_restarts_the_body_from_zero(method):
    """A reset at 10 h stops the infusion running since 8 h and forgets every earlier dose: what
    follows is the body of a patient whose only dose is the one at 11 h (same parameters)."""
    post = online.init(IV, IV_COVARIATES, 7, N, method)
    post = online.update(post, [Dose(0.0, 1000.0, 0, 1.0), Reading(4.0, 18.0), Dose(8.0, 1000.0, 0, 4.0), Reset(10.0),
                                Dose(11.0, 500.0)])
    times = [11.0, 11.5, 14.0, 20.0]
    forecast = np.asarray(online.predict(post, times).mean[0])
    np.testing.assert_allclose(forecast, _iv_concentrations(post, [(11.0, 500.0, 0, 0.0)], times), rtol=2e-4, atol=1e-6)
    assert forecast[0] == pytest.approx(0.0, abs=1e-6)


def test_a_reading_at_a_reset_sees_the_restarted_body_and_weights_carry_over():
    post = online.init(IV, IV_COVARIATES, 9, N, "pf")
    before = online.update(post, [Dose(0.0, 1000.0, 0, 1.0), Reading(4.0, 18.0)])
    after = online.update(before, [Reset(10.0), Reading(10.0, 1.0, 0, True)])  # below LLOQ 1 mg/L: certain with no drug
    np.testing.assert_allclose(online.particles(after).amounts, 0.0)
    np.testing.assert_allclose(online.particles(after).log_weights, online.particles(before).log_weights, atol=1e-5)
    np.testing.assert_array_equal(online.particles(after).log_params, online.particles(before).log_params)


def test_refused_steady_states_and_resets():
    post = online.init(MM, {"WT": 70.0}, 0, 8, "pf")
    with pytest.raises(ValueError, match="linear dynamics only"):
        online.update(post, [SteadyState(10.0, 100.0, 12.0, additive=True)])
    later = online.update(online.init(ORAL, {"WT": 70.0}, 0, 8, "pf"), [Reading(20.0, 1.0)])
    with pytest.raises(ValueError, match="reset at t=10.0 h is older"):
        online.update(later, [Reset(10.0)])
    with pytest.raises(ValueError, match="steady-state dose at t=10.0 h is older"):
        online.update(later, [SteadyState(10.0, 100.0, 12.0)])
    with pytest.raises(ValueError, match="interval must be > 0"):
        online.update(later, [SteadyState(30.0, 100.0, 0.0)])
