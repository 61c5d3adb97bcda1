"""When one more level is most informative, and telling the patient's point-of-care meter.

:func:`advise` answers the API's next-sample route, and after every regimen assessment the
policy thread hands the patient's posterior to :class:`SampleRequestPublisher`, which sends
the advice to each point-of-care meter enrolled to the patient as a retained ``SampleRequest``
on ``mipd/v1/dev/{device_id}/schedule`` (wire contract v1). The meter, or its app, reminds the
patient at that time; its reading comes back like any other.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

from assimilation import Dose, load_model
from assimilation.online import Posterior, particles
from ingest.registry import Registry
from mipdstream.service import targets
from mipdstream.service.state_db import PatientRecord, RegimenRecord, ServiceDB
from wire.messages import SampleRequest
from wire.topics import TopicKind, device_topic

log = logging.getLogger(__name__)

WINDOW_H = (0.5, 24.0)  # sample no sooner than 30 min from now, within the next day
METER_KINDS = ("poc-meter",)  # registry kinds that take samples on request
_lock = threading.Lock()  # one suggestion at a time: jitted kernels, 2-core machines


class SampleAdvice(NamedTuple):
    time_h: float  # model h
    metric: str  # exposure metric whose uncertainty the level reduces most, e.g. auc24
    reduction: float  # expected fraction of its variance removed
    regimen: str  # the regimen assumed until then


def next_sample(patient: PatientRecord, model_name: str, posterior: Posterior, regimen: RegimenRecord | None,
                stored_doses) -> SampleAdvice | str:
    """:func:`advise` on the patient's stored dose records."""
    from mipdstream.service.events import dose_event

    history = [e.event for d in stored_doses if (e := dose_event(patient, d)) is not None]
    return advise(patient, model_name, posterior, regimen, history)


def advise(patient: PatientRecord, model_name: str, posterior: Posterior, regimen: RegimenRecord | None,
           history: Sequence[Dose]) -> SampleAdvice | str:
    """The most informative time for the next level in the coming 24 h, or why there is none.

    The regimen assumed is the one set for the patient, else the one its doses so far follow."""
    from dosing_policy import Regimen, from_particles, suggest_sample_time
    from mipdstream.service.policy import current_regimen

    policy = targets.drug_policy(model_name)
    if policy is None:
        return f"no dosing policy for model {model_name!r}"
    target, grid = policy.target, policy.grid
    sample = from_particles(particles(posterior))
    now_h = float(sample.time)
    history = list(history)
    if regimen is not None:
        first = patient.hours(regimen.start_s)
        offset = max(0.0, first - now_h) if first >= now_h else (first - now_h) % regimen.interval_h
        step = grid.step  # the policy's forecast grid: regimen times must lie on it
        on_grid = lambda h, least=0.0: max(least, round(h / step) * step)
        planned = Regimen(regimen.amount_mg, on_grid(regimen.interval_h, step), on_grid(regimen.duration_h),
                          on_grid(offset) % on_grid(regimen.interval_h, step))
    else:
        planned = current_regimen(history, now_h, grid.step, policy.bolus, policy.usual_interval, len(policy.space.intervals) == 1)
    if planned is None:
        return "no regimen: set one, or record doses"
    try:
        with _lock:
            suggestion = suggest_sample_time(posterior.model, sample, history, planned, target, WINDOW_H, grid=grid)
    except ValueError as error:  # e.g. a regimen the policy's grid cannot represent
        return f"no suggestion: {error}"
    return SampleAdvice(suggestion.time, suggestion.metric, float(suggestion.reduction), planned.describe())


class SampleRequestPublisher:
    """Sends the newest advice to the point-of-care meters enrolled to the patient now.

    Advice that moved less than ``min_change_h`` from the request last sent to a meter is not
    sent again: the retained request stands."""

    def __init__(self, url: str, registry: Registry, db: ServiceDB, client_id: str = "mipd-schedule",
                 protocol: str = "auto", min_change_h: float = 0.25):
        from ingest.mqtt import connect

        self._registry, self._db, self._min_change_h = registry, db, min_change_h
        self._client, _ = connect(url, client_id, protocol=protocol)
        self._sent: dict[str, float] = {}  # device id -> time_h last requested

    def meters(self, patient_id: str, now_s: float) -> list[str]:
        return sorted(
            e.device_id for e in self._registry.enrollments(patient_id)
            if e.valid_from <= now_s and (e.valid_to is None or now_s < e.valid_to)
            and self._registry.kind(e.device_id) in METER_KINDS
        )

    def __call__(self, patient: PatientRecord, posterior: Posterior, doses: Sequence[Dose]) -> list[SampleRequest]:
        now_s = time.time()
        meters = self.meters(patient.patient_id, now_s)
        if not meters:
            return []
        model = load_model(patient.model)
        advice = advise(patient, model.name, posterior, self._db.regimen(patient.patient_id), doses)
        if isinstance(advice, str):
            log.debug("patient %s: no sample request (%s)", patient.patient_id, advice)
            return []
        analyte = model.analytes[0].code or model.analytes[0].name
        sent = []
        for device_id in meters:
            last = self._sent.get(device_id)
            if last is not None and abs(advice.time_h - last) < self._min_change_h:
                continue
            request = SampleRequest(
                id=f"sr-{int(now_s * 1000)}", t=round(patient.origin_s + 3600 * advice.time_h, 3), n=analyte,
                issued_at=round(now_s, 3),
                reason=f"one level then removes ~{advice.reduction:.0%} of the {advice.metric} variance under {advice.regimen}"[:200],
            )
            result = self._client.publish(device_topic(device_id, TopicKind.SCHEDULE),
                                          json.dumps(request.model_dump()), qos=1, retain=True)
            if result.rc != 0:
                log.warning("sample request for %s not queued for MQTT (rc=%s)", device_id, result.rc)
                continue
            self._sent[device_id] = advice.time_h
            sent.append(request)
        return sent

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
