"""A sensor changed mid-course (events.SensorChange): what restarts, and the posterior it
gives against the exact one (importance sampling) on the vancomycin ISF sensor."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose, Sensor, load_model
from assimilation.events import Reading, SensorChange
from assimilation.models import exposure
from assimilation.online import init, particles, predict, rejuvenate, update
from assimilation.parameters import prior_mean
from assimilation.simulate import amounts_at, dose_table_of

MODEL = load_model("vancomycin")
NAMES = MODEL.population.names
TYPICAL = {"CRCL": 120.0, "WT": 70.0, "DIAL": 0}
Q12H = [Dose(12.0 * i, 1000.0, "central", 1.0) for i in range(16)]
CHANGE = 72.0  # h: the first sensor is removed and a new one inserted


def test_a_sensor_change_restarts_the_sensor_and_nothing_else():
    """At the change: every particle's gain is 1, its bias and kdrift are fresh prior draws
    (independent of the old ones), and the patient's parameters, amounts and weights are those
    of the same posterior moved to that time without a change."""
    events = Q12H[:5] + [Reading(11.5, 12.0, "plasma"), Reading(30.0, 20.0, "isf"), Reading(47.0, 14.0, "isf")]
    before = update(init(MODEL, TYPICAL, key=2, n_particles=4000), events)
    changed = particles(update(before, [SensorChange(60.0, "isf")]))
    # a change of the plasma analyte, which has no sensor, only moves the posterior to 60 h
    moved = particles(update(before, [SensorChange(60.0, "plasma")]))
    assert changed.time == moved.time == 60.0
    sensor = [NAMES.index("bias"), NAMES.index("kdrift")]
    patient = [i for i in range(len(NAMES)) if i not in sensor]
    np.testing.assert_array_equal(changed.log_params[:, patient], moved.log_params[:, patient])
    np.testing.assert_array_equal(changed.amounts[:, :3], moved.amounts[:, :3])
    np.testing.assert_array_equal(changed.log_weights, moved.log_weights)
    assert moved.amounts[:, 3].max() < 1.0 and (changed.amounts[:, 3] == 1.0).all()
    prior = prior_mean(MODEL.population, TYPICAL)[sensor]
    sd = np.sqrt(np.diag(MODEL.population.omega)[sensor])
    fresh = changed.log_params[:, sensor]
    w = np.exp(changed.log_weights - changed.log_weights.max())
    w /= w.sum()
    n_eff = 1.0 / np.sum(w**2)
    mean = w @ fresh
    assert (np.abs(mean - prior) < 4 * sd / np.sqrt(n_eff)).all()
    assert np.sqrt(w @ (fresh - mean) ** 2) == pytest.approx(sd, rel=0.1)
    assert abs(np.corrcoef(fresh[:, 0], moved.log_params[:, sensor[0]])[0, 1]) < 0.1


def test_sensor_declarations_are_checked():
    isf = MODEL.analytes[1]
    with pytest.raises(ValueError, match="unknown states or parameters \\['gain'\\]"):
        replace(MODEL, analytes=(MODEL.analytes[0], replace(isf, sensor=Sensor(states=("gain",)))))
    omega = MODEL.population.omega.copy()
    omega[NAMES.index("bias"), NAMES.index("CL")] = omega[NAMES.index("CL"), NAMES.index("bias")] = 0.005
    with pytest.raises(ValueError, match="correlated in Ω"):
        replace(MODEL, population=MODEL.population._replace(omega=omega))


def test_map_and_rejuvenate_refuse_sensor_changes():
    with pytest.raises(ValueError, match="does not take covariate or sensor changes"):
        update(init(MODEL, TYPICAL, n_particles=16, method="map"), [SensorChange(5.0, "isf")])
    posterior = update(init(MODEL, TYPICAL, n_particles=16), [SensorChange(5.0, "isf")])
    with pytest.raises(ValueError, match="does not replay covariate or sensor changes"):
        rejuvenate(posterior, [SensorChange(5.0, "isf")])
    with pytest.raises(ValueError, match="sensor change at t=1.0 h is older"):
        update(posterior, [SensorChange(1.0, "isf")])


# ----------------------------------------------------------------------------- against the exact posterior

SENSORS = dict(first=(0.9, np.log(1 / 0.94) / 24.0), second=(1.12, np.log(1 / 0.97) / 24.0))  # (bias, kdrift 1/h)
ISF_TIMES = np.arange(1.0, 120.0, 4.0)
PLASMA_TIMES = np.array([11.5, 59.5, 107.5])
DAY = np.arange(120.0, 144.0 + 1e-6, 0.5)


def _isf(params, central_isf, times, first, second):
    """ISF readings written out: R · bias · gain(t) · Ci, the gain restarting with the second sensor."""
    (b1, k1), (b2, k2) = first, second
    gain = jnp.where(times < CHANGE, b1 * jnp.exp(-k1 * times), b2 * jnp.exp(-k2 * (times - CHANGE)))
    return params["R_isf"] * gain * central_isf


@pytest.fixture(scope="module")
def changed_sensor():
    """Five days on q12h, readings exactly on a truth: ISF every 4 h from two sensors (the first
    reads 10 % low and loses 6 %/day, the second, from day 3, 12 % high and 3 %/day) and three
    plasma troughs. The exact posterior of the patient's parameters and of both sensors'
    (bias, kdrift) by importance sampling from the prior (300,000 draws); its mean day-5 AUC24."""
    truth = jnp.asarray(prior_mean(MODEL.population, TYPICAL), jnp.float32).at[NAMES.index("CL")].add(np.log(0.8))
    times = np.sort(np.concatenate([ISF_TIMES, PLASMA_TIMES]))
    is_isf = np.isin(times, ISF_TIMES)
    assimilated, forecast = dose_table_of(MODEL, Q12H[:10]), dose_table_of(MODEL, Q12H[:12])
    grid, day = jnp.asarray(times, jnp.float32), jnp.asarray(DAY, jnp.float32)

    def predictions(lp, first, second):
        params = MODEL.parameters(lp)
        x = amounts_at(MODEL, lp, assimilated, grid)
        return jnp.where(jnp.asarray(is_isf), _isf(params, x[:, 2], grid, first, second), x[:, 0] / params["V1"])

    values = predictions(truth, SENSORS["first"], SENSORS["second"])
    events = Q12H[:10] + [Reading(float(t), float(v), "isf" if s else "plasma") for t, v, s in zip(times, values, is_isf)]
    events += [SensorChange(CHANGE, "isf")]

    bias, kdrift = NAMES.index("bias"), NAMES.index("kdrift")

    def weight_and_auc(draw):
        lp, second = draw[:-2], draw[-2:]  # the second sensor's (log bias, log kdrift)
        f = predictions(lp, jnp.exp(lp[jnp.array([bias, kdrift])]), jnp.exp(second))
        plasma_error, isf_error = MODEL.analytes[0].error, MODEL.analytes[1].error
        log_lik = jnp.where(jnp.asarray(is_isf), isf_error.log_likelihood(values, f), plasma_error.log_likelihood(values, f))
        params = MODEL.parameters(lp)
        return jnp.sum(log_lik), exposure.auc24(day, amounts_at(MODEL, lp, forecast, day)[:, 0] / params["V1"], 120.0)

    rng = np.random.default_rng(5)
    n = 300_000
    mean = prior_mean(MODEL.population, TYPICAL)
    draws = mean + rng.standard_normal((n, len(NAMES))) @ MODEL.population.omega_sqrt().T
    second = mean[[bias, kdrift]] + rng.standard_normal((n, 2)) * np.sqrt(np.diag(MODEL.population.omega)[[bias, kdrift]])
    draws = np.concatenate([draws, second], axis=1).astype(np.float32)
    log_lik, auc = (np.asarray(a, np.float64) for a in jax.lax.map(weight_and_auc, jnp.asarray(draws), batch_size=4096))
    w = np.exp(log_lik - log_lik.max())
    w /= w.sum()
    return dict(events=events, ess=1.0 / np.sum(w**2), auc=float(w @ auc), second_bias=float(w @ draws[:, -2]),
                second_bias_sd=float(np.sqrt(w @ (draws[:, -2] - w @ draws[:, -2]) ** 2)))


def _day5_auc(posterior):
    forecast = predict(posterior, DAY, Q12H[10:12], "plasma")
    return float(exposure.auc24(jnp.asarray(DAY, jnp.float32), jnp.asarray(forecast.mean[0], jnp.float32), 120.0))


@pytest.mark.parametrize("method, tolerance", [("pf", 0.03), ("enkf", 0.05)])
def test_filters_after_a_sensor_change_agree_with_the_exact_posterior(changed_sensor, method, tolerance):
    """The day-5 AUC24 forecast within 3 % of the exact posterior mean (the EnKF, Gaussian in
    its update, 5 %), and the bias the filter holds after the change is the new sensor's: within
    half an exact-posterior SD of its posterior mean (+0.09 on the log scale; the old sensor
    read 10 % low, −0.1). Without the change the filter keeps the old sensor's bias (checked
    by mutation: the bias assertion fails; the AUC alone can land either side, as the plasma
    levels carry most of it)."""
    ref = changed_sensor
    assert ref["ess"] > 100
    posterior = update(init(MODEL, TYPICAL, key=4, n_particles=1000, method=method), ref["events"])
    assert _day5_auc(posterior) == pytest.approx(ref["auc"], rel=tolerance)
    cloud = particles(posterior)
    w = np.exp(cloud.log_weights - cloud.log_weights.max())
    bias = float(w @ cloud.log_params[:, NAMES.index("bias")] / w.sum())
    assert abs(bias - ref["second_bias"]) < 0.5 * ref["second_bias_sd"]
