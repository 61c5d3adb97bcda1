"""A nonlinear (ODE) model whose solve fails for some particles: those particles are dropped from
the posterior, the rest of the batch goes on, and nothing raises."""

import numpy as np

from assimilation import Additive, Analyte, Dose, Model, OdeCompartments, Population
from assimilation import ensemble_kalman as enkf
from assimilation import particle_filter as pf
from assimilation.events import Reading, pack_events
from assimilation.online import _patient_keys

# dx/dt = -k x with k spread over four orders of magnitude: an explicit solver needs ~k·Δt steps
# once the decay is resolved (stability), so with a budget of 40 steps the fastest particles fail.
MODEL = Model(
    name="decay-with-a-step-budget",
    population=Population(("k", "V"), np.array([0.5, 10.0]), np.diag([4.0, 0.01])),
    dynamics=OdeCompartments(1, lambda t, x, p: -p["k"] * x, rtol=1e-6, atol=1e-6, max_steps=40),
    compartments=("central",),
    analytes=(Analyte("c", lambda p, x: x[0] / p["V"], Additive(0.5)),),
)


def test_failed_solves_are_dropped_and_the_others_keep_a_normalised_posterior():
    rows = 2
    state = pf.initial_state(MODEL, pf.Options(n_particles=400), np.repeat(np.log(MODEL.population.typical)[None], rows, 0),
                             _patient_keys(3, rows))
    events = [[Dose(0.0, 100.0), Reading(10.0, 1.0)], [Dose(0.0, 100.0), Reading(10.0, 0.2)]]
    steps = pack_events(MODEL, events, rows, np.float32)
    for s in range(steps.dose_valid.shape[1]):
        state, _ = pf.assimilate(MODEL, state, steps.step(s))

    k = np.exp(np.asarray(state.log_params[..., 0]))
    failed = ~np.isfinite(np.asarray(state.amounts[..., 0]))
    weights = np.exp(np.asarray(state.log_weights))
    assert 0.05 < failed.mean() < 0.6, failed.mean()  # the budget splits the prior
    assert k[failed].min() > k[~failed].max() * 0.5  # it is the stiff (fast) particles that fail
    np.testing.assert_array_equal(weights[failed], 0.0)
    assert np.all(np.isfinite(weights)) and np.allclose(weights.sum(axis=1), 1.0, atol=1e-5)


def test_the_ensemble_kalman_filter_replaces_failed_members_by_successful_ones():
    rows = 1
    options = enkf.Options(n_particles=400)
    state = enkf.initial_state(MODEL, options, np.log(MODEL.population.typical)[None], _patient_keys(3, rows))
    k_prior = np.exp(np.asarray(state.log_params[0, :, 0]))
    steps = pack_events(MODEL, [[Dose(0.0, 100.0), Reading(10.0, 1.0)]], rows, np.float32)
    state = enkf.update(MODEL, options, state, steps)

    assert np.all(np.isfinite(np.asarray(state.amounts))) and np.all(np.isfinite(np.asarray(state.log_params)))
    assert (k_prior > 3.0).mean() > 0.1  # the prior did hold members whose solve fails
    # 1 mg/L at 10 h after 100 mg into ~10 L: k ≈ ln(10)/10 ≈ 0.23 /h
    k = np.exp(np.asarray(state.log_params[0, :, 0]))
    assert 0.1 < np.median(k) < 0.5 and k.max() < 3.0
