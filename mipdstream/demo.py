"""`mipd demo`: the whole system on the embedded default, with nothing to install.

An in-process MQTT broker and the embedded SQLite store; the live service (ingest,
assimilation, dosing policy, alerts, API and dashboard); and three simulated cohorts whose
virtual devices publish over MQTT at accelerated time: vancomycin patients with an
infusion pump, an interstitial biosensor and a point-of-care meter; docetaxel patients
with a home neutrophil meter; warfarin patients with an e-pillbox and a home INR meter.
One device also sends every kind of malformed message, and is told why on its error topic.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from assimilation import load_model
from device_simulators.cohort import CohortConfig, SimulatedPatient
from device_simulators.runner import MEMORY, run_simulation
from ingest.mqtt import connect
from mipdstream.config import Settings
from mipdstream.service.live import LiveService, live_service
from mipdstream.service.policy import PolicyEvaluator
from mipdstream.service.state_db import AlertRecord, PatientRecord

DEVICE_KINDS = {"dosing": "infusion-pump", "biosensor": "biosensor", "meter": "poc-meter"}


@dataclass(frozen=True)
class Cohort:
    model: str
    patients: int
    hours: float
    prefix: str
    faults: str = ""


COHORTS = (
    Cohort("vancomycin", 6, 72.0, "vanco", "duplicate=0.01,reorder=0.01,malformed"),
    Cohort("docetaxel_friberg", 2, 21 * 24.0, "doce"),
    Cohort("warfarin_hamberg", 2, 14 * 24.0, "warf"),
)


def model_covariates(model_name: str, drawn: dict) -> dict:
    """The covariates of a simulated ward patient that the model uses (the simulator draws a
    whole ward record: age, sex, genotypes, ...), checked as the API checks them."""
    model = load_model(model_name)
    return model.check_covariates({name: drawn[name] for name in model.covariate_names})


def _enroll(live: LiveService, cohort: Cohort, start: float):
    def on_cohort(patients: list[SimulatedPatient]) -> None:
        for patient in patients:
            for role, device in patient.devices.items():
                live.ingest.registry.register_device(device, DEVICE_KINDS.get(role.split("-")[0], role), "mipdstream simulator")
                live.ingest.registry.enroll(device, patient.patient_id, start - 3600)
            covariates = model_covariates(cohort.model, dict(patient.covariates))
            live.db.add_patient(PatientRecord(patient.patient_id, cohort.model, covariates, start, "demo-ward"))

    return on_cohort


def _simulate(live: LiveService, cohort: Cohort, wall_s: float, seed: int, done: list, stop: threading.Event) -> None:
    speed = cohort.hours * 3600 / wall_s
    start = time.time() - cohort.hours * 3600  # the run reaches "now" as it ends: no reading from the future
    config = CohortConfig(device_prefix=cohort.prefix, patient_prefix=f"{cohort.prefix.upper()}-")
    summary = run_simulation(
        cohort.model, cohort.patients, speed, live.ingest.url, cohort.faults, seed, cohort.hours, progress=False,
        start_t=start, config=config, outbox_path=MEMORY, protocol="3.1.1", on_cohort=_enroll(live, cohort, start),
        client_id=f"demo-{cohort.prefix}", stop=stop, drain_timeout_s=10.0,
        follow_requests=True,  # the meters also sample when the policy asks (mipd/v1/dev/{id}/schedule)
    )
    done.append(summary)


def clear_previous_run(settings: Settings) -> list[Path]:
    """Remove a previous demo's stores from the data directory and return what was removed.

    Each demo simulates the same patients over the hours up to now: a second run on the old
    stores would give them two overlapping streams. The compiled kernels (jax-cache) stay."""
    removed = []
    for database in (settings.sqlite_path, settings.service_db_path, settings.registry_path):
        for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
            if path.exists():
                path.unlink()
                removed.append(path)
    return removed


def run_demo(data_dir: Path, duration_s: float = 0.0, wall_s: float = 90.0, port: int = 8000, particles: int = 500) -> None:
    settings = Settings(
        broker_url="embedded", embedded_broker_port=0, store="sqlite", data_dir=data_dir, http_port=port,
        filter_particles=particles, reorder_window_s=0.5, assimilation_batch_window_ms=250, checkpoint_interval_s=10,
        stale_check_s=0,  # simulated days run in seconds: silence is judged on the data's clock
    )
    if clear_previous_run(settings):
        typer.echo(f"mipd demo: removed the previous demo's stores from {data_dir} (compiled kernels kept)")
    alerts: queue.Queue[AlertRecord] = queue.Queue()
    rejections: queue.Queue[str] = queue.Queue()
    with live_service(settings, evaluator=PolicyEvaluator(settings)) as live:
        live.assimilator.add_sink(lambda batch: [alerts.put(a) for a in batch])
        listener, _ = connect(live.ingest.url, "demo-error-listener", protocol="3.1.1",
                              subscriptions=[("mipd/v1/dev/+/error", 1)],
                              on_message=lambda c, u, m: rejections.put(m.payload.decode()))
        password = secrets.token_urlsafe(9)
        live.db.add_user("demo", password, "clinician", "demo-ward")
        typer.echo(f"mipd demo: embedded MQTT broker at {live.ingest.url}, store {settings.sqlite_path}")
        typer.echo(f"dashboard and API: {live.http_url}/  (user demo, password {password}; Ctrl-C to stop)")
        done: list = []
        stop = threading.Event()
        runs = [threading.Thread(target=_simulate, args=(live, c, wall_s, i, done, stop), daemon=True)
                for i, c in enumerate(COHORTS)]
        for run in runs:
            run.start()
        typer.echo(", ".join(f"{c.patients} {c.model} patients over {c.hours:g} h" for c in COHORTS)
                   + f", simulated in about {wall_s:.0f} s")
        started = time.time()
        try:
            while duration_s <= 0 or time.time() - started < duration_s:
                time.sleep(2.0)
                _progress(live, started, done, alerts, rejections)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            for run in runs:
                run.join(timeout=30)
            listener.disconnect()
            listener.loop_stop()


def _progress(live: LiveService, started: float, done: list, alerts: queue.Queue, rejections: queue.Queue) -> None:
    stats = live.ingest.consumer.stats
    assimilated = int(live.assimilator.metrics.assimilated._value.get())
    raised = int(sum(s.value for m in live.assimilator.metrics.alerts.collect() for s in m.samples if s.name.endswith("_total")))
    typer.echo(f"[{time.time() - started:4.0f} s] stored readings {stats.readings}, doses {stats.doses}; "
               f"rejected {stats.rejected}; assimilated {assimilated}; alerts {raised}; "
               f"cohorts finished {len(done)}/{len(COHORTS)}")
    while not rejections.empty():
        typer.echo(f"  device told on its error topic: {rejections.get()}")
    while not alerts.empty():
        alert = alerts.get()
        if alert.status == "open":
            typer.echo(f"  ALERT {alert.severity:<8} {alert.patient_id}: {alert.message}")
