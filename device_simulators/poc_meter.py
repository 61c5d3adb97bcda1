"""A point-of-care meter: a finger-prick or home analyser, used at sparse, chosen times:
scheduled ones, and (`MeterOnRequest`) the times the service suggests.

It measures plasma/blood directly (no lag) with a laboratory-like error: proportional
plus additive noise, a limit of quantification, and a result uploaded a little after the
sample was taken (the `t` of the reading is the sampling time, as the contract says).
The default error figures are ASSUMPTIONS of the order of a laboratory immunoassay, not a
vendor's specification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from device_simulators.device import DeviceIdentity
from device_simulators.message import Message, encode
from device_simulators.reading import reading_document, reading_messages
from device_simulators.trajectory import Trajectory
from wire.messages import SampleRequest


@dataclass(frozen=True)
class PocMeterParams:
    """Error model of a point-of-care meter. Values in the analyte's canonical unit."""

    analyte: str = "20578-1"
    """Analyte code (vancomycin plasma by default; 751-8 ANC, 34714-6 INR, 2160-0 creatinine)."""
    unit: str = "mg/L"
    noise_cv: float = 0.08
    """Proportional error, fraction of the value."""
    noise_sd: float = 0.3
    """Additive error SD, in `unit`."""
    loq: float = 2.0
    """Limit of quantification, in `unit`."""
    resolution: float = 0.1
    """Reported values are rounded to this, in `unit`."""
    timing_sd_s: float = 600.0
    """SD of the actual sampling time around the scheduled one, s (the patient is not punctual)."""
    skip_probability: float = 0.05
    """Probability that a scheduled measurement is not done at all."""
    upload_delay_s: float = 120.0
    """Time from sampling to upload, s (analysis time of the meter)."""


POC_PRESETS: dict[str, PocMeterParams] = {
    "vancomycin": PocMeterParams(),
    "creatinine": PocMeterParams(analyte="2160-0", unit="mg/dL", noise_cv=0.05, noise_sd=0.02, loq=0.1, resolution=0.01),
    "anc": PocMeterParams(analyte="751-8", unit="10*9/L", noise_cv=0.10, noise_sd=0.05, loq=0.1, resolution=0.01),
    "inr": PocMeterParams(analyte="34714-6", unit="{INR}", noise_cv=0.06, noise_sd=0.0, loq=0.8, resolution=0.1),
}


class PocMeter:
    def __init__(self, identity: DeviceIdentity, params: PocMeterParams, rng: np.random.Generator):
        self.identity = identity
        self.params = params
        self.rng = rng

    def sample_times(self, scheduled: Sequence[float]) -> np.ndarray:
        """Actual sampling times: scheduled ones, jittered, some skipped."""
        p = self.params
        scheduled = np.asarray(scheduled, dtype=float)
        done = self.rng.random(len(scheduled)) >= p.skip_probability
        jitter = self.rng.normal(0.0, p.timing_sd_s, len(scheduled))
        return np.sort((scheduled + jitter)[done])

    def measure(self, truth: Trajectory, times: np.ndarray) -> list[tuple[float, float, bool]]:
        """(time, reported value, bloq) at each sampling time."""
        p = self.params
        true = np.asarray(truth(times), dtype=float)
        sd = np.sqrt(p.noise_sd**2 + (p.noise_cv * true) ** 2)
        values = true + self.rng.normal(0.0, 1.0, len(times)) * sd
        if p.resolution > 0:
            values = np.round(values / p.resolution) * p.resolution
        bloq = values < p.loq
        values = np.where(bloq, p.loq, values)
        return list(zip(times.tolist(), values.tolist(), bloq.tolist()))

    def messages(self, samples: list[tuple[float, float, bool]]) -> list[Message]:
        return reading_messages(self.identity, self.params.analyte, self.params.unit, samples, self.params.upload_delay_s)


def meter_messages(identity: DeviceIdentity, samples: Sequence[tuple[float, PocMeterParams, float, bool]]) -> list[Message]:
    """Messages of a meter measuring several analytes: (time, analyte params, value, bloq), in time order."""
    topic = identity.topic("reading")
    return [
        Message(t + p.upload_delay_s, topic, encode(reading_document(identity, t, p.analyte, p.unit, v, bloq)))
        for t, p, v, bloq in samples
    ]


@dataclass
class MeterOnRequest:
    """A meter whose patient also samples when the service asks: a `SampleRequest` on the
    meter's schedule topic (wire contract v1) is answered by one sample near the requested
    time, with the meter's usual timing error, skips and upload delay."""

    meter: PocMeter
    truth: Trajectory
    """The true level of the meter's analyte (canonical unit), as for the scheduled samples."""
    end_t: float
    """Samples at or after this (the end of the simulated period) are not taken."""
    answered: set[str] = field(default_factory=set)

    @property
    def device_id(self) -> str:
        return self.meter.identity.device_id

    def respond(self, request: SampleRequest, now_t: float) -> list[Message]:
        """Messages of the sample taken for `request` (none for a request already answered,
        e.g. the retained one redelivered, for another analyte, or one the patient skips)."""
        if request.id in self.answered or request.n != self.meter.params.analyte:
            return []
        self.answered.add(request.id)
        # the patient cannot sample in the past: a request already due is done now
        times = np.maximum(self.meter.sample_times([max(request.t, now_t)]), now_t)
        times = times[times < self.end_t]
        return self.meter.messages(self.meter.measure(self.truth, times))
