"""`mipd`: the one command-line entry point."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from mipdstream.config import Settings, describe

app = typer.Typer(help="mipdstream: streaming model-informed precision dosing.", no_args_is_help=True)


def _settings(config: Path | None) -> Settings:
    if config is not None:
        import os

        os.environ["MIPD_CONFIG_FILE"] = str(config)
    return Settings()


ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", help="TOML file of settings (same names as MIPD_* without the prefix).")
]


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


@app.command()
def ingest(config: ConfigOption = None, verbose: bool = False) -> None:
    """Run the ingest service: MQTT readings and doses -> validated, deduplicated, stored."""
    from mipdstream.runtime import ingest_service

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    settings = _settings(config)
    with ingest_service(settings) as service:
        typer.echo(f"ingest: broker {service.url}, store {settings.store}, data in {settings.data_dir}", err=True)
        _wait_for_signal()


@app.command("register-device")
def register_device(
    device_id: str, kind: Annotated[str, typer.Option(help="biosensor, poc-meter, infusion-pump, pillbox")] = "poc-meter",
    vendor: Optional[str] = None, config: ConfigOption = None,
) -> None:
    """Register a device in the enrollment registry."""
    from mipdstream.runtime import open_registry

    registry = open_registry(_settings(config))
    registry.register_device(device_id, kind, vendor)
    typer.echo(f"registered {device_id} ({kind})")


@app.command()
def enroll(
    device_id: str, patient_id: str,
    valid_from: Annotated[Optional[str], typer.Option("--from", help="ISO 8601 time; default now")] = None,
    valid_to: Annotated[Optional[str], typer.Option("--to", help="ISO 8601 time; default open")] = None,
    kind: Annotated[str, typer.Option(help="device kind, if the device is new")] = "poc-meter",
    config: ConfigOption = None,
) -> None:
    """Attach a device to a patient from a time on (registers the device if new)."""
    from mipdstream.runtime import open_registry

    registry = open_registry(_settings(config))
    if device_id not in registry.devices():
        registry.register_device(device_id, kind)
    start = dt.datetime.fromisoformat(valid_from).timestamp() if valid_from else time.time()
    end = dt.datetime.fromisoformat(valid_to).timestamp() if valid_to else None
    registry.enroll(device_id, patient_id, start, end)
    typer.echo(f"enrolled {device_id} -> {patient_id} from {dt.datetime.fromtimestamp(start, dt.UTC).isoformat()}")


@app.command()
def readings(
    patient_id: str, hours: Annotated[float, typer.Option(help="how far back")] = 24.0, config: ConfigOption = None
) -> None:
    """Print a patient's stored readings of the last HOURS hours."""
    from mipdstream.runtime import open_store

    store = open_store(_settings(config))
    try:
        for r in store.readings(patient_id, start=time.time() - hours * 3600):
            when = dt.datetime.fromtimestamp(r.measured_at, dt.UTC).isoformat(timespec="seconds")
            typer.echo(f"{when}  {r.analyte:<22} {r.value:10.3f} {r.unit:<8} device={r.device_id} id={r.reading_id}")
    finally:
        store.close()


@app.command("add-patient")
def add_patient(
    patient_id: str,
    model: Annotated[str, typer.Option(help="built-in model name or path to a model file")],
    covariate: Annotated[list[str], typer.Option("--covariate", "-c", help="NAME=VALUE, repeatable (e.g. WT=70)")] = [],
    team: Annotated[str, typer.Option(help="care team that sees this patient")] = "default",
    origin: Annotated[Optional[str], typer.Option(help="ISO 8601 start of the patient's timeline; default now")] = None,
    config: ConfigOption = None,
) -> None:
    """Monitor a patient: the model that describes them, their covariates and care team."""
    from assimilation import load_model
    from mipdstream.service.state_db import PatientRecord, ServiceDB

    from assimilation import CovariateError

    settings = _settings(config)
    given = {}
    for item in covariate:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"covariate {item!r} is not NAME=VALUE", param_hint="--covariate")
        try:
            given[name] = float(value)
        except ValueError:
            given[name] = value
    try:
        covariates = load_model(model).check_covariates(given)  # fail now, not at the first reading
    except CovariateError as error:
        raise typer.BadParameter(str(error), param_hint="--covariate") from None
    start = dt.datetime.fromisoformat(origin).timestamp() if origin else time.time()
    db = ServiceDB(settings.service_db_path)
    db.add_patient(PatientRecord(patient_id, model, covariates, start, team))
    db.close()
    typer.echo(f"monitoring {patient_id} with model {model} {covariates} (team {team})")


@app.command("add-user")
def add_user(
    username: str,
    role: Annotated[str, typer.Option(help="clinician | team-admin | read-only | device-vendor")] = "clinician",
    team: Annotated[Optional[str], typer.Option(help="care team (not for device vendors)")] = "default",
    vendor: Annotated[Optional[str], typer.Option(help="vendor name (device-vendor role only)")] = None,
    api_key: Annotated[bool, typer.Option(help="also issue an API key (printed once)")] = False,
    config: ConfigOption = None,
) -> None:
    """Create (or reset) a user of the API and dashboard; prints the password once."""
    from ingest.broker_auth import new_password
    from mipdstream.service.state_db import ServiceDB

    settings = _settings(config)
    password = new_password()
    db = ServiceDB(settings.service_db_path)
    try:
        db.add_user(username, password, role, None if role == "device-vendor" else team, vendor)
        typer.echo(f"{username} ({role}{', team ' + team if team and role != 'device-vendor' else ''}) password: {password}")
        if api_key:
            typer.echo(f"API key: {db.issue_credential(username, 'api_key', label='cli')}")
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    finally:
        db.close()


@app.command()
def run(config: ConfigOption = None, verbose: bool = False) -> None:
    """Run the production service: ingest, assimilation, dosing policy, alerts and the API."""
    from mipdstream.service.live import live_service
    from mipdstream.service.policy import default_evaluator

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    settings = _settings(config)
    with live_service(settings, evaluator=default_evaluator(settings)) as live:
        typer.echo(f"mipd: broker {live.ingest.url}, store {settings.store}, API {live.http_url}", err=True)
        _wait_for_signal()


@app.command("broker-user")
def broker_user(
    username: Annotated[str, typer.Argument(help="device id (role device), team id (role team) or a service name")],
    role: Annotated[str, typer.Option(help="device | service | team")] = "device",
    team: Annotated[Optional[str], typer.Option(help="the team whose alerts a team user reads (default: the username)")] = None,
    config: ConfigOption = None,
) -> None:
    """Create (or reset) a broker user; prints its password once. Then run `mipd broker-config`."""
    from ingest.broker_auth import BrokerUser, hash_password, new_password
    from mipdstream.runtime import open_registry

    if role not in ("device", "service", "team"):
        raise typer.BadParameter("role must be device, service or team", param_hint="--role")
    password = new_password()
    registry = open_registry(_settings(config))
    registry.add_broker_user(BrokerUser(username, role, hash_password(password), team or (username if role == "team" else None)))
    registry.close()
    typer.echo(f"{username} ({role}) password: {password}")


@app.command("broker-config")
def broker_config(
    out: Annotated[Path, typer.Option(help="directory for Mosquitto's password_file and acl_file")] = Path("deploy/mosquitto/auth"),
    config: ConfigOption = None,
) -> None:
    """Write Mosquitto's password and ACL files from the broker users in the registry."""
    from ingest.broker_auth import write_broker_files
    from mipdstream.runtime import open_registry

    registry = open_registry(_settings(config))
    passwd, acl = write_broker_files(registry.broker_users(), out)
    registry.close()
    typer.echo(f"wrote {passwd} and {acl}; point Mosquitto's password_file and acl_file at them and reload it (SIGHUP)")


@app.command()
def assimilate(
    shard_index: Annotated[Optional[int], typer.Option(help="this worker's shard (default MIPD_SHARD_INDEX)")] = None,
    shard_count: Annotated[Optional[int], typer.Option(help="number of workers (default MIPD_SHARD_COUNT)")] = None,
    config: ConfigOption = None, verbose: bool = False,
) -> None:
    """Run one assimilation worker: the patients hashed to its shard, fed by ingest workers' notifications."""
    from mipdstream.service.live import assimilation_worker
    from mipdstream.service.policy import default_evaluator

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    settings = _settings(config)
    updates = {k: v for k, v in (("shard_index", shard_index), ("shard_count", shard_count)) if v is not None}
    settings = Settings(**{**settings.model_dump(), **updates})
    with assimilation_worker(settings, evaluator=default_evaluator(settings)) as worker:
        patients = len(worker.assimilator.monitored())
        typer.echo(f"assimilate: shard {settings.shard_index}/{settings.shard_count}, {patients} patients", err=True)
        _wait_for_signal()


@app.command()
def api(config: ConfigOption = None, verbose: bool = False) -> None:
    """Serve the API and dashboard of a scaled-out deployment (ingest and assimilation workers
    elsewhere): posteriors from the workers' checkpoints, live updates from their notifications."""
    from mipdstream.service.follower import follower_service

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    with follower_service(_settings(config)) as live:
        typer.echo(f"api: serving {live.http_url}", err=True)
        _wait_for_signal()


@app.command()
def replay(
    data: Annotated[Path, typer.Argument(help="NONMEM event CSV: ID, TIME, AMT, DV; optional EVID (0-4), MDV, RATE or DUR, CMT, "
                                              "DVID, SS, II, ADDL, CENS or BLQ, LLOQ; the model's covariate columns")],
    model: Annotated[str, typer.Option(help="built-in model name or path to a model file")],
    method: Annotated[str, typer.Option(help="pf | enkf | map")] = "pf",
    out: Annotated[Optional[Path], typer.Option(help="CSV of one-step-ahead forecasts (PRED_MEAN, PRED_Q05, ...)")] = None,
    particles: Annotated[int, typer.Option(help="particles / ensemble members")] = 1000,
    seed: int = 0,
    covariates: Annotated[str, typer.Option(help="a changed covariate holds from its row's TIME (locf) or, as in NONMEM, "
                                                 "over the interval ending at its row (nonmem)")] = "locf",
    ignore: Annotated[Optional[list[str]], typer.Option(help="a column to leave out (any column that is neither a data item "
                                                             "nor a covariate of the model is an error otherwise); repeat for several")] = None,
) -> None:
    """Replay a NONMEM event dataset patient by patient; forecast each observation before assimilating it.
    Steady-state doses (SS 1/2 with II), additional doses (ADDL), resets (EVID 3/4) and BLQ
    readings are read as NONMEM means them; a code or column it cannot handle is an error
    naming its row and column (docs/MODELS.md, "NONMEM event records")."""
    from mipdstream.replay import replay_command

    try:
        replay_command(data, model, method, out, particles, seed, covariates, ignore or ())
    except ValueError as err:  # a missing or bad column, named with its row
        typer.echo(f"replay: {err}", err=True)
        raise typer.Exit(2) from None


@app.command()
def objective(
    data: Annotated[Path, typer.Argument(help="NONMEM-style CSV, as for replay: ID, TIME, AMT, RATE, DV, EVID, MDV, CMT, covariates")],
    model: Annotated[str, typer.Option(help="built-in model name or path to a model file")],
    method: Annotated[Optional[list[str]], typer.Option(help="focei | laplace | importance; repeat for several (default: focei and importance)")] = None,
    samples: Annotated[int, typer.Option(help="importance samples per patient")] = 10_000,
    seed: int = 0,
    ignore: Annotated[Optional[list[str]], typer.Option(help="a column to leave out, as for replay; repeat for several")] = None,
) -> None:
    """The model's objective on a dataset at its own parameter values: -2 log-likelihood without N log(2 pi), as NONMEM reports its OFV."""
    from mipdstream.objective import objective_command

    try:
        objective_command(data, model, method or ["focei", "importance"], samples, seed, ignore or ())
    except ValueError as err:  # a bad column, an unknown method, a covariate the model cannot use
        typer.echo(f"objective: {err}", err=True)
        raise typer.Exit(2) from None


def _register_vendor_kit() -> None:
    """`mipd simulate` and `mipd conformance` (device_simulators/cli.py)."""
    import functools

    from device_simulators.cli import conformance as judge_traffic
    from device_simulators.cli import simulate

    app.command()(simulate)

    @app.command("conformance")
    @functools.wraps(judge_traffic)
    def conformance(*args, **kwargs):
        raise typer.Exit(judge_traffic(*args, **kwargs))


_register_vendor_kit()


@app.command("config")
def show_config(markdown: bool = False) -> None:
    """List every setting: environment variable, default, meaning."""
    rows = describe()
    if markdown:
        typer.echo("| variable | default | meaning |\n|---|---|---|")
        for name, default, text in rows:
            typer.echo(f"| `{name}` | `{default}` | {text} |")
        return
    for name, default, text in rows:
        typer.echo(f"{name:<30} {default:<26} {text}")


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="seconds to run; 0 runs until Ctrl-C")] = 0.0,
    data_dir: Annotated[Path, typer.Option(help="where the demo keeps its data")] = Path("mipd-data/demo"),
    simulate_s: Annotated[float, typer.Option(help="wall seconds over which the cohorts' days are simulated")] = 90.0,
    port: Annotated[int, typer.Option(help="port of the dashboard and API (0: any free port)")] = 8000,
    particles: Annotated[int, typer.Option(help="particles per patient")] = 500,
) -> None:
    """The main job on the embedded default: simulated patients, live posteriors, alerts, dashboard."""
    from mipdstream.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    run_demo(data_dir=data_dir, duration_s=duration, wall_s=simulate_s, port=port, particles=particles)


audit_app = typer.Typer(help="The audit log's hash chain.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _anchor(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise typer.BadParameter(f"{value!r} is not SEQ:HASH (a record id, a colon, 64 hex digits)")
    return int(seq), digest.lower()


@audit_app.command("verify")
def audit_verify(
    db: Annotated[Optional[Path], typer.Option(help="service database to check (default: the configured one)")] = None,
    anchor: Annotated[Optional[str], typer.Option(help="SEQ:HASH of a head seen earlier (GET /api/v1/audit/head)")] = None,
    config: ConfigOption = None,
) -> None:
    """Walk the audit chain from its first record; name the first broken link and exit 1."""
    import sqlite3

    from mipdstream.service import audit_log

    expected = _anchor(anchor)
    path = db or _settings(config).service_db_path
    if not path.is_file():
        typer.echo(f"no service database at {path}", err=True)
        raise typer.Exit(2)
    # Read-only: verifying must not run the migration or take the write lock.
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(audit)")}
        if "hash" not in columns:
            typer.echo(f"{path}: the audit table has no chain yet (the service chains its rows when it next opens it)", err=True)
            raise typer.Exit(1)
        result = audit_log.verify(connection, expected)
    finally:
        connection.close()
    if result.migrated:
        first, last, count = result.migrated
        typer.echo(f"{count} records (rows {first}-{last}) were written before the chain and chained when the service "
                   "migrated the database: what they held before that rests on the append-only triggers alone")
    if not result.ok:
        typer.echo(f"audit chain broken at row {result.broken.seq}: {result.broken.what}", err=True)
        raise typer.Exit(1)
    head = result.head
    typer.echo(f"audit chain intact: {head.count} records, head row {head.seq} hash {head.hash}")


def main() -> None:
    """The `mipd` command: the process restarted once with huge-page malloc, then the app."""
    from mipdstream.runtime import restart_with_huge_page_malloc

    restart_with_huge_page_malloc()
    app()


if __name__ == "__main__":
    main()
