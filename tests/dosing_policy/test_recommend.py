"""Regimen search: picks the analytically optimal dose; search space is practical."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose
from assimilation.simulate import dose_table_of
from dosing_policy import (VANCOMYCIN_AUC24, AreaUnderCurve, Grid, PosteriorSample, Regimen, RegimenSpace, Target, Utility,
                           candidate_regimens, evaluate, evaluate_patients, prior_sample, recommend)

from .closed_form import lognormal_pta, one_compartment_iv, stratified_log_cl

MU, S = np.log(4.0), 0.3


def _one_parameter_case():
    """Fast elimination (k = CL/V ≈ 1/h): one dose's AUC over 48 h is A/CL to < 1e-12, so
    P(in range) = Φ((log(A/400) − mu)/s) − Φ((log(A/600) − mu)/s) exactly."""
    model = one_compartment_iv(cl=4.0, v=4.0, omega_cl=S**2)
    log_cl = stratified_log_cl(MU, S, 2000)
    sample = PosteriorSample(jnp.asarray(np.stack([log_cl, np.full_like(log_cl, np.log(4.0))], 1), jnp.float32),
                             jnp.zeros((2000, 1), jnp.float32), jnp.zeros(2000, jnp.float32), jnp.asarray(0.0, jnp.float32))
    target = Target(AreaUnderCurve(48.0, "auc48"), 400.0, 600.0, toxic_above=600.0)
    space = RegimenSpace(strength=250.0, min_amount=250.0, max_amount=4000.0, intervals=(48.0,), durations=(1.0,), max_rate=None)
    return model, sample, target, space


@pytest.mark.parametrize("toxicity_weight", [0.0, 1.0])
def test_recommendation_is_the_analytically_optimal_strength(toxicity_weight):
    model, sample, target, space = _one_parameter_case()
    amounts = np.arange(250.0, 4001.0, 250.0)
    pta, risk = lognormal_pta(amounts, 400.0, 600.0, MU, S)
    utility = pta - toxicity_weight * risk
    best = amounts[np.argmax(utility)]
    assert np.sort(utility)[-1] - np.sort(utility)[-2] > 0.01  # the case is decisive
    rec = recommend(model, sample, [], target, space, utility=Utility((0.0,), (1.0,), toxicity_weight), grid=Grid.covering(48.0, 0.25))
    assert rec.regimen.amount == best
    assert rec.pta[0] == pytest.approx(pta[np.argmax(utility)], abs=0.01)
    # the continuous optimum of PTA is a median AUC at the geometric mean of 400 and 600
    if toxicity_weight == 0.0:
        assert abs(best - 4.0 * np.sqrt(400 * 600)) <= 125.0


def test_candidates_respect_strength_rate_daily_and_single_dose_limits():
    space = RegimenSpace(max_daily=4500.0, loading_amounts=(2000.0, 2500.0))
    regimens = candidate_regimens(space)
    assert regimens
    for r in regimens:
        assert r.amount % 250 == 0 and 500 <= r.amount <= 3000
        assert r.interval in (8.0, 12.0, 24.0)
        assert r.amount / r.duration <= 600 + 1e-9  # ≤ 10 mg/min
        assert r.duration == max(1.0, np.ceil(r.amount / 600 * 2) / 2)  # the shortest allowed infusion, ≥ 60 min
        assert r.daily_dose <= 4500 + 1e-9
        if r.loading_amount:
            assert r.loading_amount / r.loading_duration <= 600 + 1e-9
    assert {r.loading_amount for r in regimens} == {0.0, 2000.0, 2500.0}


def test_recommendation_reports_the_current_regimen_beside_the_best():
    model = one_compartment_iv()
    sample = prior_sample(model, None, 200, key=1, time=12.0, amounts=np.array([300.0]))
    history = [Dose(11.5, 1000.0, 0, 1.0)]
    current = Regimen(500.0, 12.0, 1.0)
    space = [Regimen(a, 12.0, 2.0) for a in (750.0, 1000.0, 1250.0, 1500.0)]
    rec = recommend(model, sample, history, VANCOMYCIN_AUC24, space, current, record={"seed": 1})
    assert rec.current == current and rec.current_pta is not None and len(rec.pta) == 2
    assert rec.record == {"seed": 1}
    # the reported numbers are those of an evaluation of the regimens in another order
    ev = evaluate(model, sample, history, [current, *space[::-1]], VANCOMYCIN_AUC24)
    u = np.asarray(ev.utility)
    assert rec.regimen == space[::-1][int(np.argmax(u[1:]))]
    assert rec.utility == pytest.approx(u[1:].max(), abs=1e-6) and rec.current_utility == pytest.approx(u[0], abs=1e-6)
    np.testing.assert_allclose(rec.current_pta, np.asarray(ev.attainment.pta[0]), atol=1e-6)


def test_batch_evaluation_equals_one_patient_at_a_time():
    model = one_compartment_iv()
    regimens = [Regimen(a, i, 2.0) for a in (750.0, 1250.0) for i in (8.0, 12.0)]
    samples, tables, singles = [], [], []
    for p in range(3):
        s = prior_sample(model, None, 50, key=p, time=6.0 * p, amounts=np.array([100.0 * p]))
        history = [Dose(6.0 * p - 1.0, 1000.0, 0, 2.0)]
        samples.append(s)
        tables.append(dose_table_of(model, history, slots=2))
        singles.append(evaluate(model, s, history, regimens, VANCOMYCIN_AUC24))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *samples)
    result, utility = evaluate_patients(model, stacked, jax.tree.map(lambda *a: jnp.stack(a), *tables), regimens, VANCOMYCIN_AUC24)
    for p, single in enumerate(singles):
        np.testing.assert_allclose(np.asarray(result.pta[p]), np.asarray(single.attainment.pta), atol=1e-6)
        np.testing.assert_allclose(np.asarray(utility[p]), np.asarray(single.utility), atol=1e-6)


def test_regimen_doses_and_loading_doses():
    from dosing_policy.regimen import vancomycin_loading_doses

    r = Regimen(1000.0, 12.0, 2.0, start=3.0, loading_amount=2000.0, loading_duration=3.5)
    doses = r.doses(now=10.0, horizon=36.0)
    assert [(d.time, d.amount, d.duration) for d in doses] == [(13.0, 2000.0, 3.5), (25.0, 1000.0, 2.0), (37.0, 1000.0, 2.0)]
    assert r.daily_dose == 2000.0 and "load 2000 mg" in r.describe()
    # 20-35 mg/kg at 80 kg = 1600-2800 mg -> 250 mg steps; at 120 kg the 3000 mg cap (Rybak 2020)
    assert vancomycin_loading_doses(80.0) == (1500.0, 2000.0, 2500.0, 2750.0)
    assert max(vancomycin_loading_doses(120.0)) == 3000.0


@pytest.mark.parametrize("last_dose, opens", [(-100.0, True), (-10.0, False)])
def test_a_regimen_that_opens_an_occasion_meets_a_fresh_kappa(last_dose, opens):
    """IOV on CL (σ = 0.4, an occasion after a 24 h gap), every particle's κ at a stale +0.7:
    a regimen after a long pause is scored with κ ~ N(0, σ²), so log(AUC48) has SD
    √(S² + σ²) around log A − MU (closed form); within the gap the posterior's κ = 0.7 stays."""
    import dataclasses

    from assimilation.occasions import Occasions

    model, sample, target, _ = _one_parameter_case()
    sigma = 0.4
    model = dataclasses.replace(model, name="test_1cpt_iv_occasions", occasions=Occasions((("CL", sigma),), gap=24.0))
    n = sample.log_params.shape[0]
    sample = sample._replace(log_params=jnp.concatenate([sample.log_params, jnp.full((n, 1), 0.7, jnp.float32)], axis=1))
    amounts = np.array([1500.0, 2500.0, 3500.0])
    regimens = [Regimen(float(a), 48.0, 1.0) for a in amounts]
    ev = evaluate(model, sample, [Dose(last_dose, 1000.0)], regimens, target, Utility((0.0,), (1.0,)), Grid.covering(48.0, 0.25))
    mu, sd = (MU, np.hypot(S, sigma)) if opens else (MU + 0.7, S)
    pta, risk = lognormal_pta(amounts, 400.0, 600.0, mu, sd)
    np.testing.assert_allclose(np.asarray(ev.attainment.pta)[:, 0], pta, atol=0.03)
    np.testing.assert_allclose(np.asarray(ev.attainment.risk)[:, 0], risk, atol=0.03)
