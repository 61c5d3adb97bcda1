"""The policy on a real particle-filter posterior (assimilation.online): a replayed stream."""

import numpy as np
import pytest

from assimilation import Dose, load_model
from assimilation.events import Reading
from assimilation.online import init, particles, predict, update
from dosing_policy import (VANCOMYCIN_AUC24, assessment_event, AlertPolicy, Grid, Kind, ReadingEvent, Regimen, alert_step, check_reading,
                           forecast, from_particles, initial_alert_state, recommend)

MODEL = "two_compartment_infusion"
DOSES = [Dose(0.0, 1500.0, 0, 2.0), Dose(12.0, 1000.0, 0, 1.0), Dose(24.0, 1000.0, 0, 1.0)]
READINGS = [Reading(11.5, 14.0), Reading(23.5, 12.0), Reading(26.0, 31.0)]  # a plausible course


@pytest.fixture(scope="module")
def posterior():
    p = init(MODEL, {"CRCL": 100.0, "WT": 75.0}, key=3, n_particles=500)
    return update(p, DOSES + READINGS)


def test_policy_forecast_agrees_with_the_engines_predict(posterior):
    """Two implementations of the same forecast: the engine's scan over propagate and the
    policy's superposition from the particles' current amounts (doses given are in the state)."""
    model = load_model(MODEL)
    sample = from_particles(particles(posterior))
    regimen = Regimen(1250.0, 12.0, 2.0, start=10.0)  # next dose at 36 h
    grid = Grid.covering(24.0, 0.5)
    fc = forecast(model, sample, DOSES, [regimen], grid)
    times = np.asarray(fc.times)
    engine = predict(posterior, times, regimen.doses(float(sample.time), 24.0))
    mine = np.asarray(fc.values[0]).T @ np.asarray(fc.weights)
    np.testing.assert_allclose(mine, np.asarray(engine.mean[0]), rtol=2e-3, atol=1e-3)


def test_outlier_on_a_replayed_stream_is_flagged_once_and_a_plausible_reading_is_not(posterior):
    model = load_model(MODEL)
    sample = from_particles(particles(posterior))
    plausible = check_reading(model, sample, DOSES, 30.0, 0, 0.0)
    plausible = check_reading(model, sample, DOSES, 30.0, 0, plausible.predicted_median)
    outlier = check_reading(model, sample, DOSES, 30.0, 0, 10 * plausible.predicted_median)
    assert plausible.tail_probability > 0.5 and outlier.tail_probability < AlertPolicy().implausible_below
    state = initial_alert_state(26.0)
    alerts = []
    for t, check, value in ((30.0, plausible, plausible.predicted_median), (30.5, outlier, 10 * plausible.predicted_median)):
        state, new = alert_step(state, ReadingEvent(t, "poc-1", "vancomycin", value, check.tail_probability, check.pit))
        alerts += new
    assert [a.kind for a in alerts] == [Kind.IMPLAUSIBLE_READING]


def test_recommendation_from_a_filter_posterior(posterior):
    model = load_model(MODEL)
    sample = from_particles(particles(posterior))
    current = Regimen(1000.0, 12.0, 1.0, start=12.0 - (float(sample.time) - 24.0))  # next dose at 36 h
    space = [Regimen(a, 12.0, 2.0, start=current.start) for a in (750.0, 1000.0, 1250.0, 1500.0, 1750.0)]
    rec = recommend(model, sample, DOSES, VANCOMYCIN_AUC24, space, current)
    assert rec.regimen in space and 0.0 <= rec.pta[0] <= 1.0 and rec.current_pta is not None
    assert rec.utility >= max(rec.evaluation.utility[: len(space)]) - 1e-6
    # handed to the alert machine: the numbers are the current regimen's, the suggestion the best one's
    event = assessment_event(rec, float(sample.time), VANCOMYCIN_AUC24)
    assert (event.pta, event.risk, event.recommended, event.gain) == (rec.current_pta[0], rec.current_risk[0], rec.regimen.describe(), rec.gain)
    # the choice also weighed the next day (Utility windows 0 and 24 h): the alert shows both days
    assert (event.later_from_h, event.later_pta, event.later_recommended_pta) == (24.0, rec.current_pta[1], rec.pta[1])
    _, alerts = alert_step(initial_alert_state(), event._replace(gain=0.5, pta=0.1))
    assert {a.kind for a in alerts} >= {Kind.EXPOSURE_OUT_OF_RANGE, Kind.RECOMMENDATION}
    suggestion = next(a for a in alerts if a.kind == Kind.RECOMMENDATION)
    assert (f"From 24 h after that dose on: {rec.pta[1]:.0%} with the suggestion, {rec.current_pta[1]:.0%} without"
            in suggestion.reason)
