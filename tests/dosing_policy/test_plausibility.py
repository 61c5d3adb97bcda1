"""Posterior predictive checks: calibrated readings give uniform PITs; an outlier is flagged."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import kstest

from assimilation import Dose, load_model
from assimilation.events import Reading
from dosing_policy import PosteriorSample, advance, check_reading, prior_sample
from dosing_policy import plausibility
from dosing_policy.plausibility import _weighted_median, check_patients, check_readings, predictive_cdf

from .closed_form import infusion_concentration, one_compartment_iv


def _sample(n=300, seed=0):
    model = one_compartment_iv(cl=4.0, v=50.0, omega_cl=0.09, sigma=1.0)
    log_cl = np.log(4.0) + 0.3 * np.random.default_rng(seed).standard_normal(n)
    sample = PosteriorSample(jnp.asarray(np.stack([log_cl, np.full(n, np.log(50.0))], 1), jnp.float32),
                             jnp.zeros((n, 1), jnp.float32), jnp.zeros(n, jnp.float32), jnp.asarray(0.0, jnp.float32))
    return model, sample


def test_advance_matches_the_closed_form():
    model, sample = _sample(8)
    history = [Dose(0.0, 1000.0, 0, 1.0)]
    at = advance(model, sample, history, 5.0)
    cl = np.exp(np.asarray(sample.log_params[:, 0], np.float64))
    expected = 50.0 * np.array([infusion_concentration(5.0, 1000.0, 1.0, c, 50.0) for c in cl])
    np.testing.assert_allclose(np.asarray(at.amounts[:, 0]), expected, rtol=1e-4)
    assert float(at.time) == 5.0


def test_readings_drawn_from_the_predictive_have_uniform_pits():
    """If y ~ p(y) (particle ~ w, then residual error), F(y) ~ U(0, 1): a KS test at 1 % and
    the flag rate at α = 0.1 within binomial bounds are the independent reference."""
    model, sample = _sample()
    history = [Dose(0.0, 1000.0, 0, 1.0)]
    at = advance(model, sample, history, 6.0)
    f = np.asarray(at.amounts[:, 0]) / 50.0
    rng = np.random.default_rng(5)
    n = 400
    readings = f[rng.integers(0, len(f), n)] + 1.0 * rng.standard_normal(n)
    pits = np.array([predictive_cdf(model, at, 0, y) for y in readings])
    assert kstest(pits, "uniform").pvalue > 0.01
    flagged = np.sum(2 * np.minimum(pits, 1 - pits) < 0.1)
    assert 40 - 4 * np.sqrt(n * 0.1 * 0.9) < flagged < 40 + 4 * np.sqrt(n * 0.1 * 0.9)


def test_an_outlier_is_flagged_and_a_typical_reading_is_not():
    model, sample = _sample()
    history = [Dose(0.0, 1000.0, 0, 1.0)]
    typical = check_reading(model, sample, history, 6.0, "concentration", 11.0)  # ~ 1000/50·e^{-0.08·5}·… ≈ 11 mg/L
    outlier = check_reading(model, sample, history, 6.0, "concentration", 60.0)
    assert typical.tail_probability > 0.1
    assert outlier.tail_probability < 1e-6 and outlier.sign == 1
    assert check_reading(model, sample, history, 6.0, 0, 0.5).sign == -1


def test_batched_checks_equal_one_check_per_reading():
    """Readings before, during and after a second infusion, checked in one call, each against
    the sample carried forward to its own time: check_reading's PIT, tail and median (up to
    float32 summation order). A reading at the sample's own time is not propagated. Unequal
    weights: with equal ones and an even N, the cumulative weight reaches ½ exactly between
    the two middle particles and rounding picks either (both are medians)."""
    model, sample = _sample()
    sample = sample._replace(log_weights=jnp.asarray(np.random.default_rng(2).normal(0, 0.5, 300), jnp.float32))
    history = [Dose(0.0, 1000.0, 0, 1.0), Dose(12.0, 1500.0, 0, 2.0)]
    times = [0.0, 6.0, 12.0, 13.0, 20.0]
    values = [0.1, 11.0, 60.0, 20.0, 0.5]
    expected = [check_reading(model, sample, history, t, 0, y) for t, y in zip(times, values)]
    got = check_readings(model, sample, history, times, [0, "concentration", 0, 0, "concentration"], values)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose([g.pit, g.tail_probability], [e.pit, e.tail_probability], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(g.predicted_median, e.predicted_median, rtol=1e-5)
        assert g.sign == e.sign
    assert got[2].tail_probability < 1e-6  # the trough-time outlier stays flagged


@pytest.mark.parametrize("max_rows", [plausibility.MAX_ROWS, 2])
def test_many_patients_in_one_call_equal_each_alone(max_rows, monkeypatch):
    """Patients with their own samples, times, dose histories, reading counts and analytes (a
    two-analyte model) in one padded call (or, with few rows a call, several): each patient's
    checks as if checked alone."""
    monkeypatch.setattr(plausibility, "MAX_ROWS", max_rows)
    model = load_model("vancomycin")
    doses = [Dose(0.0, 1000.0, None, 1.0), Dose(12.0, 1500.0, None, 2.0)]
    samples = [advance(model, prior_sample(model, {"CRCL": crcl, "WT": 75.0, "DIAL": 0}, 200, key=k), doses[:1], t0)
               for k, (crcl, t0) in enumerate(((90.0, 3.0), (40.0, 11.0), (130.0, 13.5)))]
    rng = np.random.default_rng(4)  # unequal weights: no tie at the median (see above)
    samples = [s._replace(log_weights=jnp.asarray(rng.normal(0, 0.5, 200), jnp.float32)) for s in samples]
    histories = [doses, doses, doses[1:]]
    readings = [
        [Reading(3.0, 30.0, "plasma"), Reading(5.0, 10.0, "isf"), Reading(12.5, 12.0, "plasma"), Reading(20.0, 3.0, 0)],
        [Reading(11.5, 25.0, "isf")],
        [Reading(14.0, 40.0, "plasma"), Reading(16.0, 8.0, "isf")],
    ]
    batched = check_patients(model, samples, histories, readings)
    for sample, history, own, got in zip(samples, histories, readings, batched):
        expected = [check_reading(model, sample, history, r.time, r.analyte, r.value) for r in own]
        assert len(got) == len(own)
        for g, e in zip(got, expected):
            np.testing.assert_allclose([g.pit, g.tail_probability], [e.pit, e.tail_probability], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(g.predicted_median, e.predicted_median, rtol=1e-5)


def test_weighted_median_is_the_sorted_cumulative_weight_crossing_one_half():
    """The reference: sort, accumulate the weights, take the first value whose cumulative weight
    reaches ½. Negative, zero, tied and tiny values and a dominant particle included."""
    rng = np.random.default_rng(11)
    cases = [rng.lognormal(2.0, 1.0, 1000), rng.normal(0.0, 1e-9, 500), np.round(rng.normal(0, 3, 400)),
             np.concatenate([rng.normal(-5, 1, 300), [0.0, -0.0, 1e-30], rng.normal(5, 1, 300)])]
    for k, f in enumerate(cases):
        w = rng.dirichlet(np.full(len(f), 0.3 if k == 2 else 1.0))
        if k == 3:
            w[len(f) // 2] += 0.3  # one heavy particle
            w /= w.sum()
        f32, w32 = f.astype(np.float32), w.astype(np.float32)
        order = np.argsort(f32, kind="stable")
        expected = f32[order][np.searchsorted(np.cumsum(w32[order], dtype=np.float64), 0.5)]
        assert float(_weighted_median(jnp.asarray(f32), jnp.asarray(w32))) == expected
