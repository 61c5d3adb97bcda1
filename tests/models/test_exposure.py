"""Exposure metrics against closed-form values."""

import jax
import jax.numpy as jnp
import numpy as np

from assimilation.models import exposure


def test_auc_of_exponential_decay_matches_closed_form():
    # C(t) = 10 e^{-0.1 t}: ∫_2^26 C dt = 100 (e^{-0.2} - e^{-2.6})
    times = jnp.linspace(0.0, 30.0, 601)
    conc = 10.0 * jnp.exp(-0.1 * times)
    exact = 100.0 * (np.exp(-0.2) - np.exp(-2.6))
    np.testing.assert_allclose(float(exposure.auc24(times, conc, 2.0)), exact, rtol=2e-4)


def test_auc_window_between_grid_points_is_interpolated():
    times = jnp.array([0.0, 10.0])
    values = jnp.array([0.0, 10.0])  # v = t
    # ∫_2.5^7.5 t dt = (7.5² − 2.5²)/2 = 25
    np.testing.assert_allclose(float(exposure.area_under_curve(times, values, 2.5, 7.5)), 25.0, rtol=1e-6)


def test_metrics_vectorise_over_particles():
    times = jnp.linspace(0.0, 24.0, 97)
    scales = jnp.array([1.0, 2.0, 3.0])
    values = scales[:, None] * jnp.ones_like(times)[None, :]
    np.testing.assert_allclose(np.asarray(exposure.auc24(times, values, 0.0)), 24.0 * np.array([1, 2, 3]), rtol=1e-6)
    jitted = jax.jit(exposure.peak)
    np.testing.assert_allclose(np.asarray(jitted(times, values, 0.0, 24.0)), [1, 2, 3])


def test_trough_nadir_and_time_of_nadir():
    times = jnp.arange(0.0, 11.0)
    values = (times - 6.0) ** 2 + 1.0
    assert float(exposure.nadir(times, values, 0.0, 10.0)) == 1.0
    assert float(exposure.time_of_nadir(times, values, 0.0, 10.0)) == 6.0
    assert float(exposure.nadir(times, values, 0.0, 3.0)) == 10.0  # window excludes the minimum
    np.testing.assert_allclose(float(exposure.trough(times, values, 2.5)), (16 + 9) / 2 + 1.0)


def test_time_in_range_rosendaal():
    # INR rising linearly 1 → 5 over 4 days: in [2, 3] for exactly one day of four
    times = jnp.array([0.0, 96.0])
    inr = jnp.array([1.0, 5.0])
    np.testing.assert_allclose(float(exposure.fraction_of_time_in_range(times, inr, 2.0, 3.0, 0.0, 96.0)), 0.25, rtol=1e-6)
    flat = jnp.array([2.5, 2.5])
    assert float(exposure.fraction_of_time_in_range(times, flat, 2.0, 3.0, 0.0, 96.0)) == 1.0


def test_probability_weighted_and_unweighted():
    event = jnp.array([True, False, False, True])
    assert float(exposure.probability(event)) == 0.5
    np.testing.assert_allclose(float(exposure.probability(event, jnp.array([0.7, 0.1, 0.1, 0.1]))), 0.8, rtol=1e-6)


def test_ctcae_grades():
    # CTCAE v5.0 neutrophil count decreased: <LLN, <1.5, <1.0, <0.5 × 10^9/L
    anc = jnp.array([3.0, 1.8, 1.2, 0.7, 0.3])
    assert exposure.ctcae_neutropenia_grade(anc).tolist() == [0, 1, 2, 3, 4]
