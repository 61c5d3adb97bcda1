"""End to end: publish -> stored -> posterior updated -> policy evaluated, through a real Mosquitto.

    python benchmarks/e2e.py [--quick] [--json FILE] [--patients 10000] [--particles 1000]

The live service (`mipd run`'s pipeline, in this process: ingest on the SQLite store, the
micro-batching assimilator with the particle filter, the dosing policy) serves ``--patients``
enrolled vancomycin patients, each with a 1 g infusion on record and an interstitial-fluid
biosensor. A publisher in a child process (paho, QoS 1) sends, phase after phase:

* unmeasured: ``warmup`` at the steady rate, ``prime`` (3 s at ten times it) and ``quiet``
  (30 s at the steady rate), so that the batch shapes both loads produce are compiled and
  every patient's first regimen assessment has been queued before the clock starts;
* ``steady``: one reading per patient per minute (10,000 patients: ~167 readings/s);
* ``burst``: ten times that rate for ``--burst-s`` seconds, then ``after``: 30 s at the
  steady rate again;
* ``flood``: five seconds' worth of burst readings as fast as the broker acknowledges them;
  from its first reading to its last assimilation the service runs flat out, so its rate is
  the sustained ceiling.

A reading's latency is from the publisher handing it to paho to the moment the policy
evaluator returned for the update that assimilated it (the reading has been validated,
committed to the store, acknowledged, assimilated and checked against the posterior
predictive); publish -> commit is reported beside it. Regimen searches run on their own
thread and are not in the latency (at most one per patient per model hour; they are in the
CPU load). ``lost``: readings the broker acknowledged that were never assimilated (the
benchmark waits for as long as the service keeps making progress).

Target: p99 <= 250 ms at the steady load on 2 CPU cores; the burst absorbed
without loss; the ceiling reported. The reorder window (``--reorder-window-s``, default 0:
a late reading rewinds instead of waiting) adds its length to every latency when set.
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
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

MODEL = "vancomycin"
ISF_CODE = "x-mipd-vancomycin-isf"
DOSE_MG, DOSE_H = 1000.0, 1.0


def device(kind: str, i: int) -> str:
    return f"e2e-{kind}-{i:05d}"


# -- the publisher (child process) ----------------------------------------------------------

def publish_main(url: str, plan_file: str, out_file: str) -> None:
    """Publish the phases in ``plan_file``; write {id: send time} of every acknowledged message."""
    from tests.publishing import AckedPublisher

    plan = json.loads(Path(plan_file).read_text())
    grid, table = np.asarray(plan["grid_h"]), np.asarray(plan["isf_mg_l"])
    rng = np.random.default_rng(plan["seed"])
    publisher = AckedPublisher(url, f"e2e-pub-{os.getpid()}", protocol="5", max_in_flight=2000)
    n, origin, seq = plan["patients"], plan["origin"], 0

    def readings(count: int, tag: str):
        nonlocal seq
        for k in range(count):
            i = k % n
            t = time.time()
            value = float(np.interp((t - origin) / 3600, grid, table) * np.exp(rng.normal(0, 0.1)))
            seq += 1
            yield device("isf", i), {"id": f"{tag}{k}", "seq": seq, "t": t, "n": ISF_CODE, "u": "mg/L", "v": round(value, 3)}

    for phase in plan["phases"]:
        print(json.dumps({"phase": phase["name"], "at": time.time()}), flush=True)
        publisher.publish_readings(readings(phase["count"], phase["name"][0]), rate_per_s=phase["rate"] or None)
    publisher.wait_all_acked(300)
    times = {mid: publisher.send_times[mid] for mid in publisher.acked}
    Path(out_file).write_text(json.dumps(times))
    publisher.close()


# -- the service (this process) ----------------------------------------------------------------

class TimedEvaluator:
    """The service's policy evaluator, noting when each reading's update was evaluated."""

    def __init__(self, inner):
        self.inner = inner
        self.done: dict[str, float] = {}  # reading key -> wall time the evaluator returned
        self.committed: dict[str, float] = {}  # reading key -> wall time ingest committed it
        self.spent: list[tuple[float, float]] = []  # (when, seconds in the policy evaluator) per update

    def on_commit(self, batch, committed_at) -> None:
        for r in batch.readings:
            self.committed[f"r:{r.device_id}:{r.reading_id}"] = committed_at

    def __call__(self, patient, posterior, work, now_s):
        return self.evaluate_batch([(patient, posterior, work)], now_s)

    def evaluate_batch(self, updates, now_s):
        """The service evaluates each batched update at once (one batched reading check)."""
        began = time.perf_counter()
        batch = getattr(self.inner, "evaluate_batch", None)
        alerts = batch(updates, now_s) if batch is not None else [a for u in updates for a in self.inner(*u, now_s)]
        finished = time.time()
        self.spent.append((finished, time.perf_counter() - began))
        for _, _, work in updates:
            for event in work.events:
                if event.key.startswith("r:"):
                    self.done.setdefault(event.key, finished)
        return alerts

    def __getattr__(self, name):  # tick, bind, close, idle, add_assessment_sink
        return getattr(self.inner, name)


def typical_isf(hours: np.ndarray) -> np.ndarray:
    """The typical patient's ISF reading after the dose on record (what the sensors send)."""
    import jax.numpy as jnp

    from assimilation import Dose, load_model
    from assimilation.simulate import amounts_at, dose_table_of, predict_readings

    model = load_model(MODEL)
    log_params = jnp.asarray(model.typical_log_params(), jnp.float32)
    amounts = amounts_at(model, log_params, dose_table_of(model, [Dose(0.0, DOSE_MG, None, DOSE_H)]), jnp.asarray(hours))
    params = model.parameters(log_params)
    isf = model.analyte_index("isf")
    return np.array([float(predict_readings(model, params, x)[isf]) for x in amounts])


def enroll(live, n: int, origin: float) -> None:
    from mipdstream.service.state_db import PatientRecord

    registry = live.ingest.registry
    for i in range(n):
        pid = f"e2e-patient-{i:05d}"
        live.db.add_patient(PatientRecord(pid, MODEL, {"CRCL": 90.0, "WT": 75.0, "DIAL": 0}, origin))
        for kind, device_kind in (("pump", "infusion-pump"), ("isf", "biosensor")):
            registry.register_device(device(kind, i), device_kind)
            registry.enroll(device(kind, i), pid, origin - 60)


def give_doses(url: str, n: int, origin: float) -> None:
    from tests.publishing import AckedPublisher
    from wire.topics import TopicKind, device_topic

    publisher = AckedPublisher(url, "e2e-pumps", protocol="5", max_in_flight=2000)
    for i in range(n):
        body = {"id": "d1", "seq": 1, "t": origin, "drug": "vancomycin", "amt": DOSE_MG / 1000, "u": "g",
                "route": "iv_infusion", "dur": 3600 * DOSE_H}
        publisher.publish(device_topic(device("pump", i), TopicKind.DOSE), f"d{i}", json.dumps(body))
    publisher.wait_all_acked(120)
    publisher.close()


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.1)
    return predicate()


def percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(values_ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases (same patients and rates)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--steady-s", type=float, default=None, help="measured steady phase (default 120 s, quick 45 s)")
    parser.add_argument("--burst-s", type=float, default=None, help="10x burst (default 30 s, quick 10 s)")
    parser.add_argument("--warmup-s", type=float, default=None, help="unmeasured steady warm-up (default 90 s, quick 60 s)")
    parser.add_argument("--reorder-window-s", type=float, default=0.0)
    parser.add_argument("--batch-window-ms", type=float, default=50.0, help="assimilation micro-batch window")
    args = parser.parse_args(argv)
    steady_s = args.steady_s or (45.0 if args.quick else 120.0)
    burst_s = args.burst_s or (10.0 if args.quick else 30.0)
    warmup_s = args.warmup_s or (60.0 if args.quick else 90.0)
    rate = args.patients / 60.0

    from mipdstream.config import Settings
    from mipdstream.service.live import live_service
    from mipdstream.service.policy import default_evaluator
    from tests.servers import Mosquitto

    work = Path(tempfile.mkdtemp(prefix="mipd-e2e-"))
    broker = Mosquitto(work / "mosquitto").start()
    settings = Settings(data_dir=work / "data", broker_url=broker.url, mqtt_protocol="5", filter_particles=args.particles,
                        reorder_window_s=args.reorder_window_s, assimilation_batch_window_ms=args.batch_window_ms,
                        publish_alerts=True, publish_sample_requests=False)
    evaluator = TimedEvaluator(default_evaluator(settings))
    origin = time.time() - 2 * 3600
    grid = np.arange(0.0, 12.0, 0.05)
    started = time.time()
    with live_service(settings, evaluator=evaluator, serve_http=False) as live:
        live.ingest.consumer.on_commit(evaluator.on_commit)
        enroll(live, args.patients, origin)
        give_doses(live.ingest.url, args.patients, origin)
        assert wait_for(lambda: live.assimilator.metrics.assimilated._value.get() >= args.patients, 600), "doses not assimilated"
        setup_s = time.time() - started
        # warmup, prime and quiet are not measured (see the module doc)
        phase = lambda name, r, seconds: {"name": name, "rate": r, "count": int(r * seconds)}
        phases = [phase("warmup", rate, warmup_s), phase("prime", 10 * rate, min(burst_s, 3.0)), phase("quiet", rate, 30.0),
                  phase("steady", rate, steady_s), phase("burst", 10 * rate, burst_s), phase("after", rate, 30.0),
                  # as fast as the broker acknowledges, 5 s of the burst's rate: the ceiling
                  {"name": "flood", "rate": 0.0, "count": int(10 * rate * 5)}]
        plan_file, out_file = work / "plan.json", work / "acked.json"
        plan_file.write_text(json.dumps({"patients": args.patients, "origin": origin, "seed": 7, "phases": phases,
                                         "grid_h": grid.tolist(), "isf_mg_l": typical_isf(grid).tolist()}))
        child = subprocess.Popen([sys.executable, __file__, "--publish", live.ingest.url, str(plan_file), str(out_file)],
                                 stdout=subprocess.PIPE, text=True)
        marks = {}
        for line in child.stdout:
            mark = json.loads(line)
            marks[mark["phase"]] = mark["at"]
            print(f"  {mark['phase']} phase ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
        child.wait()
        sent = json.loads(out_file.read_text())
        keys = {mid: f"r:{device('isf', int(mid[1:]) % args.patients)}:{mid}" for mid in sent}
        # a backlog is not a loss: wait while the service still makes progress
        while not all(k in evaluator.done for k in keys.values()):
            before = len(evaluator.done)
            if not wait_for(lambda: all(k in evaluator.done for k in keys.values()), 60) and len(evaluator.done) == before:
                break
        metrics = live.assimilator.metrics
        stats = {"failures": metrics.failures._value.get(), "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    broker.stop()

    def phase_of(mid: str) -> str:
        return {"w": "warmup", "p": "prime", "q": "quiet", "s": "steady", "b": "burst", "a": "after", "f": "flood"}[mid[0]]

    latencies: dict[str, list[float]] = {p["name"]: [] for p in phases}
    ingest_ms: dict[str, list[float]] = {p["name"]: [] for p in phases}  # publish -> committed
    lost = {p["name"]: 0 for p in phases}
    for mid, t in sent.items():
        done, committed = evaluator.done.get(keys[mid]), evaluator.committed.get(keys[mid])
        if done is None:
            lost[phase_of(mid)] += 1
        else:
            latencies[phase_of(mid)].append(1000 * (done - t))
        if committed is not None:
            ingest_ms[phase_of(mid)].append(1000 * (committed - t))
    done_in = lambda tag: [evaluator.done[keys[m]] for m in sent if m[0] == tag and keys[m] in evaluator.done]
    burst_end = marks.get("after", 0.0)
    last_burst = max(done_in("b"), default=None)
    backlog_s = max(0.0, last_burst - burst_end) if last_burst is not None else 0.0
    # The flood: readings offered faster than the service takes them; from its first reading
    # to its last assimilation the service runs flat out, so the rate is its ceiling.
    flooded = done_in("f")
    ceiling = len(flooded) / (max(flooded) - marks["flood"]) if flooded else None
    common = {"patients": args.patients, "particles": args.particles, "model": MODEL, "store": "sqlite",
              "reorder_window_s": args.reorder_window_s, "batch_window_ms": args.batch_window_ms,
              "cpus": len(os.sched_getaffinity(0)), "machine": platform.machine(), "setup_s": setup_s, **stats}
    rows = []
    for p in phases[3:6]:
        rows.append({"phase": p["name"], "readings_per_s": p["rate"], "readings": len(latencies[p["name"]]) + lost[p["name"]],
                     "lost": lost[p["name"]], **percentiles(latencies[p["name"]]),
                     **{f"commit_{k}": v for k, v in percentiles(ingest_ms[p["name"]]).items()}, **common})
    in_flood = [d for t, d in evaluator.spent if flooded and marks["flood"] <= t <= max(flooded)]
    policy_share = sum(in_flood) / (max(flooded) - marks["flood"]) if in_flood else None
    rows.append({"phase": "ceiling", "readings_per_s": ceiling, "policy_check_share": policy_share,
                 "backlog_drained_s": backlog_s, "flood_readings": len(flooded), "lost": sum(lost.values()), **common})
    print(f"{'phase':<9} {'offered/s':>9} {'readings':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'lost':>5}"
          f" {'commit p50':>10} {'commit p99':>10}")
    for r in rows[:-1]:
        fmt = lambda v, w=8: f"{v:{w}.0f}" if v is not None else f"{'-':>{w}}"
        print(f"{r['phase']:<9} {r['readings_per_s']:9.0f} {r['readings']:8d} {fmt(r['p50_ms'])} {fmt(r['p99_ms'])} {fmt(r['max_ms'])}"
              f" {r['lost']:5d} {fmt(r['commit_p50_ms'], 10)} {fmt(r['commit_p99_ms'], 10)}")
    print(f"burst backlog drained {backlog_s:.1f} s after the burst; sustained ceiling {ceiling or 0:.0f} readings/s "
          f"({100 * (policy_share or 0):.0f} % of it in the policy's per-reading checks); "
          f"{args.patients} patients x {args.particles} particles; peak RSS {stats['rss_mb']:.0f} MB; "
          f"set-up {setup_s:.0f} s; target p99 <= 250 ms at the steady load")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        publish_main(*sys.argv[2:5])
    else:
        main()
