"""Alerts as a small pure state machine: ``step(state, event, policy) -> (state, alerts)``.

One machine per patient. Events are what the service learns: a reading checked against the
posterior predictive (:mod:`.plausibility`), an exposure assessment (PTA, risk and the
recommendation, :mod:`.recommend`), a device's expected cadence, or the clock.

Conditions with a duration (exposure out of range, toxicity risk, recommendation
available, stale sensor, model misfit) are raised once when their *enter* threshold is
crossed and cleared once when their *exit* threshold is crossed (hysteresis: nothing in
between), are not raised again while active (deduplication: one condition, one alert), and
not re-raised within ``cooldown`` h of their last raise. An implausible reading is a
one-off alert, rate-limited per source by the same cooldown. Every alert carries the
numbers behind it, a plain-language reason and the reproducibility record of the event.

Default thresholds are operating choices, not clinical evidence; tune them on replayed
streams. Misfit: under a calibrated model the predictive PITs are independent uniforms, so
the last ``misfit_run`` prediction errors all share a sign with probability 2^(1−run):
3e-5 per reading for 16, about 1 % per day for a sensor reading every 5 min. A sensor whose
errors persist (``ReadingEvent.persistence``, from the analyte's ``persistence_h``) counts one
error per persistence time, so its run of 16 spans 16 independent errors (32 h at 2 h), not
80 minutes of one calibration error. For daily point-of-care levels a shorter run (4-5)
fits better: set it per deployment.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple

__all__ = ["Kind", "Severity", "Alert", "AlertPolicy", "AlertState", "ReadingEvent", "AssessmentEvent",
           "SourceEvent", "ClockEvent", "initial_state", "step"]


class Kind(str, Enum):
    EXPOSURE_OUT_OF_RANGE = "exposure_out_of_range"
    TOXICITY_RISK = "toxicity_risk"
    RECOMMENDATION = "recommendation_available"
    STALE_SENSOR = "stale_sensor"
    IMPLAUSIBLE_READING = "implausible_reading"
    MODEL_MISFIT = "model_misfit"


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(NamedTuple):
    kind: Kind
    severity: Severity
    status: str  # "raised" | "cleared"
    time: float  # h
    subject: str  # "patient" or a source (device) id
    numbers: dict
    reason: str
    record: Any = None  # provenance.Provenance of the event


class AlertPolicy(NamedTuple):
    out_of_range_enter: float = 0.6  # P(metric outside the target range) ≥ this raises
    out_of_range_exit: float = 0.4  # ... ≤ this clears
    out_of_range_critical: float = 0.9
    toxicity_enter: float = 0.25  # P(metric > toxic threshold)
    toxicity_exit: float = 0.10
    toxicity_critical: float = 0.5
    recommendation_enter: float = 0.10  # expected-utility gain of the recommended over the current regimen
    recommendation_exit: float = 0.03
    stale_factor: float = 3.0  # stale after no reading for stale_factor × expected cadence
    implausible_below: float = 1e-3  # two-sided predictive tail probability
    misfit_run: int = 16  # the last misfit_run errors of one sign raise
    misfit_exit: int = 11  # clears when at most this many of the last misfit_run share the majority sign
    cooldown: float = 6.0  # h


class ReadingEvent(NamedTuple):
    time: float
    source: str
    analyte: str
    value: float
    tail_probability: float
    pit: float
    record: Any = None
    persistence: float = 0.0
    """h the source's errors persist (the model analyte's ``persistence_h``): prediction errors
    closer together than this are not independent evidence, so one per ``persistence`` counts
    towards the misfit run (a sensor's calibration error alone would otherwise raise it)."""


class AssessmentEvent(NamedTuple):
    time: float
    metric: str
    low: float
    high: float
    pta: float
    risk: float
    median: float
    current: str  # description of the current regimen
    recommended: str | None = None
    recommended_pta: float | None = None
    gain: float = 0.0  # expected-utility gain of switching
    record: Any = None
    risk_condition: str = ""  # what the risk is the probability of, a clause, e.g. "auc24 exceeds 600" (default: <metric> exceeds ``high``)
    later_from_h: float | None = None  # start of the last window the choice also weighed (h after ``time``), if any
    later_pta: float | None = None  # the current regimen's PTA in that window
    later_recommended_pta: float | None = None  # the suggested regimen's PTA in that window
    pta_label: str = ""  # what the PTA is the probability of, in words (default: "<metric> in <low>-<high>")
    window_label: str = "the next window"  # the first window, in words, e.g. "the next 24 h"
    lead_h: float = 0.0  # h from the assessment to ``time`` (the next dose, when a change can take effect)
    recommended_median: float | None = None
    unit: str = ""  # of the medians; "1" shows them as percentages
    metric_label: str = ""  # the metric as a clinician names it, e.g. "time in range"


class SourceEvent(NamedTuple):
    """A device starts reporting with an expected cadence (h between readings)."""

    time: float
    source: str
    cadence: float
    record: Any = None


class ClockEvent(NamedTuple):
    time: float
    record: Any = None


class AlertState(NamedTuple):
    time: float
    active: frozenset  # {(kind, subject)} currently raised
    last_raised: tuple  # ((kind, subject), time) pairs
    last_seen: tuple  # (source, time) pairs
    cadence: tuple  # (source, h) pairs
    signs: tuple  # ((source, analyte), (sign, ...)) pairs, newest last
    counted: tuple = ()  # ((source, analyte), time of the latest error counted towards misfit) pairs


def initial_state(time: float = 0.0) -> AlertState:
    return AlertState(time, frozenset(), (), (), (), ())


def _set(pairs: tuple, key, value) -> tuple:
    return tuple((k, v) for k, v in pairs if k != key) + ((key, value),)


class _Step:
    """Accumulates the new state and alerts of one event (never mutates the input state)."""

    def __init__(self, state: AlertState, policy: AlertPolicy, now: float, record):
        self.state, self.policy, self.now, self.record = state, policy, now, record
        self.alerts: list[Alert] = []

    def _raise_allowed(self, key) -> bool:
        last = dict(self.state.last_raised).get(key)
        return last is None or self.now - last >= self.policy.cooldown

    def emit(self, kind, severity, status, subject, numbers, reason):
        self.alerts.append(Alert(kind, severity, status, self.now, subject, numbers, reason, self.record))

    def condition(self, kind: Kind, subject: str, enter: bool, leave: bool, severity, numbers: dict, reason: str, cleared: str):
        key = (kind, subject)
        if key in self.state.active:
            if leave:
                self.state = self.state._replace(active=self.state.active - {key})
                self.emit(kind, Severity.INFO, "cleared", subject, numbers, cleared)
        elif enter and self._raise_allowed(key):
            self.state = self.state._replace(active=self.state.active | {key}, last_raised=_set(self.state.last_raised, key, self.now))
            self.emit(kind, severity, "raised", subject, numbers, reason)

    def one_off(self, kind: Kind, subject: str, severity, numbers: dict, reason: str):
        key = (kind, subject)
        if self._raise_allowed(key):
            self.state = self.state._replace(last_raised=_set(self.state.last_raised, key, self.now))
            self.emit(kind, severity, "raised", subject, numbers, reason)


def _check_stale(s: _Step, skip: str | None = None) -> None:
    seen = dict(s.state.last_seen)
    for source, cadence in s.state.cadence:
        if source == skip or source not in seen:
            continue
        gap = s.now - seen[source]
        limit = s.policy.stale_factor * cadence
        s.condition(
            Kind.STALE_SENSOR, source, gap > limit, False, Severity.WARNING,
            {"hours_since_last_reading": gap, "expected_cadence_h": cadence, "limit_h": limit},
            f"No reading from {source} for {gap:.2g} h; it normally reports every {cadence:.2g} h.", "",
        )


def _on_reading(s: _Step, e: ReadingEvent) -> None:
    seen = dict(s.state.last_seen)
    s.state = s.state._replace(last_seen=_set(s.state.last_seen, e.source, max(e.time, seen.get(e.source, e.time))))
    s.condition(Kind.STALE_SENSOR, e.source, False, True, Severity.INFO, {"value": e.value}, "",
                f"Readings from {e.source} have resumed.")
    numbers = {"value": e.value, "analyte": e.analyte, "tail_probability": e.tail_probability, "pit": e.pit}
    if e.tail_probability < s.policy.implausible_below:
        side = "above" if e.pit > 0.5 else "below"
        s.one_off(Kind.IMPLAUSIBLE_READING, e.source, Severity.WARNING, numbers,
                  f"{e.analyte} reading {e.value:g} from {e.source} is far {side} what the model predicts "
                  f"(two-sided tail probability {e.tail_probability:.1e}); possible sensor fault, check before acting on it.")
        return  # a suspected fault does not count towards misfit
    key = (e.source, e.analyte)
    last = dict(s.state.counted).get(key)
    if e.persistence > 0 and last is not None and 0 <= e.time - last < e.persistence:
        return  # shares its error with the last one counted (see ReadingEvent.persistence)
    s.state = s.state._replace(counted=_set(s.state.counted, key, e.time))
    sign = int(e.pit > 0.5) - int(e.pit < 0.5)
    signs = (dict(s.state.signs).get(key, ()) + (sign,))[-s.policy.misfit_run:]
    s.state = s.state._replace(signs=_set(s.state.signs, key, signs))
    above, below = signs.count(1), signs.count(-1)
    majority = max(above, below)
    full = len(signs) == s.policy.misfit_run
    direction = "above" if above >= below else "below"
    s.condition(
        Kind.MODEL_MISFIT, f"{e.source}/{e.analyte}", full and majority == s.policy.misfit_run, majority <= s.policy.misfit_exit,
        Severity.WARNING, {"run": majority, "of_last": len(signs), "direction": direction},
        f"The last {majority} {e.analyte} readings from {e.source} were all {direction} the model's prediction: "
        f"the model may not fit this patient (or the sensor drifts); forecasts may be biased.",
        f"{e.analyte} prediction errors from {e.source} are balanced again.",
    )


def _on_assessment(s: _Step, e: AssessmentEvent) -> None:
    p = s.policy
    outside = 1.0 - e.pta
    condition = e.risk_condition or f"{e.metric} exceeds {e.high:g}"
    in_range = e.pta_label or f"{e.metric} in {e.low:g}-{e.high:g}"
    numbers = {"metric": e.metric, "pta": e.pta, "risk": e.risk, "median": e.median, "low": e.low, "high": e.high, "current": e.current,
               "unit": e.unit, "pta_label": in_range, "risk_label": condition, "window": e.window_label}
    s.condition(
        Kind.EXPOSURE_OUT_OF_RANGE, "patient", outside >= p.out_of_range_enter, outside <= p.out_of_range_exit,
        Severity.CRITICAL if outside >= p.out_of_range_critical else Severity.WARNING, numbers,
        f"Under the current regimen ({e.current}), the chance over {e.window_label} of {in_range} is only {e.pta:.0%} "
        f"(median {e.metric_label or e.metric} {_value(e.median, e.unit)}).",
        f"Under the current regimen, {in_range} over {e.window_label} is likely again ({e.pta:.0%}).",
    )
    s.condition(
        Kind.TOXICITY_RISK, "patient", e.risk >= p.toxicity_enter, e.risk <= p.toxicity_exit,
        Severity.CRITICAL if e.risk >= p.toxicity_critical else Severity.WARNING, numbers,
        f"{e.risk:.0%} probability that {condition} over {e.window_label} under the current regimen ({e.current}).",
        f"Probability that {condition} fell to {e.risk:.0%}.",
    )
    if e.recommended is not None:
        s.condition(
            Kind.RECOMMENDATION, "patient", e.gain >= p.recommendation_enter, e.gain <= p.recommendation_exit, Severity.INFO,
            {**numbers, "recommended": e.recommended, "recommended_pta": e.recommended_pta, "recommended_median": e.recommended_median,
             "gain": e.gain, "lead_h": e.lead_h,
             "later_from_h": e.later_from_h, "later_pta": e.later_pta, "later_recommended_pta": e.later_recommended_pta},
            _suggestion(e, in_range),
            "The current regimen is now about as good as the best alternative.",
        )


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    from .metrics import display_unit

    if unit == "1":
        return f"{value:.0%}"
    return f"{value:.3g} {display_unit(unit)}".rstrip()


def _when(lead_h: float) -> str:
    if lead_h <= 0.05:
        return "now"
    return f"from the next dose (in {lead_h:.1f} h)" if lead_h < 10 else f"from the next dose (in {lead_h:.0f} h)"


def _suggestion(e: AssessmentEvent, in_range: str) -> str:
    """What happens under the current and the suggested regimen, and when, in one paragraph.
    The later window is shown when the choice also weighed it: a suggestion can pay off only
    there (a patient still accumulating towards the range)."""
    text = (f"Suggested {_when(e.lead_h)}: {e.recommended}. The chance over {e.window_label} of {in_range} is "
            f"{e.recommended_pta:.0%} with it (median {_value(e.recommended_median, e.unit)}) and {e.pta:.0%} with the "
            f"current regimen, {e.current} (median {_value(e.median, e.unit)}).")
    if e.later_from_h is not None:
        text += (f" From {e.later_from_h:g} h after that dose on: {e.later_recommended_pta:.0%} with the suggestion, "
                 f"{e.later_pta:.0%} without.")
    return text + " Decision support: a clinician accepts or rejects it."


def step(state: AlertState, event, policy: AlertPolicy = AlertPolicy()) -> tuple[AlertState, list[Alert]]:
    """Advance the alert machine by one event; returns the new state and the alerts raised or cleared."""
    now = max(state.time, float(event.time))
    s = _Step(state._replace(time=now), policy, now, getattr(event, "record", None))
    if isinstance(event, SourceEvent):
        s.state = s.state._replace(cadence=_set(s.state.cadence, event.source, float(event.cadence)),
                                   last_seen=_set(s.state.last_seen, event.source, float(event.time)))
    elif isinstance(event, ReadingEvent):
        _on_reading(s, event)
    elif isinstance(event, AssessmentEvent):
        _on_assessment(s, event)
    elif not isinstance(event, ClockEvent):
        raise TypeError(f"unknown alert event {type(event).__name__}")
    _check_stale(s, skip=event.source if isinstance(event, (ReadingEvent, SourceEvent)) else None)
    return s.state, s.alerts
