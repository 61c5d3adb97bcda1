"""The fixed share keeps a model alive after one outlier and lets it recover.

Two linear-Gaussian models of one analyte (log y = log a + ε, log a ~ N(log 2, 0.3)) that
differ in their residual error: A (σ 0.3, the truth) and a much vaguer B (σ 2). Twelve
ordinary readings make A all but certain; one reading 5 log-units off (a factor of ~150: a
sample drawn from the infusion line) costs A about 120 nats against B. Without a floor A's
weight drops below e⁻¹⁰⁰ and the twelve ordinary readings after it cannot bring it back; with
ε = 0.01 it stays at ≥ ε π_A and is back above one half within those twelve readings.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Analyte, LinearCompartments, LogNormal, Model, Population, averaging
from assimilation.averaging import _datum_weights, fixed_share
from assimilation.events import Reading


def _model(name, sigma, persistence=0.0):
    return Model(
        name=name,
        population=Population(("a",), np.array([2.0]), np.array([[0.3]])),
        dynamics=LinearCompartments(1, lambda p: jnp.array([[-1.0]])),  # amounts unused
        compartments=("unused",),
        analytes=(Analyte("a", lambda p, x: p["a"], LogNormal(sigma), persistence_h=persistence),),
    )


TIGHT, VAGUE = _model("tight", 0.3), _model("vague", 2.0)
FLOOR = 0.01


def _stream():
    rng = np.random.default_rng(4)
    truth = np.log(2.0) + 0.2
    ordinary = [float(np.exp(truth + 0.3 * rng.normal())) for _ in range(24)]
    values = ordinary[:12] + [float(np.exp(truth + 5.0))] + ordinary[12:]
    return [Reading(float(k + 1), v) for k, v in enumerate(values)]


def _weights_of_tight(floor):
    averaged = averaging.init([TIGHT, VAGUE], {}, 0, 1000, "enkf", floor=floor)
    out = []
    for reading in _stream():
        averaged = averaging.update(averaged, [reading])
        out.append(averaged.weights()[0, 0])
    return np.array(out)  # after each of the 25 readings; the outlier is reading 13 (index 12)


def test_without_a_floor_one_outlier_removes_the_right_model_for_good():
    w = _weights_of_tight(0.0)
    assert w[11] > 0.99
    assert w[12] < 1e-40
    assert w[-1] < 0.01


def test_the_floor_keeps_it_alive_and_lets_it_recover():
    w = _weights_of_tight(FLOOR)
    assert w[11] > 0.99
    assert FLOOR * 0.5 - 1e-12 <= w[12] < 0.02  # at the floor ε π, not below
    assert w[-1] > 0.5
    recovered = int(np.argmax(w[13:] > 0.5)) + 1
    assert recovered <= 12


def test_fixed_share_is_bayes_then_a_mixture_with_the_prior():
    rng = np.random.default_rng(0)
    log_w = np.log(rng.dirichlet(np.ones(3), size=5).T)  # (K, P)
    increments = rng.normal(scale=3.0, size=(3, 5))
    log_prior = np.log(np.array([0.2, 0.3, 0.5]))
    share = np.array([0.0, 0.01, 0.1, 0.5, 1.0])
    bayes = np.exp(log_w + increments)
    bayes /= bayes.sum(0)
    expected = (1 - share) * bayes + share * np.exp(log_prior)[:, None]
    got = np.exp(fixed_share(log_w, increments, log_prior, share))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(got.sum(0), 1.0, rtol=1e-12)
    assert np.all(got >= share * np.exp(log_prior)[:, None] - 1e-15)


def test_a_datum_no_model_explains_leaves_the_weights():
    log_w = np.log(np.array([[0.3], [0.7]]))
    out = fixed_share(log_w, np.full((2, 1), -np.inf), np.log(np.array([0.5, 0.5])), np.array([0.1]))
    np.testing.assert_allclose(out, log_w)


def test_a_dense_sensor_shares_by_its_likelihood_weight():
    """ω = min(1, Δt / persistence) per reading of a persistent analyte, 1 otherwise: a stream's
    pull towards the prior weights does not grow with its cadence."""
    model = _model("dense", 0.3, persistence=2.0)
    last = np.full((3, 1), -np.inf)
    share, last = _datum_weights(model, last, [Reading(1.0, 5.0), None, Reading(4.0, 5.0)])
    np.testing.assert_allclose(share, [1.0, 0.0, 1.0])
    share, last = _datum_weights(model, last, [Reading(1.5, 5.0), Reading(2.0, 5.0), Reading(7.0, 5.0)])
    np.testing.assert_allclose(share, [0.25, 1.0, 1.0])
    assert _datum_weights(TIGHT, np.full((1, 1), 0.0), [Reading(0.1, 5.0)])[0][0] == 1.0


@pytest.mark.parametrize("floor", [-0.1, 1.0])
def test_a_floor_outside_zero_to_one_is_refused(floor):
    with pytest.raises(ValueError, match="floor"):
        averaging.init([TIGHT, VAGUE], {}, 0, 10, "enkf", floor=floor)
