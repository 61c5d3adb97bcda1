"""Assimilation throughput: patient-updates/s of the JAX particle filter and EnKF.

    python benchmarks/assimilation.py [--quick] [--json FILE]

One patient-update = one reading assimilated into one patient's posterior. For each model
(2-compartment IV bolus, 1-compartment oral) the same simulated data (true parameters drawn
from the model's prior, one dose at t = 0, readings at fixed times with residual error) are
assimilated by:

- ``pf`` / ``enkf``: this package, 1,000 particles, float32, 1 / 100 / 1,000 / 10,000 patients
  in one batch (the engine's level: pre-packed steps, one jitted vmapped step per reading
  round; the online API adds Python packing of the events on top);
- ``filterpy-enkf``: filterpy's EnsembleKalmanFilter, one patient at a time, 1,000 members,
  fx = exact propagation through numpy's eigendecomposition, hx = concentration (the naive baseline);
- ``map``: this package's MAP estimator (scipy L-BFGS-B, JAX gradients, warm-started from the
  previous mode), refitting the whole history at every reading, one patient at a time;
- ``bma``: Bayesian model averaging over the library's three vancomycin models
  (``assimilation.averaging``, particle-filter members, weights updated reading by reading)
  against one of them (``vancomycin``) alone, both through their online APIs on the same
  readings (1,000 patients, 1,000 particles per model): ``ratio_to_single`` is the averaged
  update's time over the single model's (target <= 3.5).

Each configuration runs in its own process, so ``peak_rss_mb`` is that configuration's peak
resident memory (JAX runtime included). The processes run with glibc's malloc asked for
transparent huge pages, as the ``mipd`` command does (``mipdstream.huge_pages``;
``--default-malloc`` leaves glibc's defaults, under which each kernel call faults its
temporaries in 4 KiB pages). ``compile_s`` = first run (compiles) − a warm run of
the same data; the engine's figures are the median of three warm runs (``warm_runs_s`` lists
them), each on a fresh initial state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from mipdstream.huge_pages import huge_page_environment, huge_page_malloc_available, huge_page_malloc_requested  # noqa: E402

MODELS = {"iv2": "two_compartment_infusion", "oral1": "one_compartment_oral"}
COVARIATES = {"two_compartment_infusion": {"CRCL": 120.0, "WT": 70.0}, "one_compartment_oral": {"WT": 70.0},
              "vancomycin": {"CRCL": 120.0, "WT": 70.0, "DIAL": 0}}
DOSES = {"two_compartment_infusion": 1000.0, "one_compartment_oral": 320.0, "vancomycin": 1000.0}
BMA_MODELS = ("vancomycin", "vancomycin_thomson", "vancomycin_purwonugroho2012")
BMA_COVARIATES = {"CRCL": 120.0, "WT": 70.0, "DIAL": 0, "AGE": 60.0}
NUMPY_MODELS = {  # the two benchmark models' rate matrices and readings, in numpy
    "two_compartment_infusion": (
        lambda q: __import__("numpy").array([[-(q["CL"] + q["Q"]) / q["V1"], q["Q"] / q["V2"]], [q["Q"] / q["V1"], -q["Q"] / q["V2"]]]),
        lambda q, x: x[0] / q["V1"],
    ),
    "one_compartment_oral": (
        lambda q: __import__("numpy").array([[-q["ka"], 0.0], [q["ka"], -q["CL"] / q["V"]]]),
        lambda q, x: x[1] / q["V"],
    ),
}
TIMES = [0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0]
WARM_RUNS = 3  # the engine's figure is the median of these (a shared VM scatters single runs by ±10-20 %)


def simulate(model, n_patients: int, n_readings: int, seed: int = 0):
    """True log θ from the prior, readings with residual error: (events per patient, truth)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from assimilation import Dose
    from assimilation.events import Reading
    from assimilation.parameters import prior_mean
    from assimilation.simulate import amounts_at, dose_table_of, predict_readings

    rng = np.random.default_rng(seed)
    covariates = COVARIATES[model.name]
    mean = prior_mean(model.population, covariates)
    truth = mean + rng.normal(size=(n_patients, model.n_parameters)) @ model.population.omega_sqrt().T
    times = jnp.asarray(TIMES[:n_readings], jnp.float32)
    table = dose_table_of(model, [Dose(0.0, DOSES[model.name])])

    def concentrations(lp):
        x = amounts_at(model, lp, table, times)
        return jax.vmap(lambda xi: predict_readings(model, model.parameters(lp), xi)[0])(x)

    f = np.asarray(jax.jit(jax.vmap(concentrations))(jnp.asarray(truth, jnp.float32)))
    y = np.asarray(model.analytes[0].error.sample(jnp.asarray(rng.normal(size=f.shape), jnp.float32), jnp.asarray(f)))
    y = np.maximum(y, 0.01)
    events = [[Dose(0.0, DOSES[model.name])] + [Reading(float(t), float(v)) for t, v in zip(TIMES, row)] for row in y]
    return events, truth


def run_engine(method: str, model_name: str, n_patients: int, n_particles: int, n_readings: int) -> dict:
    """PF or EnKF over all patients at once; returns timings of a warm run."""
    import jax
    import numpy as np

    from assimilation import ensemble_kalman, load_model, particle_filter
    from assimilation.events import bucket, pack_events
    from assimilation.online import _patient_keys
    from assimilation.parameters import prior_mean

    model = load_model(model_name)
    events, _ = simulate(model, n_patients, n_readings)
    module = {"pf": particle_filter, "enkf": ensemble_kalman}[method]
    options = module.Options(n_particles=n_particles)
    rows = bucket(n_patients)
    means = np.repeat(prior_mean(model.population, COVARIATES[model_name])[None], rows, axis=0)
    steps = pack_events(model, events, rows, np.float32)
    keys = _patient_keys(0, rows)

    def once():
        state = module.initial_state(model, options, means, keys)
        jax.block_until_ready(state)
        start = time.perf_counter()
        state = module.update(model, options, state, steps, donate=True)  # the initial state is not needed again
        jax.block_until_ready(state)
        return time.perf_counter() - start, state

    first = once()[0]  # the warm-up's state is dropped at once: peak RSS is one run's
    runs = []
    for _ in range(WARM_RUNS):
        state = None  # the previous run's state is dropped before the next is made
        seconds, state = once()
        runs.append(seconds)
    second = float(np.median(runs))
    updates = n_patients * n_readings
    result = {"seconds": second, "compile_s": max(first - second, 0.0), "patient_updates": updates, "warm_runs_s": runs}
    if method == "pf":
        result["resamples_per_update"] = float(np.asarray(state.resamples)[:n_patients].sum() / updates)
    return result


def run_filterpy(model_name: str, n_particles: int, n_readings: int, budget_s: float) -> dict:
    """filterpy EnsembleKalmanFilter on augmented (log θ, amounts), one patient at a time."""
    import numpy as np
    from filterpy.kalman import EnsembleKalmanFilter

    from assimilation import load_model
    from assimilation.parameters import prior_mean

    model = load_model(model_name)
    events, _ = simulate(model, 50, n_readings)
    p, n = model.n_parameters, model.n_compartments
    mean = prior_mean(model.population, COVARIATES[model_name])
    x0 = np.concatenate([mean, np.zeros(n)])
    x0[p + model.dose_compartment] = DOSES[model_name]
    P0 = np.zeros((p + n, p + n))
    P0[:p, :p] = model.population.omega + 1e-12 * np.eye(p)
    P0[p:, p:] = 1e-9 * np.eye(n)
    analyte = model.analytes[0]
    names = model.population.names
    # fx/hx in plain numpy (eigendecomposition per member): a typical hand-written baseline
    rate_matrix, concentration = NUMPY_MODELS[model_name]

    def fx(x, dt):
        out = x.copy()
        rates, vectors = np.linalg.eig(rate_matrix(dict(zip(names, np.exp(x[:p])))))
        out[p:] = (vectors @ (np.exp(rates * dt) * np.linalg.solve(vectors, x[p:]))).real
        return out

    def hx(x):
        return np.array([concentration(dict(zip(names, np.exp(x[:p]))), x[p:])])

    np.random.seed(0)
    done, start = 0, time.perf_counter()
    for patient in events:
        enkf = EnsembleKalmanFilter(x=x0.copy(), P=P0, dim_z=1, dt=1.0, N=n_particles, hx=hx, fx=fx)
        enkf.R = np.array([[float(analyte.error.variance(np.float32(5.0)))]])
        enkf.Q = np.zeros((p + n, p + n))
        now = 0.0
        for reading in patient[1:]:
            enkf.dt = reading.time - now
            enkf.predict()
            enkf.update(np.array([reading.value]))
            now = reading.time
            done += 1
            if time.perf_counter() - start > budget_s:
                return {"seconds": time.perf_counter() - start, "compile_s": 0.0, "patient_updates": done}
    return {"seconds": time.perf_counter() - start, "compile_s": 0.0, "patient_updates": done}


def run_map(model_name: str, n_particles: int, n_readings: int, budget_s: float) -> dict:
    """Warm-started MAP refit on the full history at every reading, one patient at a time."""
    from assimilation import load_model, online

    model = load_model(model_name)
    events, _ = simulate(model, 50, n_readings)
    # compile on one patient first (every history length used later)
    t0 = time.perf_counter()
    posterior = online.init(model, COVARIATES[model_name], 0, n_particles, "map")
    posterior = online.update(posterior, events[0][:1])
    for reading in events[0][1:]:
        posterior = online.update(posterior, [reading])
    compile_s = time.perf_counter() - t0
    done, start = 0, time.perf_counter()
    for patient in events[1:]:
        posterior = online.update(online.init(model, COVARIATES[model_name], 0, n_particles, "map"), patient[:1])
        for reading in patient[1:]:
            posterior = online.update(posterior, [reading])
            done += 1
        if time.perf_counter() - start > budget_s:
            break
    return {"seconds": time.perf_counter() - start, "compile_s": compile_s, "patient_updates": done}


def run_bma(n_patients: int, n_particles: int, n_readings: int) -> dict:
    """Averaged update over BMA_MODELS vs the first alone, both warm, same readings (from its prior)."""
    import numpy as np

    from assimilation import averaging, load_model, online

    single = load_model(BMA_MODELS[0])
    events, _ = simulate(single, n_patients, n_readings)

    def timed(make, update):
        runs = []
        for _ in range(WARM_RUNS + 1):  # the first run compiles
            posterior = make()
            start = time.perf_counter()
            update(posterior, events)
            runs.append(time.perf_counter() - start)
        return runs[0], runs[1:]

    single_first, single_runs = timed(lambda: online.init(single, [COVARIATES[single.name]] * n_patients, 0, n_particles, "pf"), online.update)
    bma_first, bma_runs = timed(lambda: averaging.init(BMA_MODELS, [BMA_COVARIATES] * n_patients, 0, n_particles, "pf"), averaging.update)
    seconds, single_seconds = float(np.median(bma_runs)), float(np.median(single_runs))
    return {"seconds": seconds, "compile_s": max(bma_first - seconds, 0.0), "patient_updates": n_patients * n_readings,
            "warm_runs_s": bma_runs, "single_seconds": single_seconds, "single_warm_runs_s": single_runs,
            "ratio_to_single": seconds / single_seconds, "models": list(BMA_MODELS)}


def one(config: dict) -> dict:
    method = config["method"]
    if method == "bma":
        result = run_bma(config["patients"], config["particles"], config["readings"])
    elif method in ("pf", "enkf"):
        result = run_engine(method, config["model"], config["patients"], config["particles"], config["readings"])
    elif method == "filterpy-enkf":
        result = run_filterpy(config["model"], config["particles"], config["readings"], config["budget_s"])
    else:
        result = run_map(config["model"], config["particles"], config["readings"], config["budget_s"])
    result["patient_updates_per_s"] = result["patient_updates"] / result["seconds"]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["huge_page_malloc"] = huge_page_malloc_requested() and huge_page_malloc_available()
    return {**config, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 readings per patient, short baseline budgets")
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument("--default-malloc", action="store_true",
                        help="run the measuring processes with glibc's malloc defaults (no huge pages)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    readings = 4 if args.quick else 12
    budget = 10.0 if args.quick else 60.0
    configs = []
    # each configuration in a process of its own, started as the `mipd` command restarts itself
    env = os.environ.copy() if args.default_malloc else huge_page_environment()
    for model in MODELS.values():
        configs.append({"method": "filterpy-enkf", "model": model, "patients": 1, "particles": 1000, "readings": readings, "budget_s": budget})
        configs.append({"method": "map", "model": model, "patients": 1, "particles": 1000, "readings": readings, "budget_s": budget})
        for method in ("pf", "enkf"):
            for patients in (1, 100, 1000, 10000):
                configs.append({"method": method, "model": model, "patients": patients, "particles": 1000, "readings": readings})
    configs.append({"method": "bma", "model": "vancomycin", "patients": 1000, "particles": 1000, "readings": readings})
    results = []
    for config in configs:
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(config)], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(f"FAILED {config}: {out.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = results[-1]
        extra = f" ({r['ratio_to_single']:.2f}x the single model's time)" if "ratio_to_single" in r else ""
        print(f"  {r['model']:26s} {r['method']:14s} {r['patients']:6d} patients: {r['patient_updates_per_s']:10.1f} /s{extra}", file=sys.stderr)
    baseline = {}
    for r in results:
        if r["method"] in ("filterpy-enkf", "map"):
            baseline[(r["model"], r["method"])] = r["patient_updates_per_s"]
    for r in results:
        r["ratio_to_filterpy"] = r["patient_updates_per_s"] / baseline.get((r["model"], "filterpy-enkf"), float("nan"))
        r["ratio_to_map"] = r["patient_updates_per_s"] / baseline.get((r["model"], "map"), float("nan"))
    header = f"{'model':26s} {'method':14s} {'patients':>8s} {'particles':>9s} {'updates/s':>11s} {'x filterpy':>10s} {'x MAP':>8s} {'compile s':>9s} {'peak MB':>8s}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['model']:26s} {r['method']:14s} {r['patients']:8d} {r['particles']:9d} {r['patient_updates_per_s']:11.1f} "
            f"{r['ratio_to_filterpy']:10.1f} {r['ratio_to_map']:8.1f} {r['compile_s']:9.2f} {r['peak_rss_mb']:8.0f}"
            + (f"   {r['ratio_to_single']:.2f}x one model's time ({len(r['models'])} models)" if "ratio_to_single" in r else "")
        )
    if args.json:
        meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(), "quick": args.quick,
                "readings_per_patient": readings, "huge_page_malloc": not args.default_malloc and huge_page_malloc_available()}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
