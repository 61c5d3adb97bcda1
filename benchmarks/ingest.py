"""Ingest throughput and publish-to-commit latency through a real Mosquitto.

    python benchmarks/ingest.py [--quick] [--rounds R] [--ingest-processes N] [--json FILE]

One publisher process (paho, QoS 1, 1,000 simulated devices, bounded in-flight window)
streams readings; each reading's `t` is its publish time, so commit time - t is the
publish-to-commit latency. Each store is measured saturated (the publisher as fast as
PUBACKs allow: sustained readings/s) and, in the last round, paced at a fixed offered load
(`--paced-rate`, default 2,000 readings/s, i.e. 2,000 sensors reading every second): the
p50/p99 latency a reading sees when ingest keeps up. Saturated latency is reported too; it
only measures the broker backlog. For the same publisher, in the same run:

- `raw`: a bare paho subscriber that does nothing with the messages (QoS 1, auto-ack):
  the ceiling of a Python MQTT consumer on this machine;
- `sqlite` and `influxdb`: the ingest consumer, every reading committed before its PUBACK,
  each round into a fresh store; with `--ingest-processes N`, N consumer processes on one
  MQTT 5 shared subscription (the deployed layout, docs/DEPLOY.md) writing to the same store.

The phases run in rounds (default 3, `--quick` 1): raw, sqlite, influxdb, ..., and a last
raw. This VM's speed drifts by tens of percent within minutes, so each round's rate is
compared with the raw runs just before and after it, and the table shows the median over
the rounds (every round is in the JSON and printed above the table). A consumer's persistent
session is ended after its phase (left behind, it would make Mosquitto queue every later
phase's messages for it). The ingest consumer and the raw subscriber run with the
garbage-collector setting of the service processes (`mipdstream.runtime.tune_gc_for_streaming`);
the publisher, a device's client, with CPython's default.

Only readings the publisher got a PUBACK for count as sent; `lost` are those not stored.

Every process of the run shares the machine's cores, so the rate is set by the CPU each
reading costs all of them together. For the saturated phase the benchmark reports that cost
by component, in CPU microseconds per reading (from /proc; Linux only): the subscriber's
network thread and the ingest worker thread, the whole subscriber or ingest process, the
publisher, Mosquitto and influxd (`cpu_us_per_reading` in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.consumer import IngestConsumer  # noqa: E402
from ingest.influx_store import InfluxStore  # noqa: E402
from ingest.mqtt import connect  # noqa: E402
from ingest.registry import Registry  # noqa: E402
from ingest.sqlite_store import SqliteStore  # noqa: E402
from mipdstream.runtime import tune_gc_for_streaming  # noqa: E402
from tests.servers import Influxd, Mosquitto  # noqa: E402

N_DEVICES = 1000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process, or of one of its threads, from /proc."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """CPU seconds spent by each component of the run between `start` and `stop`.

    `threads` maps a component name to a thread-name prefix in this process (the threads
    must be alive at `stop`: their whole lifetime is counted, and they start with the
    phase); `pids` maps names to other processes; the publisher is a waited-for child, so
    it is counted by the children's resource usage.
    """

    def __init__(self, threads: dict[str, str], pids: dict[str, int]):
        self.threads, self.pids = threads, pids

    def _now(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds = {"process": own.ru_utime + own.ru_stime, "publisher": children.ru_utime + children.ru_stime}
        seconds.update({name: _proc_cpu_s(pid) for name, pid in self.pids.items()})
        return seconds

    def start(self) -> CpuMeter:
        self._start = self._now()
        return self

    def stop(self, readings: int) -> dict[str, float]:
        """Microseconds of CPU per reading, by component."""
        end = self._now()
        spent = {name: end[name] - self._start[name] for name in end}
        for name, prefix in self.threads.items():
            spent[name] = sum(_proc_cpu_s(os.getpid(), t.native_id) for t in threading.enumerate()
                              if t.name.startswith(prefix))
        return {name: 1e6 * seconds / max(readings, 1) for name, seconds in spent.items()}


def device_id(i: int) -> str:
    return f"bench-dev-{i % N_DEVICES:04d}"


def publish_main(url: str, n: int, acked_file: str, rate: float, tag: str) -> None:
    """Child process: publish n readings (as fast as PUBACKs allow when rate is 0); write the acked ids."""
    from tests.publishing import AckedPublisher

    publisher = AckedPublisher(url, f"bench-pub-{os.getpid()}", protocol="5", max_in_flight=1000)

    def readings():
        for i in range(n):
            dev = device_id(i)
            yield dev, {"id": f"{dev}-{tag}{i}", "seq": i, "t": time.time(), "n": "20578-1", "u": "mg/L", "v": 10.0}

    started = time.time()
    publisher.publish_readings(readings(), rate_per_s=rate or None)
    publisher.wait_all_acked(120)
    elapsed = time.time() - started
    Path(acked_file).write_text("\n".join(publisher.acked))
    print(json.dumps({"acked": len(publisher.acked), "publish_per_s": len(publisher.acked) / elapsed}), flush=True)
    publisher.close()


def run_publisher(url: str, n: int, workdir: Path, rate: float = 0.0, tag: str = "s") -> tuple[set[str], float]:
    acked_file = workdir / f"acked-{time.time_ns()}.txt"
    out = subprocess.run(
        [sys.executable, __file__, "--publish", url, str(n), str(acked_file), str(rate), tag],
        capture_output=True, text=True, check=True,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    return set(acked_file.read_text().split("\n")) - {""}, summary["publish_per_s"]


def bench_raw(url: str, n: int, workdir: Path, pids: dict[str, int]) -> dict:
    received: list[float] = []
    cpu = CpuMeter({"network_thread": "paho-mqtt-client-"}, pids).start()
    subscriber, _ = connect(url, f"bench-raw-{time.time_ns()}", protocol="5", subscriptions=[("mipd/v1/dev/+/reading", 1)],
                            on_message=lambda c, u, m: received.append(time.time()))
    acked, publish_rate = run_publisher(url, n, workdir)
    deadline = time.time() + 60
    while len(received) < len(acked) and time.time() < deadline:
        time.sleep(0.05)
    cpu_us = cpu.stop(len(received))
    subscriber.disconnect()
    subscriber.loop_stop()
    rate = (len(received) - 1) / (received[-1] - received[0]) if len(received) > 1 else 0.0
    return {"store": "raw", "readings_per_s": rate, "received": len(received), "acked": len(acked),
            "publish_per_s": publish_rate, "cpu_us_per_reading": cpu_us}


def _open_store(kind: str, data: Path, influx_url: str | None, spool: str = "spool"):
    """A fresh store per data directory (one per store and round): an InfluxDB database of its name."""
    if kind == "sqlite":
        return SqliteStore(data / "store.sqlite")
    return InfluxStore(influx_url, "bench_" + data.name.replace("-", "_"), data / spool)


def _client_id(data: Path, index: int | None = None) -> str:
    """The ingest client id of a phase (its data directory), per consumer process when several."""
    return f"bench-ingest-{data.name}" + ("" if index is None else f"-{index}")


def consume_main(url: str, kind: str, data: str, influx_url: str, index: str) -> None:
    """Child process (``--ingest-processes`` > 1): one consumer on the shared subscription;
    prints one line per committed batch (commit time, then each reading's measurement time)
    until its stdin closes."""
    store = _open_store(kind, Path(data), influx_url or None, spool=f"spool-{index}")
    # One group per store and round: earlier consumers keep their persistent sessions in their
    # group, and Mosquitto goes on queueing their share of the messages for them.
    consumer = IngestConsumer(url, store, Registry(Path(data) / "registry.sqlite"), client_id=_client_id(Path(data), int(index)),
                              protocol="5", shared_group=f"bench-{Path(data).name}")
    consumer.on_commit(lambda batch, at: print(at, *(r.measured_at for r in batch.readings), flush=True))
    consumer.start()
    print("ready", flush=True)
    sys.stdin.read()
    consumer.stop()
    store.close()


class _ConsumerProcesses:
    """``count`` ingest processes on one MQTT 5 shared subscription (the deployed layout,
    docs/DEPLOY.md), each reporting its commits to `on_commit` through a pipe."""

    def __init__(self, count: int, url: str, kind: str, data: Path, influx_url: str | None, on_commit):
        self.procs = [
            subprocess.Popen([sys.executable, __file__, "--consume", url, kind, str(data), influx_url or "", str(i)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for i in range(count)
        ]
        for proc in self.procs:
            assert proc.stdout.readline().strip() == "ready"
        self.readers = [threading.Thread(target=self._read, args=(proc, on_commit), daemon=True) for proc in self.procs]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(proc, on_commit) -> None:
        for line in proc.stdout:
            committed_at, *measured = map(float, line.split())
            on_commit(committed_at, measured)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
        for proc in self.procs:
            proc.wait(60)
        for reader in self.readers:
            reader.join(10)


def bench_store(kind: str, url: str, n: int, workdir: Path, influx_url: str | None, pids: dict[str, int],
                processes: int = 1, *, round_index: int = 0, paced: tuple[float, float] | None = None) -> dict:
    """One saturated phase into a fresh store, then, when `paced` = (rate, seconds) is given, a paced one."""
    data = workdir / f"{kind}-{round_index}"
    registry = Registry(data / "registry.sqlite")
    for i in range(N_DEVICES):
        registry.register_device(device_id(i), "biosensor")
        registry.enroll(device_id(i), f"patient-{i:04d}", time.time() - 86400)
    store = _open_store(kind, data, influx_url)
    phases = {"saturated": ([], []), "paced": ([], [])}  # latencies, (commit time, batch size)
    current = ["saturated"]
    lock = threading.Lock()

    def record(committed_at: float, measured: list[float]) -> None:
        with lock:
            latencies, commits = phases[current[0]]
            latencies.extend(committed_at - t for t in measured)
            commits.append((committed_at, len(measured)))

    client_ids = [_client_id(data)] if processes == 1 else [_client_id(data, i) for i in range(processes)]
    if processes == 1:
        cpu = CpuMeter({"network_thread": "mqtt-select-loop", "worker_thread": "ingest-worker"}, pids).start()
        consumer = IngestConsumer(url, store, registry, client_id=client_ids[0], protocol="5")
        consumer.on_commit(lambda batch, at: record(at, [r.measured_at for r in batch.readings]))
        consumer.start()
    else:
        consumer = _ConsumerProcesses(processes, url, kind, data, influx_url, record)
        cpu = CpuMeter({}, {**pids, **{f"process_{i}": p.pid for i, p in enumerate(consumer.procs)}}).start()
    acked, publish_rate = run_publisher(url, n, workdir, tag=f"s{round_index}-")
    _wait_for(lambda: len(phases["saturated"][0]) >= len(acked))
    cpu_us = cpu.stop(len(phases["saturated"][0]))
    if processes > 1:
        cpu_us["process"] = sum(cpu_us.pop(f"process_{i}") for i in range(processes))
    if paced is not None:
        current[0] = "paced"
        paced_acked, _ = run_publisher(url, int(paced[0] * paced[1]), workdir, rate=paced[0], tag="p")
        _wait_for(lambda: len(phases["paced"][0]) >= len(paced_acked))
        acked |= paced_acked
    consumer.stop()
    _discard_sessions(url, client_ids)
    stored = _stored_ids(kind, store)
    store.close()
    saturated_ms = np.array(phases["saturated"][0]) * 1000
    row = {
        "store": kind,
        "ingest_processes": processes,
        "readings_per_s": _sustained_rate(phases["saturated"][1]),
        "saturated_p99_commit_ms": float(np.percentile(saturated_ms, 99)),
        "acked": len(acked),
        "stored": len(set(stored)),
        "lost": len(acked - set(stored)),
        "duplicates_stored": len(stored) - len(set(stored)),
        "publish_per_s": publish_rate,
        "mean_batch": float(np.mean([c for _, c in phases["saturated"][1]])),
        "cpu_us_per_reading": cpu_us,
    }
    if paced is not None:
        paced_ms = np.array(phases["paced"][0]) * 1000
        row.update(p50_commit_ms=float(np.percentile(paced_ms, 50)), p99_commit_ms=float(np.percentile(paced_ms, 99)),
                   paced_rate_per_s=paced[0])
    return row


def _discard_sessions(url: str, client_ids: list[str]) -> None:
    """End the consumers' persistent sessions: Mosquitto would otherwise go on queueing every
    later phase's messages for them (their subscriptions outlive the connection), at a cost
    that grows with each phase and is charged to whatever runs next."""
    for client_id in client_ids:
        client, _ = connect(url, client_id, protocol="5")  # clean start, session expiry 0
        client.disconnect()
        client.loop_stop()


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.05)


def _sustained_rate(commits: list[tuple[float, int]]) -> float:
    """Readings/s between the first and the last commit (the first batch opens the clock)."""
    commits = sorted(commits)
    first, last = commits[0][0], commits[-1][0]
    return (sum(c for _, c in commits) - commits[0][1]) / (last - first) if last > first else 0.0


def _stored_ids(kind: str, store) -> list[str]:
    if kind == "sqlite":
        return [row[0] for row in store._reader().execute("SELECT reading_id FROM reading")]
    return [row["reading_id"] for row in store._query('SELECT "reading_id", "value" FROM "reading"')]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 readings per configuration instead of 100,000")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--paced-rate", type=float, default=2000.0, help="offered load of the latency phase, readings/s")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--rounds", type=int, default=0,
                        help="rounds of (raw, sqlite, influxdb) saturated phases, and a last raw; default 3 (--quick: 1)")
    parser.add_argument("--ingest-processes", type=int, default=1,
                        help="consumer processes on one MQTT 5 shared subscription (the deployed layout); default 1")
    parser.add_argument("--publish", nargs=5, metavar=("URL", "N", "ACKED_FILE", "RATE", "TAG"), help=argparse.SUPPRESS)
    parser.add_argument("--consume", nargs=5, metavar=("URL", "KIND", "DATA", "INFLUX_URL", "INDEX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        url, count, acked_file, rate, tag = args.publish
        publish_main(url, int(count), acked_file, float(rate), tag)
        return
    # The collector setting of the service processes (mipdstream.runtime), for the ingest
    # consumer and the raw subscriber alike: both run in this process (or in `--consume` children).
    tune_gc_for_streaming()
    if args.consume:
        consume_main(*args.consume)
        return
    n = 20_000 if args.quick else 100_000
    rounds = args.rounds or (1 if args.quick else 3)
    kinds = ("sqlite", "influxdb")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "mosquitto").mkdir()
        (workdir / "influxd").mkdir()
        broker = Mosquitto(workdir / "mosquitto").start()
        influxd = Influxd(workdir / "influxd").start()
        try:
            pids = {"mosquitto": broker.proc.pid, "influxd": influxd.proc.pid}
            raws = [bench_raw(broker.url, n, workdir, pids)]
            by_round = []
            for r in range(rounds):
                paced = (args.paced_rate, args.paced_seconds) if r == rounds - 1 else None
                by_round.append({kind: bench_store(kind, broker.url, n, workdir, influxd.url, pids, args.ingest_processes,
                                                   round_index=r, paced=paced) for kind in kinds})
                raws.append(bench_raw(broker.url, n, workdir, pids))
        finally:
            broker.stop()
            influxd.stop()
    raw_row = _raw_row(raws, n)
    rows = [raw_row, *(_store_row(kind, by_round, raws, raw_row["raw_receive_per_s"], n) for kind in kinds)]
    print(f"ingest benchmark: {n} QoS 1 readings from {N_DEVICES} devices, Mosquitto, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"{args.ingest_processes} ingest process(es), {rounds} round(s)")
    print("raw subscriber /s: " + ", ".join(f"{raw['readings_per_s']:.0f}" for raw in raws)
          + " (before each round and after the last); a round's ratio is against the mean of the raw runs around it")
    for row in rows[1:]:
        print(f"{row['store']} /s by round: "
              + ", ".join(f"{rate:.0f} ({ratio:.2f})" for rate, ratio in zip(row["readings_per_s_by_round"], row["ratio_by_round"])))
    print(f"latency paced at {args.paced_rate:.0f} readings/s for {args.paced_seconds:.0f} s (last round); "
          "'sat p99' is the latency under the saturating publisher (broker backlog); rates and ratios: median of the rounds")
    print(f"{'store':<9} {'readings/s':>11} {'x raw':>6} {'p50 ms':>8} {'p99 ms':>8} {'sat p99':>8} {'lost':>5} {'dup':>4} {'publisher/s':>12}")
    nan = float("nan")
    for row in rows:
        print(f"{row['store']:<9} {row['readings_per_s']:>11.0f} {row['ratio_to_raw']:>6.2f} "
              f"{row.get('p50_commit_ms', nan):>8.1f} {row.get('p99_commit_ms', nan):>8.1f} "
              f"{row.get('saturated_p99_commit_ms', nan):>8.1f} "
              f"{row.get('lost', 0):>5} {row.get('duplicates_stored', 0):>4} {row['publish_per_s']:>12.0f}")
    _print_cpu(raws, by_round)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _raw_row(raws: list[dict], n: int) -> dict:
    rate = float(np.mean([raw["readings_per_s"] for raw in raws]))
    return {**raws[0], "readings_per_s": rate, "raw_receive_per_s": rate, "ratio_to_raw": 1.0, "readings": n,
            "raw_by_run_per_s": [raw["readings_per_s"] for raw in raws],
            "cpu_us_per_reading_by_run": [raw["cpu_us_per_reading"] for raw in raws]}


def _store_row(kind: str, by_round: list[dict], raws: list[dict], raw_rate: float, n: int) -> dict:
    """The last round's row (it has the paced latency) with rates and ratios over every round.

    A round's ratio is its rate against the mean of the raw runs just before and after it: the
    VM's speed drifts by tens of percent within minutes, and a raw run far away in time is
    no baseline. The median over the rounds is what the table shows."""
    rates = [r[kind]["readings_per_s"] for r in by_round]
    ratios = [rate / ((raws[i]["readings_per_s"] + raws[i + 1]["readings_per_s"]) / 2) for i, rate in enumerate(rates)]
    last = by_round[-1][kind]
    return {
        **last,
        "readings_per_s": float(np.median(rates)),
        "ratio_to_raw": float(np.median(ratios)),
        "raw_receive_per_s": raw_rate,
        "readings_per_s_by_round": rates,
        "ratio_by_round": ratios,
        "acked": sum(r[kind]["acked"] for r in by_round),
        "stored": sum(r[kind]["stored"] for r in by_round),
        "lost": sum(r[kind]["lost"] for r in by_round),
        "duplicates_stored": sum(r[kind]["duplicates_stored"] for r in by_round),
        "cpu_us_per_reading_by_round": [r[kind]["cpu_us_per_reading"] for r in by_round],
        "readings": n,
    }


def _print_cpu(raws: list[dict], by_round: list[dict]) -> None:
    """CPU microseconds per reading by component, saturated phases, in the order they ran."""
    columns = ("network_thread", "worker_thread", "process", "publisher", "mosquitto", "influxd")
    print(f"CPU us per reading, saturated phases in the order they ran ({os.cpu_count()} cores: "
          "the rate is about cores x 1e6 / total when all of them are busy)")
    print(f"{'phase':<12} " + " ".join(f"{c.replace('_thread', ''):>10}" for c in columns) + f" {'total':>8}")
    named = [("raw 0", raws[0]["cpu_us_per_reading"])]
    for r, stores in enumerate(by_round):
        named += [(f"{kind} {r}", row["cpu_us_per_reading"]) for kind, row in stores.items()]
        named.append((f"raw {r + 1}", raws[r + 1]["cpu_us_per_reading"]))
    for name, cpu in named:
        total = sum(cpu.get(c, 0.0) for c in ("process", "publisher", "mosquitto", "influxd"))
        cells = " ".join(f"{cpu[c]:>10.1f}" if c in cpu else f"{'':>10}" for c in columns)
        print(f"{name:<12} {cells} {total:>8.1f}")


if __name__ == "__main__":
    main()
