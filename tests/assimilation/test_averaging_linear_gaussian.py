"""Model averaging against the exact posterior model probabilities of two linear-Gaussian models.

Each model is linear-Gaussian in x = log θ (log-normal error, predictions products of
parameters): x ~ N(μ_m, Ω_m), log y_k = H_k x + ε_k, ε_k ~ N(0, σ_m²). Its evidence has the
Kalman filter's prediction error decomposition

    log p(y_1:n | M_m) = Σ_k log N(log y_k; H_k x̂_k|k−1, H_k P_k|k−1 H_kᵀ + σ_m²)

(F = I, Q = 0), so the posterior model probabilities after every datum are known in closed
form: P(M_m | y_1:k) ∝ π_m p(y_1:k | M_m), and with the fixed share the same recursion with
(1 − ε) · Bayes + ε · π after each datum. The BMA weights must match: within Monte Carlo error
for the particle filter, to float32 for the EnKF from its own ensemble's prior moments (the
EAKF is then the Kalman filter), and for MAP (Laplace is exact here).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Analyte, LinearCompartments, LogNormal, Model, Population, averaging, online
from assimilation.events import Reading

H = {"a": np.array([1.0, 0.0]), "ab": np.array([1.0, 1.0])}


def _model(name, mu, omega, sigma):
    return Model(
        name=name,
        population=Population(("a", "b"), np.exp(mu), omega),
        dynamics=LinearCompartments(1, lambda p: jnp.array([[-1.0]])),  # amounts unused
        compartments=("unused",),
        analytes=(Analyte("a", lambda p, x: p["a"], LogNormal(sigma)), Analyte("ab", lambda p, x: p["a"] * p["b"], LogNormal(sigma))),
    )


MU_A, OMEGA_A, SIGMA_A = np.log([2.0, 5.0]), np.array([[0.30, 0.12], [0.12, 0.20]]), 0.3
MU_B, OMEGA_B, SIGMA_B = np.log([3.0, 3.0]), np.array([[0.15, 0.0], [0.0, 0.40]]), 0.4
MODEL_A = _model("gaussian_a", MU_A, OMEGA_A, SIGMA_A)
MODEL_B = _model("gaussian_b", MU_B, OMEGA_B, SIGMA_B)
PRIOR = np.array([0.4, 0.6])


def _readings():
    """Readings from a patient between the two populations, so that neither model wins at once."""
    rng = np.random.default_rng(6)
    truth = 0.5 * (MU_A + MU_B) + np.array([0.0, 0.4])
    schedule = ["a", "ab", "ab", "a", "ab", "a"]
    return [Reading(float(k + 1), float(np.exp(H[a] @ truth + 0.3 * rng.normal())), a) for k, a in enumerate(schedule)]


def _increments(mean, cov, sigma, readings):
    """Kalman one-step-ahead log predictive densities of log y_k (prediction error decomposition)."""
    mean, cov, out = mean.copy(), cov.copy(), []
    for r in readings:
        h, z = H[r.analyte], np.log(r.value)
        s = h @ cov @ h + sigma**2
        out.append(-0.5 * ((z - h @ mean) ** 2 / s + np.log(2 * np.pi * s)))
        gain = cov @ h / s
        mean, cov = mean + gain * (z - h @ mean), cov - np.outer(gain, h @ cov)
    return np.array(out)


def _exact_weights(increments, floor=0.0):
    """(K, n) posterior model probabilities after each datum (fixed share with ε = ``floor``)."""
    w, out = PRIOR.copy(), []
    for k in range(increments.shape[1]):
        w = w * np.exp(increments[:, k] - increments[:, k].max())
        w = (1 - floor) * w / w.sum() + floor * PRIOR
        out.append(w)
    return np.stack(out, axis=1)


def _bma_weights(method, n, key=3, floor=0.0, **options):
    """The model set's weights of model A after each reading, one update per reading."""
    averaged = averaging.init([MODEL_A, MODEL_B], {}, key, n, method, prior_weights=PRIOR, floor=floor, **options)
    out = []
    for reading in _readings():
        averaged = averaging.update(averaged, [reading])
        out.append(averaged.weights()[0])
    return np.stack(out, axis=1), averaged  # (K, n)


def _exact(floor=0.0):
    readings = _readings()
    increments = np.stack([_increments(MU_A, OMEGA_A, SIGMA_A, readings), _increments(MU_B, OMEGA_B, SIGMA_B, readings)])
    return _exact_weights(increments, floor)


def test_the_data_discriminate_but_do_not_decide_at_once():
    """The reference is informative: the weight of A moves by more than the tolerances below."""
    exact = _exact()[0]
    assert exact.max() - exact.min() > 0.3 and 0.02 < exact.min() and exact.max() < 0.98


def test_particle_filter_weights_match_the_exact_model_probabilities():
    weights, _ = _bma_weights("pf", 4000)
    # Monte Carlo error of 4,000 particles: over 13 seeds the weight's SD was ≤ 0.010 at every
    # reading and the largest error 0.026 (mean error ≤ 0.006); stated as 0.04 (4 SD).
    np.testing.assert_allclose(weights, _exact(), atol=0.04)


def test_ensemble_kalman_weights_are_the_kalman_filter_from_its_own_prior():
    weights, averaged = _bma_weights("enkf", 2000)
    readings = _readings()
    increments = []
    for model, member, sigma in zip((MODEL_A, MODEL_B), averaged.members, (SIGMA_A, SIGMA_B)):
        prior = online.particles(online.init(model, {}, 3, 2000, "enkf"), 0).log_params.astype(np.float64)
        increments.append(_increments(prior.mean(0), np.cov(prior.T, bias=True), sigma, readings))
    np.testing.assert_allclose(weights, _exact_weights(np.stack(increments)), atol=2e-4)
    # from the true priors: the ensemble's sampling error (2,000 members)
    np.testing.assert_allclose(weights, _exact(), atol=0.04)


def test_fixed_share_follows_the_exact_switching_recursion():
    weights, _ = _bma_weights("enkf", 2000, floor=0.2)
    exact = _exact(floor=0.2)
    np.testing.assert_allclose(weights, exact, atol=0.04)
    assert np.abs(exact - _exact()).max() > 0.1  # the floor changes the weights: the check can fail


def test_map_laplace_weights_are_exact_for_a_linear_gaussian_model():
    weights, _ = _bma_weights("map", 200)
    np.testing.assert_allclose(weights, _exact(), atol=1e-3)


@pytest.mark.parametrize("method", ["pf", "enkf"])
def test_one_update_with_every_reading_gives_the_weights_of_one_update_per_reading(method):
    one_by_one = _bma_weights(method, 500, floor=0.05)[0][:, -1]
    together = averaging.update(averaging.init([MODEL_A, MODEL_B], {}, 3, 500, method, prior_weights=PRIOR, floor=0.05), _readings())
    np.testing.assert_allclose(together.weights()[0], one_by_one, atol=1e-5)
