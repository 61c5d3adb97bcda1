"""A virtual cohort: patients drawn from a truth model, each wearing a set of virtual devices.

Every patient gets a dosing device (a smart pump for IV regimens, an e-pillbox for oral
ones), an interstitial biosensor on the drug's plasma level where one exists (vancomycin),
and a point-of-care meter for the model's analyte (drug level, ANC or INR) used before each
scheduled dose (a trough; also every few days when doses are weeks apart) and once a day
for creatinine when the model has it. Everything is
drawn from `numpy.random.SeedSequence([seed, patient index])`, so patient i is the same
whatever the cohort size, and a run is reproduced exactly by its seed.

The ground-truth file (JSON lines, one patient a line) holds what no device reports:
covariates, true parameters, the doses as really given, the latent trajectories and each
device's true error parameters, so that a filter's accuracy can be scored afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from device_simulators.biosensor import Biosensor, BiosensorParams
from device_simulators.device import DeviceClockError, DeviceIdentity, status_message
from device_simulators.dosing import AdministeredDose
from device_simulators.infusion_pump import InfusionPump, InfusionPumpParams
from device_simulators.message import Message
from device_simulators.pillbox import Pillbox, PillboxParams
from device_simulators.poc_meter import POC_PRESETS, MeterOnRequest, PocMeter, PocMeterParams, meter_messages
from device_simulators.trajectory import first_order_lag
from device_simulators.truth import TruthModel


@dataclass(frozen=True)
class CohortConfig:
    """Which devices each patient wears and how they err."""

    biosensor: BiosensorParams | None = field(default_factory=BiosensorParams)
    """None: no biosensor."""
    pump: InfusionPumpParams = field(default_factory=InfusionPumpParams)
    pillbox: PillboxParams = field(default_factory=PillboxParams)
    drug_meter: PocMeterParams | None = field(default_factory=lambda: POC_PRESETS["vancomycin"])
    """Point-of-care meter for the model's plasma analyte, used before each dose; None: none.
    When its analyte is not the model's, the preset for the model's analyte is used instead."""
    trough_lead_s: float = 1800.0
    """Trough samples are scheduled this long before a scheduled dose, s."""
    max_sample_gap_s: float = 3 * 86400.0
    """With doses further apart than this (chemotherapy cycles), the meter is also used every
    `max_sample_gap_s`, from the day after the start, s."""
    creatinine_meter: PocMeterParams | None = field(default_factory=lambda: POC_PRESETS["creatinine"])
    """Daily creatinine on the same meter (a second analyte of the meter); None: none."""
    truth_grid_s: float = 300.0
    """Spacing of the latent trajectories written to the ground-truth file, s."""
    clock_offset_sd_s: float = 0.0
    """SD of device clock offsets, s (0: clocks are right)."""
    clock_drift_ppm_sd: float = 0.0
    """SD of device clock drift, ppm."""
    device_prefix: str = "sim"
    patient_prefix: str = "P"
    """Patient ids are `{patient_prefix}{index:05d}`: give cohorts run side by side different prefixes."""


@dataclass
class SimulatedPatient:
    patient_id: str
    covariates: dict[str, float]
    parameters: dict[str, float]
    devices: dict[str, str]
    """role ("dosing", "biosensor", "meter") -> device id."""
    doses: list[AdministeredDose]
    truth_times: np.ndarray
    truth: dict[str, np.ndarray]
    """analyte code -> latent values at `truth_times`, canonical units."""
    device_truth: dict[str, dict]
    """device id -> the device's true error parameters (calibration, clock)."""
    messages: list[Message]
    meter_on_request: MeterOnRequest | None = None
    """The drug-level meter, answering the service's sample requests (see `run_simulation`)."""

    def ground_truth(self) -> dict:
        return {
            "patient": self.patient_id,
            "devices": self.devices,
            "covariates": self.covariates,
            "parameters": self.parameters,
            "doses": [d.as_dict() for d in self.doses],
            "device_truth": self.device_truth,
            "times": self.truth_times.tolist(),
            "trajectories": {code: np.round(v, 6).tolist() for code, v in self.truth.items()},
        }


def _identity(config: CohortConfig, device_id: str, start_t: float, rng: np.random.Generator) -> DeviceIdentity:
    clock = DeviceClockError(
        offset_s=float(rng.normal(0.0, config.clock_offset_sd_s)) if config.clock_offset_sd_s else 0.0,
        drift_ppm=float(rng.normal(0.0, config.clock_drift_ppm_sd)) if config.clock_drift_ppm_sd else 0.0,
        reference_t=start_t,
    )
    return DeviceIdentity.new(device_id, rng, clock)


def simulate_patient(
    model: TruthModel, index: int, start_t: float, duration_s: float, seed: int, config: CohortConfig = CohortConfig()
) -> SimulatedPatient:
    """Patient `index` of the cohort `seed`, over [start_t, start_t + duration_s)."""
    end_t = start_t + duration_s
    # spawned children depend on their index only: a 7th stream leaves the first six as they were
    patient_rng, dosing_rng, sensor_rng, meter_rng, clock_rng, status_rng, request_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(7)
    )
    covariates = model.sample_covariates(patient_rng)
    parameters = model.sample_parameters(covariates, patient_rng)
    schedule = model.regimen(covariates, start_t, end_t)
    prefix = f"{config.device_prefix}-{index:05d}"
    devices: dict[str, str] = {}
    device_truth: dict[str, dict] = {}
    messages: list[Message] = []

    dosing_id = f"{prefix}-{'pump' if model.route == 'iv_infusion' else 'pillbox'}"
    identity = _identity(config, dosing_id, start_t, clock_rng)
    if model.route == "iv_infusion":
        dosing_device = InfusionPump(identity, config.pump, dosing_rng)
    else:
        dosing_device = Pillbox(identity, config.pillbox, dosing_rng)
    doses = dosing_device.administer(schedule)
    messages.append(status_message(identity, start_t, type(dosing_device).__name__, status_rng))
    messages += [m for m in dosing_device.messages(doses) if m.sim_t < end_t]
    devices["dosing"] = dosing_id
    device_truth[dosing_id] = {"clock": asdict(identity.clock)}

    truth_times = np.arange(start_t, end_t + 1e-9, config.truth_grid_s)
    truth = model.trajectories(parameters, covariates, doses, truth_times)
    plasma = _exact_trajectory(model, parameters, covariates, doses)

    if config.biosensor is not None and model.plasma_analyte in INTERSTITIAL_ANALYTE:
        wear = config.biosensor.wear_s
        insertions = [start_t] + (list(np.arange(start_t + wear, end_t, wear)) if wear > 0 else [])
        for k, inserted in enumerate(insertions):
            # a new sensor: its own id, and (for a truth model with sensor parameters) its own bias and drift
            sensor_id, role = (f"{prefix}-isf", "biosensor") if k == 0 else (f"{prefix}-isf{k + 1}", f"biosensor-{k + 1}")
            own = parameters if k == 0 else {**parameters, **_new_sensor(model, covariates, sensor_rng)}
            sensor_params = _patient_biosensor(config.biosensor, own, INTERSTITIAL_ANALYTE[model.plasma_analyte])
            sensor = Biosensor(_identity(config, sensor_id, inserted, clock_rng), sensor_params, sensor_rng, gain=own.get("bias"))
            removed = insertions[k + 1] if k + 1 < len(insertions) else end_t
            trace = sensor.measure(plasma, inserted, removed)
            messages.append(status_message(sensor.identity, inserted, "Biosensor", status_rng))
            messages += [m for m in sensor.messages(trace) if m.sim_t < end_t]
            devices[role] = sensor_id
            device_truth[sensor_id] = {
                "calibration": asdict(sensor.calibration),
                "params": asdict(sensor_params),
                "clock": asdict(sensor.identity.clock),
                "inserted_t": inserted,
            }
        lag = sensor_params.isf_ratio * first_order_lag(plasma, truth_times, sensor_params.lag_tau_s)
        truth[sensor_params.analyte] = lag

    drug_meter = _drug_meter(config.drug_meter, model.plasma_analyte)
    on_request = None
    if drug_meter is not None or config.creatinine_meter is not None:
        meter_id = f"{prefix}-poc"
        meter_identity = _identity(config, meter_id, start_t, clock_rng)
        samples: list[tuple[float, PocMeterParams, float, bool]] = []
        if drug_meter is not None:
            meter = PocMeter(meter_identity, drug_meter, meter_rng)
            on_request = MeterOnRequest(PocMeter(meter_identity, drug_meter, request_rng), plasma, end_t)
            scheduled = _meter_schedule(schedule, start_t, end_t, config)
            samples += [(t, meter.params, v, b) for t, v, b in meter.measure(plasma, meter.sample_times(scheduled))]
        if config.creatinine_meter is not None and config.creatinine_meter.analyte in model.analytes:
            meter = PocMeter(meter_identity, config.creatinine_meter, meter_rng)
            scr = _exact_trajectory(model, parameters, covariates, doses, config.creatinine_meter.analyte)
            mornings = np.arange(start_t + 3600.0, end_t, 86400.0)
            samples += [(t, meter.params, v, b) for t, v, b in meter.measure(scr, meter.sample_times(mornings))]
        # one device numbers its readings in the order it takes them, whatever the analyte
        samples.sort(key=lambda s: s[0])
        messages.append(status_message(meter_identity, start_t, "PocMeter", status_rng))
        messages += [m for m in meter_messages(meter_identity, samples) if m.sim_t < end_t]
        devices["meter"] = meter_id
        device_truth[meter_id] = {"clock": asdict(meter_identity.clock)}

    return SimulatedPatient(
        patient_id=f"{config.patient_prefix}{index:05d}", covariates=covariates, parameters=parameters, devices=devices,
        doses=doses, truth_times=truth_times, truth=truth, device_truth=device_truth, messages=messages,
        meter_on_request=on_request,
    )


INTERSTITIAL_ANALYTE = {"20578-1": "x-mipd-vancomycin-isf"}
"""Plasma analyte -> the analyte code of its interstitial-fluid biosensor (only vancomycin has one)."""


def _drug_meter(configured: PocMeterParams | None, plasma_analyte: str) -> PocMeterParams | None:
    if configured is None or configured.analyte == plasma_analyte:
        return configured
    return next((p for p in POC_PRESETS.values() if p.analyte == plasma_analyte), None)


def _meter_schedule(schedule, start_t: float, end_t: float, config: CohortConfig) -> list[float]:
    """Troughs before each dose, plus regular samples where doses are far apart."""
    times = [d.t - config.trough_lead_s for d in schedule if d.t - config.trough_lead_s > start_t]
    for t in np.arange(start_t + 86400.0, end_t, config.max_sample_gap_s):
        if all(abs(t - trough) > config.max_sample_gap_s / 2 for trough in times):
            times.append(float(t))
    return sorted(times)


def _patient_biosensor(params: BiosensorParams, parameters: dict[str, float], analyte: str) -> BiosensorParams:
    """The biosensor of this patient's drug. A model with a plasma-to-interstitial rate `keo`
    (1/h) and tissue ratio `R_isf` (as the library's vancomycin model has) sets its lag and
    ratio, its `kdrift` (1/h) the gain's drift, and its `bias` the calibration gain (see
    `simulate_patient`), so that the truth agrees with the model (the simulated drift is
    linear, with the model's loss over the first day: 1 − e^(−24 kdrift) per day)."""
    params = replace(params, analyte=analyte)
    if "keo" in parameters:
        params = replace(params, lag_tau_s=3600.0 / parameters["keo"])
    if "R_isf" in parameters:
        params = replace(params, isf_ratio=parameters["R_isf"])
    if "kdrift" in parameters:
        params = replace(params, drift_per_day=float(np.expm1(-24.0 * parameters["kdrift"])))
    return params


def _new_sensor(model: TruthModel, covariates, rng: np.random.Generator) -> dict[str, float]:
    """The sensor parameters (``bias``, ``kdrift``) of a replacement sensor, drawn from the truth
    model's population like the first one's; empty for a truth model without them."""
    drawn = model.sample_parameters(covariates, rng)
    return {name: drawn[name] for name in ("bias", "kdrift") if name in drawn}


def _exact_trajectory(model: TruthModel, parameters, covariates, doses, code: str | None = None):
    """The model's own trajectory as a callable, so devices sample it exactly (not interpolated)."""
    code = code or model.plasma_analyte
    return lambda t: model.trajectories(parameters, covariates, doses, np.atleast_1d(np.asarray(t, dtype=float)))[code]


def simulate_cohort(
    model: TruthModel, patients: int, start_t: float, duration_s: float, seed: int, config: CohortConfig = CohortConfig()
) -> list[SimulatedPatient]:
    return [simulate_patient(model, i, start_t, duration_s, seed, config) for i in range(patients)]


def write_ground_truth(patients: Iterable[SimulatedPatient], path: Path) -> Path:
    """One JSON object per line per patient; see `SimulatedPatient.ground_truth`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for patient in patients:
            f.write(json.dumps(patient.ground_truth(), separators=(",", ":")) + "\n")
    return path


def read_ground_truth(path: Path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def merged_messages(patients: Sequence[SimulatedPatient]) -> list[Message]:
    """Every device's messages in the order they are sent (stable for equal times)."""
    return sorted((m for p in patients for m in p.messages), key=lambda m: m.sim_t)
