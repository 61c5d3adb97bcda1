"""A continuous interstitial-fluid biosensor (a wearable microneedle patch, say).

What it measures is not plasma: the interstitial level follows plasma with a first-order
lag, and a sensor adds its own errors: a calibration gain and offset set at insertion, a
gain that drifts as the enzyme layer ages, white noise, a warm-up with no data, dropouts
(the patch loses contact or the phone is out of range) and spikes (pressure artefacts).

The default values are ASSUMPTIONS for a plausible wearable, not a vendor's specification.
For orientation only: glucose moves from plasma to interstitial fluid with a delay of
minutes (about 5-6 min measured with a tracer by Basu et al., Diabetes 2013;62:4083-4087);
the 15 min time constant here is deliberately slower, for a larger drug molecule, and is
exactly what the tests recover from the readings (tests/simulators/test_device_models.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_simulators.device import DeviceIdentity
from device_simulators.message import Message
from device_simulators.reading import reading_messages
from device_simulators.trajectory import Trajectory, first_order_lag


@dataclass(frozen=True)
class BiosensorParams:
    """Error model of one biosensor. Concentrations in the analyte's canonical unit (mg/L)."""

    analyte: str = "x-mipd-vancomycin-isf"
    unit: str = "mg/L"
    cadence_s: float = 300.0
    """Time between readings, s."""
    warmup_s: float = 3600.0
    """No data for this long after insertion, s."""
    lag_tau_s: float = 900.0
    """Plasma-to-interstitial equilibration time constant, s (0: no lag)."""
    isf_ratio: float = 1.0
    """Steady-state interstitial / plasma concentration ratio (tissue penetration)."""
    noise_sd: float = 1.0
    """Additive white noise SD, mg/L."""
    noise_cv: float = 0.05
    """Proportional white noise, fraction of the value (0.05 = 5 %)."""
    calibration_gain_sd: float = 0.05
    """SD of the sensor's multiplicative calibration error at insertion, fraction."""
    calibration_offset_sd: float = 0.5
    """SD of the additive calibration offset at insertion, mg/L."""
    drift_per_day: float = -0.03
    """Change of gain per day since insertion, fraction per day (negative: signal decays)."""
    gaps_per_day: float = 1.0
    """Rate of dropouts (loss of contact / radio), per day."""
    gap_mean_s: float = 1800.0
    """Mean dropout length, s (exponentially distributed)."""
    loss_probability: float = 0.01
    """Probability that a single reading is lost on its own."""
    spike_probability: float = 0.005
    """Probability that a reading is a spike artefact."""
    spike_scale: float = 10.0
    """Mean size of a spike, mg/L (exponential, either sign)."""
    loq: float = 1.0
    """Limit of quantification, mg/L: lower values are reported as `bloq` at the limit."""
    range_high: float = 150.0
    """Upper end of the measuring range, mg/L: the sensor saturates there (ASSUMPTION)."""
    resolution: float = 0.1
    """Reported values are rounded to this, mg/L."""
    upload_delay_s: float = 0.0
    """Time from measurement to upload, s."""
    wear_s: float = 0.0
    """How long one sensor is worn before a new one replaces it, s (0: one sensor for the whole
    run). Each new sensor has its own device id, calibration, drift and warm-up."""


@dataclass(frozen=True)
class BiosensorCalibration:
    """The calibration error a sensor got at insertion; drawn once per sensor."""

    gain: float
    """Multiplicative error at insertion (1.0 = perfect)."""
    offset: float
    """Additive error, mg/L."""


@dataclass(frozen=True)
class BiosensorTrace:
    """What the sensor produced, with the latent values behind it, for scoring."""

    times: np.ndarray
    """True measurement times of the readings sent, s since epoch."""
    latent_isf: np.ndarray
    """True interstitial level at those times (after lag and penetration, before sensor errors)."""
    values: np.ndarray
    """Reported values."""
    bloq: np.ndarray
    spikes: np.ndarray
    """True where the reading is a spike artefact."""


class Biosensor:
    def __init__(self, identity: DeviceIdentity, params: BiosensorParams, rng: np.random.Generator,
                 gain: float | None = None):
        """`gain`: the sensor's calibration gain when the truth model decides it (a model
        parameter such as the library vancomycin model's `bias`); drawn otherwise."""
        self.identity = identity
        self.params = params
        self.rng = rng
        drawn = 1.0 + rng.normal(0.0, params.calibration_gain_sd)
        self.calibration = BiosensorCalibration(
            gain=drawn if gain is None else float(gain),
            offset=rng.normal(0.0, params.calibration_offset_sd),
        )

    def reading_times(self, inserted_t: float, end_t: float) -> np.ndarray:
        """Scheduled measurement times after warm-up, with dropouts and single losses removed."""
        p = self.params
        times = np.arange(inserted_t + p.warmup_s, end_t, p.cadence_s)
        keep = self.rng.random(len(times)) >= p.loss_probability
        for start, length in self._dropouts(inserted_t, end_t):
            keep &= ~((times >= start) & (times < start + length))
        return times[keep]

    def _dropouts(self, start_t: float, end_t: float) -> list[tuple[float, float]]:
        p = self.params
        days = (end_t - start_t) / 86400.0
        count = self.rng.poisson(p.gaps_per_day * days) if p.gaps_per_day > 0 else 0
        starts = self.rng.uniform(start_t, end_t, count)
        lengths = self.rng.exponential(p.gap_mean_s, count)
        return list(zip(starts, lengths))

    def measure(self, plasma: Trajectory, inserted_t: float, end_t: float) -> BiosensorTrace:
        """Readings over [inserted_t, end_t) of a patient whose true plasma level is `plasma`."""
        p = self.params
        times = self.reading_times(inserted_t, end_t)
        # the lag is integrated from insertion so that it has settled by the first reading
        grid_times = np.concatenate([[inserted_t], times])
        latent = p.isf_ratio * first_order_lag(plasma, grid_times, p.lag_tau_s)[1:]
        days = (times - inserted_t) / 86400.0
        gain = self.calibration.gain * (1.0 + p.drift_per_day * days)
        signal = gain * latent + self.calibration.offset
        sd = np.sqrt(p.noise_sd**2 + (p.noise_cv * np.abs(signal)) ** 2)
        values = signal + self.rng.normal(0.0, 1.0, len(times)) * sd
        spikes = self.rng.random(len(times)) < p.spike_probability
        sizes = self.rng.exponential(p.spike_scale, len(times)) * self.rng.choice([-1.0, 1.0], len(times))
        values = np.where(spikes, values + sizes, values)
        if p.resolution > 0:
            values = np.round(values / p.resolution) * p.resolution
        bloq = values < p.loq
        values = np.minimum(np.where(bloq, p.loq, values), p.range_high)
        return BiosensorTrace(times, latent, values, bloq, spikes)

    def messages(self, trace: BiosensorTrace) -> list[Message]:
        samples = zip(trace.times.tolist(), trace.values.tolist(), trace.bloq.tolist())
        return reading_messages(self.identity, self.params.analyte, self.params.unit, samples, self.params.upload_delay_s)
