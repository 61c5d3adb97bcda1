"""Systematic resampling against its definition, computed independently in float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assimilation.resampling import systematic_resample

N = 1000


def _reference(log_weights: np.ndarray, uniform: float) -> np.ndarray:
    """Kitagawa (1996): ancestor i = first j with cdf_j ≥ (i + u)/N, by binary search in float64."""
    w = np.exp(log_weights.astype(np.float64) - log_weights.max())
    cdf = np.cumsum(w / w.sum())
    return np.minimum(np.searchsorted(cdf, (np.arange(N) + uniform) / N, side="left"), N - 1)


def _clouds(seed: int):
    rng = np.random.default_rng(seed)
    yield rng.normal(size=N) * 3.0  # uneven weights
    yield np.zeros(N)  # equal weights: every particle once
    spike = np.full(N, -50.0)
    spike[rng.integers(N, size=3)] = 0.0  # nearly all mass on three particles
    yield spike


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ancestors_match_the_definition(seed):
    rng = np.random.default_rng(100 + seed)
    kernel = jax.jit(systematic_resample)
    for log_weights in _clouds(seed):
        uniform = float(rng.uniform())
        ancestors = np.asarray(kernel(jnp.asarray(log_weights, jnp.float32), jnp.float32(uniform)))
        expected = _reference(log_weights.astype(np.float32), uniform)
        assert np.all(np.diff(ancestors) >= 0) and ancestors.min() >= 0 and ancestors.max() < N
        # float32 against float64 CDF: only positions within rounding of a CDF step may differ
        assert np.mean(ancestors != expected) <= 2e-3
        assert np.all(np.abs(ancestors - expected) <= 1)


def test_each_particle_is_copied_floor_or_ceil_of_n_times_its_weight_and_unbiased():
    rng = np.random.default_rng(7)
    log_weights = rng.normal(size=N) * 2.0
    w = np.exp(log_weights - log_weights.max())
    expected = N * w / w.sum()
    kernel = jax.jit(jax.vmap(systematic_resample, in_axes=(None, 0)))
    uniforms = rng.uniform(size=4000).astype(np.float32)
    ancestors = np.asarray(kernel(jnp.asarray(log_weights, jnp.float32), jnp.asarray(uniforms)))
    counts = np.stack([np.bincount(a, minlength=N) for a in ancestors])
    assert np.all(np.abs(counts - expected) < 1.0 + 1e-3)  # the low-variance property
    # E[count_j] = N w_j: the mean over 4,000 uniforms within 5 standard errors (var ≤ 1/4)
    assert np.all(np.abs(counts.mean(0) - expected) < 5 * 0.5 / np.sqrt(len(uniforms)))


@pytest.mark.parametrize("d", [1, 3, 4, 7])
def test_weighted_mean_and_covariance_match_numpy(d):
    """Both paths of ``weighted_mean_cov`` (one weighted sum per entry for d ≤ 4, a matrix
    product above) against ``np.average`` / ``np.cov(aweights=..., bias=True)`` in float64, on a
    correlated cloud with uneven weights and an offset that would expose uncentred sums."""
    from assimilation.resampling import weighted_mean_cov

    rng = np.random.default_rng(d)
    root = rng.normal(size=(d, d)) * 0.3
    values = 4.0 + rng.normal(size=(N, d)) @ root.T
    log_weights = rng.normal(size=N) * 1.5
    w = np.exp(log_weights - log_weights.max())
    mean, cov = jax.jit(weighted_mean_cov)(jnp.asarray(values, jnp.float32), jnp.asarray(log_weights, jnp.float32))
    np.testing.assert_allclose(np.asarray(mean), np.average(values, axis=0, weights=w), atol=1e-5)
    expected = np.atleast_2d(np.cov(values.T, aweights=w, bias=True))
    np.testing.assert_allclose(np.asarray(cov), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("threefry_switch", [True, False])
def test_liu_west_move_keeps_mean_and_covariance_and_copies_fixed_parameters(monkeypatch, threefry_switch):
    """Liu & West (2001): θ ← aθ + (1 − a)θ̄ + hLε with h² = 1 − a² keeps the cloud's mean and
    covariance while each particle moves (correlation a with where it was); a parameter
    without between-patient variability is copied. Also on a JAX without the per-call
    threefry switch (`jax.threefry_partitionable`), where the default mode draws."""
    from assimilation.resampling import liu_west_move

    if not threefry_switch:
        monkeypatch.delattr(jax, "threefry_partitionable", raising=False)
    n, discount = 20_000, 0.95
    rng = np.random.default_rng(0)
    root = np.array([[0.5, 0.0, 0.0], [0.2, 0.3, 0.0], [0.0, 0.1, 0.1]])
    values = np.array([1.0, -2.0, 0.5]) + rng.normal(size=(n, 3)) @ root.T
    moved = np.asarray(liu_west_move(
        jax.random.PRNGKey(1), jnp.asarray(values, jnp.float32), jnp.zeros(n, jnp.float32), jnp.arange(n),
        discount, jnp.asarray([1.0, 1.0, 0.0], jnp.float32),
    ), np.float64)
    a = (3 * discount - 1) / (2 * discount)
    sd = values.std(axis=0)
    np.testing.assert_allclose(moved.mean(axis=0), values.mean(axis=0), atol=float(4 * sd.max() / np.sqrt(n)))
    np.testing.assert_allclose(np.cov(moved[:, :2].T), np.cov(values[:, :2].T), rtol=0.05, atol=0.002)
    for j in (0, 1):
        assert abs(np.corrcoef(moved[:, j], values[:, j])[0, 1] - a) < 0.005
    np.testing.assert_array_equal(moved[:, 2], values[:, 2].astype(np.float32))
