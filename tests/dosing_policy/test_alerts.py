"""The alert state machine on replayed event streams."""

import numpy as np

from dosing_policy import (AlertPolicy, AssessmentEvent, ClockEvent, Kind, ReadingEvent, Severity, SourceEvent,
                           alert_step, initial_alert_state)

CADENCE = 5 / 60  # a reading every 5 min
POLICY = AlertPolicy()


def _run(events, policy=POLICY):
    state, alerts = initial_alert_state(), []
    for event in events:
        before = state
        state, new = alert_step(state, event, policy)
        assert before is not state or not new
        alerts += new
    return state, alerts


def _reading(t, pit=0.5, tail=None, source="isf-1", value=15.0, record=None):
    tail = 2 * min(pit, 1 - pit) if tail is None else tail
    return ReadingEvent(t, source, "vancomycin", value, tail, pit, record)


def _assess(t, pta=0.8, risk=0.05, gain=0.0, record=None):
    return AssessmentEvent(t, "auc24", 400.0, 600.0, pta, risk, 480.0, "1000 mg q12h", "1250 mg q12h", 0.85, gain, record)


def _calm_pits(n, seed=0):
    """Plausible, direction-balanced PITs (alternating halves, random magnitudes)."""
    u = np.random.default_rng(seed).uniform(0.05, 0.45, n)
    return np.where(np.arange(n) % 2 == 0, u, 1 - u)


def test_an_in_range_stream_raises_nothing():
    times = np.arange(0, 24, CADENCE)
    events = [SourceEvent(0.0, "isf-1", CADENCE)]
    for i, (t, pit) in enumerate(zip(times, _calm_pits(len(times)))):
        events.append(_reading(t, pit))
        if i % 12 == 0:
            events.append(_assess(t))
    _, alerts = _run(events)
    assert alerts == []


def test_a_dropout_raises_exactly_one_stale_alert_and_clears_when_data_return():
    events = [SourceEvent(0.0, "isf-1", CADENCE)]
    t = 0.0
    for _ in range(24):  # 2 h of readings
        events.append(_reading(t))
        t += CADENCE
    dropout_start = t
    for _ in range(36):  # 3 h with no readings: the clock ticks every 5 min
        events.append(ClockEvent(t))
        t += CADENCE
    for _ in range(12):  # readings resume
        events.append(_reading(t))
        t += CADENCE
    _, alerts = _run(events)
    assert [(a.kind, a.status) for a in alerts] == [(Kind.STALE_SENSOR, "raised"), (Kind.STALE_SENSOR, "cleared")]
    raised, cleared = alerts
    assert raised.subject == "isf-1" and raised.severity == Severity.WARNING
    # raised at the first tick after 3 × cadence without data, cleared by the first new reading
    last_reading = dropout_start - CADENCE
    assert last_reading + 3 * CADENCE - 1e-9 <= raised.time <= last_reading + 4 * CADENCE + 1e-9
    assert cleared.time == dropout_start + 36 * CADENCE
    assert raised.numbers["hours_since_last_reading"] > 3 * CADENCE and "No reading" in raised.reason


def test_an_outlier_is_flagged_once_and_a_faulty_sensor_does_not_cause_a_storm():
    events = [SourceEvent(0.0, "isf-1", CADENCE)]
    pits = _calm_pits(40)
    for i, t in enumerate(np.arange(40) * CADENCE):
        outlier = i in (10, 11, 12)  # three implausible readings in 10 min: one alert (cooldown)
        events.append(_reading(t, 0.9999995 if outlier else pits[i], tail=1e-6 if outlier else None, value=90.0 if outlier else 15.0))
    events.append(_reading(POLICY.cooldown + 1.0, 0.9999995, tail=1e-6, value=95.0))  # after the cooldown: flagged again
    _, alerts = _run(events)
    assert [a.kind for a in alerts] == [Kind.IMPLAUSIBLE_READING, Kind.IMPLAUSIBLE_READING]
    assert alerts[0].time == 10 * CADENCE and alerts[0].numbers["tail_probability"] == 1e-6
    assert "above" in alerts[0].reason


def test_exposure_alert_hysteresis_and_cooldown():
    pta = [0.8, 0.35, 0.45, 0.55, 0.65, 0.35, 0.9, 0.3]
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 11.0]  # cooldown 6 h
    _, alerts = _run([_assess(t, p) for t, p in zip(times, pta)])
    out = [(a.time, a.status) for a in alerts if a.kind == Kind.EXPOSURE_OUT_OF_RANGE]
    # raised at 1 h (P(out) 0.65 ≥ 0.6); 0.55 and 0.45 are between the thresholds: no change;
    # cleared at 4 h (0.35 ≤ 0.4); re-entry at 5 h is inside the cooldown; raised again at 11 h
    assert out == [(1.0, "raised"), (4.0, "cleared"), (11.0, "raised")]


def test_toxicity_and_recommendation_alerts_carry_numbers_reason_and_record():
    record = {"model_hash": "abc", "seed": 7}
    _, alerts = _run([_assess(0.0, pta=0.5, risk=0.6, gain=0.3, record=record), _assess(1.0, pta=0.5, risk=0.6, gain=0.3)])
    kinds = {a.kind: a for a in alerts}
    assert set(kinds) == {Kind.TOXICITY_RISK, Kind.RECOMMENDATION}  # P(out of range) 0.5 is below the enter threshold
    assert kinds[Kind.TOXICITY_RISK].severity == Severity.CRITICAL and kinds[Kind.TOXICITY_RISK].numbers["risk"] == 0.6
    assert kinds[Kind.RECOMMENDATION].numbers["recommended"] == "1250 mg q12h" and "clinician" in kinds[Kind.RECOMMENDATION].reason
    assert all(a.record == record and a.reason for a in alerts)


def test_model_misfit_after_a_run_of_one_sided_errors_and_clears_when_balanced():
    n = POLICY.misfit_run
    pits = [0.8] * (n + 5) + [0.2, 0.8] * 6  # one-sided, then balanced
    _, alerts = _run([_reading(i * CADENCE, p) for i, p in enumerate(pits)])
    misfit = [(round(a.time / CADENCE), a.status) for a in alerts if a.kind == Kind.MODEL_MISFIT]
    assert misfit[0] == (n - 1, "raised")
    assert len(misfit) == 2 and misfit[1][1] == "cleared"
    # cleared once at most misfit_exit of the last misfit_run errors share a sign
    window = pits[misfit[1][0] - n + 1 : misfit[1][0] + 1]
    assert max(sum(p > 0.5 for p in window), sum(p < 0.5 for p in window)) == POLICY.misfit_exit


def test_a_persistent_sensor_error_counts_once_per_persistence_time_towards_misfit():
    n, persistence = POLICY.misfit_run, 2.0
    one_sided = [0.8] * int(round(n * persistence / CADENCE))  # n persistence times of one-sided errors
    events = [_reading(i * CADENCE, p)._replace(persistence=persistence) for i, p in enumerate(one_sided)]
    _, alerts = _run(events)
    raised = [a for a in alerts if a.kind == Kind.MODEL_MISFIT]
    # one error counted per 2 h: the run of n is complete at the n-th counted reading, (n − 1) · 2 h in
    assert len(raised) == 1 and abs(raised[0].time - (n - 1) * persistence) < 1e-9
    # the same stream as independent readings raises after n readings (80 min): the check can fail
    _, independent = _run([_reading(i * CADENCE, p) for i, p in enumerate(one_sided)])
    assert abs([a.time for a in independent if a.kind == Kind.MODEL_MISFIT][0] - (n - 1) * CADENCE) < 1e-9


def test_a_suggestion_says_what_happens_under_each_regimen_and_when():
    event = _assess(10.0, pta=0.12, risk=0.02, gain=0.5)._replace(
        pta_label="AUC24 in 400-600 mg·h/L", window_label="the next 24 h", lead_h=2.5, recommended_median=505.0, unit="mg*h/L",
        metric_label="AUC24", median=310.0, later_from_h=24.0, later_pta=0.3, later_recommended_pta=0.7)
    _, alerts = _run([event])
    [suggestion] = [a for a in alerts if a.kind == Kind.RECOMMENDATION]
    text = suggestion.reason
    assert text.startswith("Suggested from the next dose (in 2.5 h): 1250 mg q12h.")
    assert "AUC24 in 400-600 mg·h/L is 85% with it (median 505 mg·h/L)" in text
    assert "12% with the current regimen, 1000 mg q12h (median 310 mg·h/L)" in text
    assert "From 24 h after that dose on: 70% with the suggestion, 30% without." in text
    [exposure] = [a for a in alerts if a.kind == Kind.EXPOSURE_OUT_OF_RANGE]
    assert exposure.reason == ("Under the current regimen (1000 mg q12h), the chance over the next 24 h of AUC24 in 400-600 mg·h/L "
                               "is only 12% (median AUC24 310 mg·h/L).")
