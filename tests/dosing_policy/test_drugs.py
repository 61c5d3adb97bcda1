"""Dose searches of the non-AUC drugs (dosing_policy/drugs.py): warfarin (time in INR range)
and docetaxel (ANC nadir, grade 4 as a risk below the range), through the library's ODE
forecast; the numbers they report agree with a direct simulation of the chosen regimen."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose, load_model
from assimilation.models import exposure
from assimilation.simulate import amounts_at, dose_table_of
from dosing_policy import Regimen, attainment, forecast, prior_sample, recommend
from dosing_policy.drugs import DOCETAXEL, POLICIES, WARFARIN
from dosing_policy.metrics import Nadir, Target
from dosing_policy.regimen import candidate_regimens
from mipdstream.service.policy import DRUG_POLICIES, current_regimen


def test_every_library_drug_has_a_policy_and_the_service_uses_them():
    for name in ("vancomycin", "warfarin_hamberg", "docetaxel_friberg"):
        module = __import__(f"assimilation.models.{name}", fromlist=["DRUG"])
        assert module.DRUG in POLICIES
    assert DRUG_POLICIES is POLICIES


def test_risk_below_the_range_counts_values_under_toxic_below():
    values = jnp.asarray([0.2, 0.49, 0.5, 1.0, 1.6, 3.0])
    weights = jnp.full(6, 1 / 6)
    result = attainment(values, weights, Target(Nadir(), 0.5, 1.5, toxic_below=0.5), levels=None)
    assert float(result.pta) == pytest.approx(2 / 6) and float(result.risk) == pytest.approx(2 / 6)
    both = attainment(values, weights, Target(Nadir(), 0.5, 1.5, toxic_above=2.0, toxic_below=0.5), levels=None)
    assert float(both.risk) == pytest.approx(3 / 6)


def test_oral_doses_stay_boluses_in_the_current_regimen():
    doses = [Dose(0.0, 5.0, 0, 0.0), Dose(24.0, 7.5, 0, 0.0)]
    assert current_regimen(doses, 30.0, 2.0, bolus=True) == Regimen(7.5, 24.0, 0.0, start=18.0)
    assert current_regimen(doses, 30.0, 2.0, bolus=False).duration == 1.0  # an infusion without a recorded duration: 1 h


def test_warfarin_search_is_practical_and_doses_the_sensitive_genotype_lower():
    model = load_model("warfarin_hamberg")
    space = candidate_regimens(WARFARIN.space)
    assert {r.amount for r in space} == {0.5 * k for k in range(0, 31)} and {r.interval for r in space} == {24.0}  # 0 = hold
    assert all(r.duration == 0.0 for r in space)

    def best(covariates):
        sample = prior_sample(model, covariates, 128, key=4)
        rec = recommend(model, sample, [], WARFARIN.target, WARFARIN.space, None, WARFARIN.utility, WARFARIN.grid)
        return rec

    sensitive = best({"CYP2C9": "*3/*3", "VKORC1": "A/A", "AGE": 75.0})
    ordinary = best({"CYP2C9": "*1/*1", "VKORC1": "G/G", "AGE": 50.0})
    assert sensitive.regimen.amount < ordinary.regimen.amount
    assert sensitive.regimen.describe() == f"{sensitive.regimen.amount:g} mg q24h"
    # the reported PTA is P(TTR over 7 days >= 65 % and INR never > 4), the risk P(INR > 4), under that regimen
    sample = prior_sample(model, {"CYP2C9": "*1/*1", "VKORC1": "G/G", "AGE": 50.0}, 128, key=4)
    fc = forecast(model, sample, [], [ordinary.regimen], WARFARIN.grid, "inr")
    inr = np.asarray(fc.values[0], np.float64)
    ttr = np.asarray(exposure.fraction_of_time_in_range(fc.times, fc.values[0], 2.0, 3.0, fc.times[0], fc.times[0] + 168.0))
    above = inr.max(axis=1) > 4.0
    assert ordinary.pta[0] == pytest.approx(float(np.mean((ttr >= 0.65) & ~above)), abs=1e-6)
    assert ordinary.risk[0] == pytest.approx(float(np.mean(above)), abs=1e-6)


def test_time_in_range_below_ceiling_is_ttr_minus_one_above_the_ceiling():
    from dosing_policy.metrics import TimeInRangeBelowCeiling

    times = jnp.arange(0.0, 169.0, 1.0)
    inside = jnp.full(times.shape, 2.5)
    ramp = 1.0 + 3.5 * times / 168.0  # 1 -> 4.5: 2-3 for 2/7 of the week, above 4 at the end
    metric = TimeInRangeBelowCeiling(2.0, 3.0, 4.0)
    values = np.asarray(metric(times, jnp.stack([inside, ramp]), 0.0))
    assert values[0] == pytest.approx(1.0) and values[1] == pytest.approx(1.0 / 3.5 - 1.0, abs=1e-5)


def test_docetaxel_search_prefers_a_lower_dose_for_a_more_sensitive_marrow_and_reports_grade_4_risk():
    model = load_model("docetaxel_friberg")
    names = list(model.population.names)
    base = prior_sample(model, {}, 48, key=7)

    def with_slope(factor):
        """The marrow's sensitivity to docetaxel: the drug-effect slope SL times ``factor``."""
        lp = np.array(base.log_params)
        lp[:, names.index("SL")] += np.log(factor)
        return base._replace(log_params=jnp.asarray(lp))

    sensitive = recommend(model, with_slope(2.0), [], DOCETAXEL.target, DOCETAXEL.space, None, DOCETAXEL.utility, DOCETAXEL.grid)
    tolerant = recommend(model, with_slope(0.5), [], DOCETAXEL.target, DOCETAXEL.space, None, DOCETAXEL.utility, DOCETAXEL.grid)
    assert 40.0 <= sensitive.regimen.amount < tolerant.regimen.amount <= 200.0
    # risk = P(nadir < 0.5) of the particles under the chosen dose, against the engine's own simulation
    sample = with_slope(2.0)
    times = jnp.arange(1, 85, dtype=jnp.float32) * 6.0
    table = dose_table_of(model, [Dose(0.0, sensitive.regimen.amount, 0, 1.0)])

    @jax.jit
    @jax.vmap
    def nadir(lp):
        xs = amounts_at(model, lp, table, times)
        return jnp.min(jax.vmap(lambda x: model.analytes[0].predict(model.parameters(lp), x))(xs))

    nadirs = np.asarray(nadir(sample.log_params), np.float64)
    assert sensitive.risk[0] == pytest.approx(float(np.mean(nadirs < 0.5)), abs=1.5 / 48)
    assert sensitive.pta[0] == pytest.approx(float(np.mean((nadirs >= 0.5) & (nadirs <= 1.5))), abs=1.5 / 48)


def test_thinned_sample_keeps_the_weighted_distribution():
    from dosing_policy.sample import PosteriorSample, thinned

    rng = np.random.default_rng(0)
    values = rng.normal(size=(4000, 1))
    log_w = -0.5 * (values[:, 0] - 1.0) ** 2 / 0.25  # reweights N(0, 1) towards mean 0.8, sd ~0.45
    sample = PosteriorSample(jnp.asarray(values, jnp.float32), jnp.zeros((4000, 1), jnp.float32),
                             jnp.asarray(log_w - np.log(np.sum(np.exp(log_w))), jnp.float32), jnp.float32(3.0))
    small = thinned(sample, 200)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    mean = float(np.sum(w * values[:, 0]))
    sd = float(np.sqrt(np.sum(w * (values[:, 0] - mean) ** 2)))
    assert small.log_params.shape == (200, 1) and float(small.time) == 3.0
    np.testing.assert_allclose(np.exp(np.asarray(small.log_weights)), 1 / 200, rtol=1e-5)
    # Monte Carlo SE of a 200-draw mean: sd/sqrt(200) = 0.034 (40 seeds: no bias, SD 0.034)
    assert float(np.mean(small.log_params)) == pytest.approx(mean, abs=0.11)
    assert float(np.std(small.log_params)) == pytest.approx(sd, rel=0.15)
    assert thinned(small, 500) is small
    assert mean > 0.7  # the weights did matter


def test_a_risk_below_the_range_is_worded_as_such_in_the_toxicity_alert():
    from dosing_policy import Kind, Recommendation, alert_step, assessment_event, initial_alert_state

    rec = Recommendation(Regimen(60.0, 504.0, 1.0), 0.5, (0.6,), (0.4,), (0.7,), None, None, None, None, None, None)
    event = assessment_event(rec, 10.0, DOCETAXEL.target)
    assert event.risk_condition == "nadir falls below 0.5" and event.later_from_h is None  # one window: nothing later to show
    _, alerts = alert_step(initial_alert_state(), event)
    toxicity = [a for a in alerts if a.kind == Kind.TOXICITY_RISK]
    assert len(toxicity) == 1 and "nadir falls below 0.5" in toxicity[0].reason and "exceeds" not in toxicity[0].reason
    vancomycin = assessment_event(rec._replace(risk=(0.4,)), 10.0, POLICIES["vancomycin"].target)
    assert vancomycin.risk_condition == "auc24 exceeds 600"
    # warfarin's metric is time in range, its risk is of the INR itself: the target names the clause whole
    warfarin = assessment_event(rec._replace(risk=(0.4,)), 10.0, POLICIES["warfarin"].target)
    _, alerts = alert_step(initial_alert_state(), warfarin)
    [toxicity] = [a for a in alerts if a.kind == Kind.TOXICITY_RISK]
    assert toxicity.reason.startswith("40% probability that INR rises above 4 within the week over")
    assert toxicity.numbers["risk_label"] == "INR rises above 4 within the week"


def test_a_single_chemotherapy_dose_is_taken_to_repeat_at_the_cycle_length():
    doses = [Dose(0.0, 120.0, 0, 1.0)]
    regimen = current_regimen(doses, 100.0, DOCETAXEL.grid.step, DOCETAXEL.bolus, DOCETAXEL.usual_interval)
    assert regimen == Regimen(120.0, 504.0, 1.0, start=402.0)  # next cycle at 504 h, on the 6 h grid; 1 h stays 1 h
    assert (POLICIES["vancomycin"].usual_interval, WARFARIN.usual_interval) == (12.0, 24.0)
    pills = [Dose(0.0, 5.0, 0, 0.0), Dose(28.0, 5.0, 0, 0.0)]  # a late evening dose
    assert current_regimen(pills, 30.0, 2.0, True, 24.0, fixed_interval=True).interval == 24.0
    assert current_regimen(pills, 30.0, 2.0, True, 24.0).interval == 28.0


def test_the_vancomycin_search_never_offers_more_than_the_daily_cap():
    from dosing_policy.regimen import VANCOMYCIN_MAX_DAILY_MG, VANCOMYCIN_SPACE, RegimenSpace

    offered = candidate_regimens(POLICIES["vancomycin"].space)
    assert POLICIES["vancomycin"].space is VANCOMYCIN_SPACE and VANCOMYCIN_MAX_DAILY_MG == 4500.0
    assert max(r.daily_dose for r in offered) == 4500.0  # e.g. 1500 mg q8h: the cap is reached, not undershot
    assert max(r.daily_dose for r in candidate_regimens(RegimenSpace())) > 4500.0  # without it the search would go higher


def test_a_team_range_becomes_the_search_target_of_the_same_quantity():
    vanco, warfarin, docetaxel = POLICIES["vancomycin"], POLICIES["warfarin"], POLICIES["docetaxel"]
    own = vanco.target_for(450.0, 650.0)
    assert (own.low, own.high, own.toxic_above, own.metric) == (450.0, 650.0, 650.0, vanco.target.metric)
    valve = warfarin.target_for(2.5, 3.5)  # e.g. a mechanical mitral valve
    assert (valve.metric.low, valve.metric.high, valve.metric.ceiling, valve.low) == (2.5, 3.5, 4.0, warfarin.target.low)
    nadir = docetaxel.target_for(1.0, 2.0)
    assert (nadir.low, nadir.high, nadir.toxic_below) == (1.0, 2.0, 0.5)  # grade 4 stays the risk
    for policy in (vanco, warfarin, docetaxel):
        assert policy.clinical.source and policy.clinical.low < policy.clinical.high
