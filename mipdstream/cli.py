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
) -> None:
    """The main job on the embedded default (in-process broker, SQLite store)."""
    from mipdstream.demo import run_demo

    run_demo(data_dir=data_dir, duration_s=duration)


if __name__ == "__main__":
    app()
