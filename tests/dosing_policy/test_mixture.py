"""The posterior of a model set as one particle sample: PTA, risk and utility of the mixture are
the weighted sums of the members' (a mixture's expectation is the weighted expectation), with
each member evaluated by its own model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose, averaging, load_model
from assimilation.events import Reading
from assimilation.simulate import amounts_at, dose_table_of
from dosing_policy import VANCOMYCIN_AUC24, Grid, RegimenSpace, Utility, candidate_regimens, evaluate, prior_sample, recommend
from dosing_policy.mixture import from_averaged, mixture_sample, policy_model

NAMES = ("vancomycin", "vancomycin_thomson", "vancomycin_purwonugroho2012")
PATIENT = {"WT": 75.0, "CRCL": 70.0, "DIAL": 0, "AGE": 55.0}
HISTORY = [Dose(0.0, 1750.0, 0, 2.0)]
SPACE = RegimenSpace(start=12.0, intervals=(12.0,), min_amount=500.0, max_amount=2000.0)
WEIGHTS = np.array([0.2, 0.5, 0.3])


def _members():
    """Each model's prior particles after the loading dose (12 h), unequal within-member weights."""
    out = []
    for k, name in enumerate(NAMES):
        model = load_model(name)
        covariates = {c: PATIENT[c] for c in model.covariate_names}
        sample = prior_sample(model, covariates, 300, key=k)
        table = dose_table_of(model, HISTORY)
        at_12h = lambda lp, model=model, table=table: amounts_at(model, lp, table, jnp.asarray([12.0], jnp.float32))[0]  # noqa: E731
        x = jax.jit(jax.vmap(at_12h))(sample.log_params)
        rng = np.random.default_rng(k)
        out.append((model, sample._replace(amounts=jnp.asarray(x, jnp.float32), time=jnp.asarray(12.0, jnp.float32),
                                           log_weights=jnp.asarray(rng.normal(size=300), jnp.float32))))
    return out


def test_pta_risk_and_utility_of_a_mixture_are_the_weighted_members():
    members = _members()
    regimens = candidate_regimens(SPACE)
    grid = Grid.covering(60.0, 0.5)
    own = [evaluate(model, sample, HISTORY, regimens, VANCOMYCIN_AUC24, Utility(), grid) for model, sample in members]
    model = policy_model([m for m, _ in members])
    mixed = evaluate(model, mixture_sample([s for _, s in members], 10 * WEIGHTS), HISTORY, regimens, VANCOMYCIN_AUC24, Utility(), grid)
    for field in ("pta", "risk", "mean"):
        expected = sum(w * np.asarray(getattr(e.attainment, field), np.float64) for w, e in zip(WEIGHTS, own))
        np.testing.assert_allclose(np.asarray(getattr(mixed.attainment, field)), expected, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(np.asarray(mixed.utility), sum(w * np.asarray(e.utility) for w, e in zip(WEIGHTS, own)), atol=2e-5)
    # the members disagree, so a wrong weighting would show
    ptas = np.stack([np.asarray(e.attainment.pta) for e in own])
    assert np.abs(ptas - ptas.mean(0)).max() > 0.1


def test_a_model_of_another_structure_is_refused_with_what_differs():
    with pytest.raises(ValueError, match="log-parameter names"):
        policy_model([load_model("vancomycin"), load_model("two_compartment_infusion")])


def test_samples_at_different_times_are_refused():
    (_, a), (_, b) = _members()[:2]
    with pytest.raises(ValueError, match="different times"):
        mixture_sample([a, b._replace(time=jnp.asarray(13.0, jnp.float32))], [0.5, 0.5])


def test_recommend_takes_the_mixture_of_an_averaged_posterior():
    averaged = averaging.init(NAMES, PATIENT, 0, 200, "pf")
    averaged = averaging.update(averaged, HISTORY + [Reading(11.5, 14.0, "plasma")])
    model, sample = from_averaged(averaged, 0)
    assert sample.log_params.shape[0] == 3 * 200
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(sample.log_weights))), 1.0, rtol=1e-5)
    rec = recommend(model, sample, HISTORY, VANCOMYCIN_AUC24, SPACE, grid=Grid.covering(60.0, 0.5))
    assert 0.0 <= rec.pta[0] <= 1.0 and rec.regimen.amount >= 500.0
