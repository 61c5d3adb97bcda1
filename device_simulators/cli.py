"""The `mipd simulate` and `mipd conformance` commands, as plain functions with typer options.

mipdstream/cli.py registers them (`app.command()(simulate)`); they are plain functions so
that tests and benchmarks call them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def simulate(
    model: Annotated[str, typer.Option(help="Truth model: vancomycin, vancomycin-1cmt, or a library model name.")] = "vancomycin",
    patients: Annotated[int, typer.Option(min=1, help="Virtual patients; each wears a dosing device, a biosensor and a POC meter.")] = 10,
    speed: Annotated[float, typer.Option(min=0.0, help="Simulated seconds per wall second; 1 real time, 0 as fast as possible (load generator).")] = 60.0,
    broker: Annotated[str, typer.Option(help="Broker URL, mqtt://user:pass@host:port or mqtts://...")] = "mqtt://127.0.0.1:1883",
    duration_h: Annotated[float, typer.Option(min=0.01, help="Simulated hours.")] = 24.0,
    faults: Annotated[Optional[list[str]], typer.Option(
        "--faults", help="Faults, e.g. duplicate=0.01,reorder=0.02,skew=60,drift=20,offline=0.1,malformed (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same patients and messages.")] = 0,
    truth_out: Annotated[Optional[Path], typer.Option(help="Ground-truth JSON-lines file (default: in the outbox directory).")] = None,
    outbox_dir: Annotated[Optional[Path], typer.Option(help="Directory of the on-disk outbox (default: a new temporary one).")] = None,
    upload_every_s: Annotated[float, typer.Option(
        min=0.0, help="Devices upload in packs (JSON arrays), one per this many simulated seconds; 0: one message per record.")] = 0.0,
    follow_requests: Annotated[bool, typer.Option(
        help="POC meters also sample when the service asks (mipd/v1/dev/DEVICE/schedule); needs speed > 0.")] = False,
) -> dict:
    """Simulate a virtual cohort and its devices, publishing over MQTT as real devices would."""
    from device_simulators.faults import Faults
    from device_simulators.runner import run_simulation

    if follow_requests and speed <= 0:
        raise typer.BadParameter("following sample requests needs --speed > 0", param_hint="--follow-requests")
    spec = ",".join(faults or [])
    try:
        parsed = Faults.parse(spec)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--faults") from None
    outbox_path = None
    if outbox_dir is not None:
        outbox_path = Path(outbox_dir)
        truth_out = truth_out or Path(outbox_dir) / "ground_truth.jsonl"
    try:
        summary = run_simulation(
            model, patients, speed, broker, parsed, seed, duration_h, progress=True,
            ground_truth_path=truth_out, outbox_path=outbox_path, upload_every_s=upload_every_s,
            follow_requests=follow_requests,
        )
    except ConnectionError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    typer.echo(summary.describe())
    return summary.as_dict()


def conformance(
    broker: Annotated[str, typer.Option(help="Broker URL the device publishes to.")],
    device: Annotated[str, typer.Option(help="The device id to watch (mipd/v1/dev/DEVICE/...).")],
    timeout_s: Annotated[Optional[float], typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")] = None,
    max_messages: Annotated[Optional[int], typer.Option(help="Stop after this many messages.")] = None,
) -> int:
    """Watch a device's traffic and judge each message against the wire contract.

    Exit code 0: every message passed; 1: some failed; 2: no message was seen (or the broker
    could not be reached, or the device id is invalid).
    """
    from device_simulators.conformance import watch

    typer.echo(f"watching mipd/v1/dev/{device}/# on {broker}; Ctrl-C to stop", err=True)
    try:
        report = watch(broker, device, timeout_s=timeout_s, max_messages=max_messages,
                       on_verdict=lambda v: typer.echo(v.describe()))
    except (OSError, ValueError) as err:  # ConnectionError is an OSError
        typer.echo(f"conformance: {err}", err=True)
        return 2
    typer.echo(report.summary())
    return report.exit_code
