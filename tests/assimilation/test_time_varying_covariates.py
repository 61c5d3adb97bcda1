"""Time-varying covariates: a creatinine clearance that halves mid-course, against a brute-force
importance sampler written from the closed-form solution (no engine code), and in replay."""

import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose, LinearCompartments, LogNormal, Model, Population, PowerEffect, online
from assimilation.events import CovariateChange, Reading
from assimilation.model import Analyte

DOSE, CHANGE, SECOND = 500.0, 30.0, 36.0
CL, V, OMEGA_CL, OMEGA_V, EXPONENT, SIGMA = 4.0, 50.0, 0.3, 0.2, 0.75, 0.1
CRCL_BEFORE, CRCL_AFTER = 100.0, 40.0
LEVELS = ((2.0, 9.1), (12.0, 4.6), (38.0, 11.2), (46.0, 9.3))  # (h, mg/L)
PREDICT_AT = np.array([60.0])

MODEL = Model(
    name="tv_covariate_test",
    population=Population(("CL", "V"), np.array([CL, V]), np.diag([OMEGA_CL**2, OMEGA_V**2]),
                          (PowerEffect("CL", "CRCL", 100.0, EXPONENT),)),
    dynamics=LinearCompartments(1, lambda p: jnp.array([[-p["CL"] / p["V"]]])),
    compartments=("central",),
    analytes=(Analyte("c", lambda p, x: x[0] / p["V"], LogNormal(SIGMA)),),
)


def _events():
    return [Dose(0.0, DOSE), Dose(SECOND, DOSE), CovariateChange(CHANGE, {"CRCL": CRCL_AFTER})] + [Reading(t, y) for t, y in LEVELS]


def _amount(t, k_before, k_after):
    """Closed form: elimination rate k_before until CHANGE, k_after from then on."""
    at_change = DOSE * np.exp(-k_before * CHANGE)
    first = np.where(t < CHANGE, DOSE * np.exp(-k_before * t), at_change * np.exp(-k_after * (t - CHANGE)))
    second = np.where(t < SECOND, 0.0, DOSE * np.exp(-k_after * np.clip(t - SECOND, 0.0, None)))
    return first + second


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(9)
    m = 400_000
    eta_cl, eta_v = OMEGA_CL * rng.standard_normal(m), OMEGA_V * rng.standard_normal(m)
    v = V * np.exp(eta_v)
    k_before = CL * (CRCL_BEFORE / 100.0) ** EXPONENT * np.exp(eta_cl) / v
    k_after = CL * (CRCL_AFTER / 100.0) ** EXPONENT * np.exp(eta_cl) / v
    log_lik = sum(-0.5 * ((np.log(y) - np.log(_amount(t, k_before, k_after) / v)) / SIGMA) ** 2 for t, y in LEVELS)
    w = np.exp(log_lik - log_lik.max())
    w /= w.sum()
    mean = lambda x: float(w @ x)  # noqa: E731
    sd = lambda x: float(np.sqrt(w @ (x - mean(x)) ** 2))  # noqa: E731
    log_cl_now = np.log(CL * (CRCL_AFTER / 100.0) ** EXPONENT) + eta_cl
    level = _amount(PREDICT_AT[0], k_before, k_after) / v
    return {"log_cl_now": (mean(log_cl_now), sd(log_cl_now)), "level": (mean(level), sd(level)), "ess": 1.0 / float(w @ w)}


@pytest.mark.parametrize("method, n, tolerance", [("pf", 20000, 0.15), ("enkf", 4000, 0.5)])
def test_covariate_change_matches_importance_sampling(reference, method, n, tolerance):
    """The current log CL (after the change) and the level at 60 h within ``tolerance``
    reference SDs; the posterior's covariates are the new ones."""
    assert reference["ess"] > 2000
    posterior = online.update(online.init(MODEL, {"CRCL": CRCL_BEFORE}, 1, n, method), _events())
    p = online.particles(posterior)
    w = np.exp(p.log_weights.astype(np.float64))
    w /= w.sum()
    ref_mean, ref_sd = reference["log_cl_now"]
    assert abs(float(w @ p.log_params[:, 0]) - ref_mean) < tolerance * ref_sd
    ref_mean, ref_sd = reference["level"]
    assert abs(float(online.predict(posterior, PREDICT_AT).mean[0, 0]) - ref_mean) < tolerance * ref_sd
    assert posterior.covariates[0]["CRCL"] == CRCL_AFTER


def test_a_constant_covariate_misses_the_reference(reference):
    """The check above can fail: the same levels with CRCL kept at 100 give another current CL."""
    events = [e for e in _events() if not isinstance(e, CovariateChange)]
    posterior = online.update(online.init(MODEL, {"CRCL": CRCL_BEFORE}, 1, 20000, "pf"), events)
    p = online.particles(posterior)
    w = np.exp(p.log_weights.astype(np.float64))
    w /= w.sum()
    ref_mean, ref_sd = reference["log_cl_now"]
    assert abs(float(w @ p.log_params[:, 0]) - ref_mean) > 0.5 * ref_sd


def test_change_in_one_update_equals_change_across_updates():
    """Events given at once or split at the change give the same posterior (same key)."""
    events = _events()
    together = online.update(online.init(MODEL, {"CRCL": CRCL_BEFORE}, 4, 500, "pf"), events)
    split = online.init(MODEL, {"CRCL": CRCL_BEFORE}, 4, 500, "pf")
    early = [e for e in events if e.time < CHANGE]
    split = online.update(split, early)
    split = online.update(split, [e for e in events if e.time >= CHANGE])
    np.testing.assert_allclose(online.particles(together).log_params, online.particles(split).log_params, rtol=1e-5)
    np.testing.assert_allclose(online.particles(together).amounts, online.particles(split).amounts, rtol=1e-4)


def test_covariate_change_errors():
    posterior = online.update(online.init(MODEL, {"CRCL": 100.0}, 0, 100, "pf"), [Reading(10.0, 5.0)])
    with pytest.raises(ValueError, match="covariate change at t=5"):
        online.update(posterior, [CovariateChange(5.0, {"CRCL": 50.0})])
    with pytest.raises(ValueError, match="does not take covariate or sensor changes"):
        online.update(online.init(MODEL, {"CRCL": 100.0}, 0, 100, "map"), [CovariateChange(5.0, {"CRCL": 50.0})])


def test_replay_reads_a_changing_covariate_column(tmp_path):
    """A NONMEM dataset whose CRCL column changes within a patient replays as a covariate
    change at that row's time: the same forecasts as the events given directly."""
    from assimilation import replay
    from mipdstream.replay import read_nonmem_csv

    rows = ["ID,TIME,AMT,DV,EVID,MDV,CRCL", f"1,0,{DOSE},.,1,1,{CRCL_BEFORE}"]
    rows += [f"1,{t},.,{y},0,0,{CRCL_BEFORE if t < CHANGE else CRCL_AFTER}" for t, y in LEVELS[:2]]
    rows += [f"1,{SECOND},{DOSE},.,1,1,{CRCL_AFTER}"] + [f"1,{t},.,{y},0,0,{CRCL_AFTER}" for t, y in LEVELS[2:]]
    path = tmp_path / "tv.csv"
    path.write_text("\n".join(rows) + "\n")
    (patient,) = read_nonmem_csv(path, MODEL)
    changes = [e for e in patient.events if isinstance(e, CovariateChange)]
    assert patient.covariates == {"CRCL": CRCL_BEFORE}
    assert [(c.time, c.values) for c in changes] == [(SECOND, {"CRCL": CRCL_AFTER})]  # first row with the new value
    forecasts = replay.replay(MODEL, [patient], "pf", 2000, seed=3)
    constant = replay.replay(MODEL, [patient._replace(events=[e for e in patient.events if not isinstance(e, CovariateChange)])], "pf", 2000, seed=3)
    assert [f.pred_mean for f in forecasts[:2]] == pytest.approx([f.pred_mean for f in constant[:2]], rel=1e-5)
    assert forecasts[3].pred_mean < 0.95 * constant[3].pred_mean or forecasts[3].pred_mean > 1.05 * constant[3].pred_mean
