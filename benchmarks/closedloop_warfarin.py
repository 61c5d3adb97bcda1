"""Closed-loop warfarin initiation: time in INR range 2-3 over the first 28 days.

    python benchmarks/closedloop_warfarin.py [--quick] [--misspecified] [--patients N] [--seed S] --json FILE

One seeded run. Virtual outpatients starting warfarin (covariates from
device_simulators.covariates.sample_ward_patient: age, CYP2C9 and VKORC1 genotypes at the
CPIC allele frequencies); every patient's TRUE parameters are drawn from the Hamberg 2007
population (``warfarin_hamberg``, the model the controller uses: the well-specified case) or,
with ``--misspecified``, from that population with between-patient variability the
controller does not know of: log-normal SD 0.2 on ka, Q, γ and λ (which the model fixes)
and SD 0.05 on the untreated INR (assumption: a plausible spread of what Hamberg fixed).
Doses once a day at 24 k h (k = 0 … 27); home INR readings with a point-of-care meter on
days 3, 5, 7, 10, 14 and 21, 6 h before that day's dose. Arms, on the same patients and the
same meter-noise draws:

(a) ``fixed``: 5 mg a day, never adjusted ("one dose fits all"; 5 mg is a usual starting
    dose, Holbrook A et al., Chest 2012;141(2 Suppl):e152S-e184S, ACCP 9th ed.).
(b) ``nomogram``: 5 mg a day, then at each reading the daily dose is changed in proportion:
    INR < 1.5 +20 %, 1.5-2.0 +10 %, 2.0-3.0 unchanged, 3.0-3.5 −10 %, 3.5-4.0 −15 %,
    > 4.0 the next dose held and −20 %, rounded to 0.5 mg. A rule of the kind anticoagulation
    clinics use, with the same readings as (c); the percentages are this benchmark's
    assumption, not a published protocol.
(c) ``filter``: our particle filter (prior from the genotypes and age, Hamberg 2007) with the
    same readings; at t = 0 and after each reading it chooses the daily dose (0-15 mg in
    0.5 mg steps, 0 = hold) to give until the next reading, maximising

        U(d) = E[TTR over the next 7 days] − λ · P(max INR over the next 7 days > 4)

    (λ = ``--risk-weight``, default 1) over ``--decision-particles`` (64) particles
    systematically resampled from its posterior, the candidate dose held for the 7 days;
    ties go to the lower dose.

Measurement: INR reading = true INR × exp(0.05 z), z ~ N(0, 1), rounded to 0.1 (a home INR
meter's error; assumption — the model's residual, 0.10 on the log scale, also covers model
error).

Output: per arm and window (days 0-28, 7-28, 14-28), the mean time in range 2-3 (Rosendaal
linear interpolation on the true INR every hour) with a 95 % t interval over patients, the
fractions of patients with TTR >= 60 %, with any true INR > 4 and > 5 (Wilson intervals),
the mean time above 3 and below 2, and readings per patient.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from assimilation import Dose, load_model  # noqa: E402
from assimilation.events import Reading  # noqa: E402
from assimilation.online import init, update  # noqa: E402
from assimilation.parameters import prior_mean  # noqa: E402
from assimilation.models import exposure  # noqa: E402
from benchmarks.closedloop import resample_indices, run_arms, wilson  # noqa: E402
from device_simulators.covariates import sample_ward_patient  # noqa: E402

MODEL = "warfarin_hamberg"
ARMS = ("fixed", "nomogram", "filter")
DAYS = 28
READ_DAYS = (3, 5, 7, 10, 14, 21)
READ_BEFORE_DOSE = 6.0  # h: the reading is taken 6 h before that day's dose
LOW, HIGH, DANGER = 2.0, 3.0, 4.0
START_DOSE = 5.0
DOSES = tuple(0.5 * k for k in range(31))  # 0-15 mg, tablets and half tablets
LOOKAHEAD_DAYS = 7
SAVE_PER_DAY = 4  # decision grid: every 6 h
METER_SD = 0.05
WINDOWS = ((0, 28), (7, 28), (14, 28))
RISK_WEIGHT = 1.0


EXTRA_SD = {"ka": 0.2, "Q": 0.2, "gamma": 0.2, "lambda": 0.2, "base": 0.05}  # --misspecified


class Cohort(NamedTuple):
    covariates: list
    truth_log_params: np.ndarray  # (P, p)
    meter_z: np.ndarray  # (P, len(READ_DAYS))
    misspecified: bool = False


def make_cohort(n: int, seed: int, misspecified: bool = False) -> Cohort:
    rng = np.random.default_rng(seed)
    model = load_model(MODEL)
    covariates = []
    for _ in range(n):
        c = sample_ward_patient(rng)
        covariates.append({"CYP2C9": c["CYP2C9"], "VKORC1": c["VKORC1"], "AGE": c["AGE"]})
    means = np.stack([prior_mean(model.population, c) for c in covariates])
    eta = rng.standard_normal((n, len(model.population.names)))
    truth = means + eta @ np.asarray(model.population.omega_sqrt()).T
    meter_z = rng.standard_normal((n, len(READ_DAYS)))
    extra = rng.standard_normal((n, len(EXTRA_SD)))  # drawn either way: the same patients in both cases
    if misspecified:
        for k, (name, sd) in enumerate(EXTRA_SD.items()):
            truth[:, list(model.population.names).index(name)] += sd * extra[:, k]
    return Cohort(covariates, truth, meter_z, misspecified)


# ----------------------------------------------------------------------------- dynamics
#
# Doses are once a day at whole days, so a trajectory is a scan over days: the day's dose
# goes into the depot (times the model's bioavailability), then the model's own vector
# field is integrated over 24 h, saving every 24/k h. Integrating day by day (rather than
# through the engine's dose-table propagation, which re-scans every dose at every save
# point) is what makes thousands of candidate trajectories per decision affordable.


def _day(model, params, x, dose, saves: int, rtol: float):
    """Add ``dose`` mg at the start of the day, integrate 24 h; states at the ``saves`` save
    points (24/saves h apart, the last at 24 h)."""
    f, _ = model.dose_attributes(params, x.dtype)  # bioavailability per compartment (the lag is 0 here)
    x = x.at[model.dose_compartment].add(f[model.dose_compartment] * dose)
    ts = jnp.arange(1, saves + 1, dtype=x.dtype) * (24.0 / saves)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, _: model.dynamics.vector_field(t, y, params)), diffrax.Tsit5(), 0.0, 24.0, None, x, None,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol * 1e-3), max_steps=4096, saveat=diffrax.SaveAt(ts=ts))
    return solution.ys[-1], solution.ys


def trajectory(model, log_params, x0, daily_doses, saves: int, rtol: float = 1e-5):
    """INR at ``saves`` points a day for each day of ``daily_doses`` (D,) -> (D · saves,)."""
    params = model.parameters(log_params)
    inr = model.analytes[0].predict

    def step(x, dose):
        x, ys = _day(model, params, x, dose, saves, rtol)
        return x, jax.vmap(lambda y: inr(params, y))(ys)

    _, values = jax.lax.scan(step, x0, daily_doses)
    return values.reshape(-1)


@functools.lru_cache(maxsize=None)
def _truth_jit(model, saves: int):
    def one(lp, doses):
        x0 = jnp.zeros(model.n_compartments, lp.dtype)
        return jnp.concatenate([model.analytes[0].predict(model.parameters(lp), x0)[None], trajectory(model, lp, x0, doses, saves)])

    return jax.jit(jax.vmap(one))


def true_inr(model, log_params: np.ndarray, daily_doses: np.ndarray, saves: int = 24) -> np.ndarray:
    """(P, days · saves + 1) true INR from t = 0, every 24/saves h."""
    return np.asarray(_truth_jit(model, saves)(jnp.asarray(log_params, jnp.float32), jnp.asarray(daily_doses, jnp.float32)), np.float64)


@functools.lru_cache(maxsize=None)
def _decide_jit(model, lead: float, risk_weight: float):
    """Per patient: U(d) for every candidate daily dose, from particles at the decision time
    (``lead`` h before the next dose) held for LOOKAHEAD_DAYS."""
    candidates = jnp.asarray(DOSES, jnp.float32)
    saves = SAVE_PER_DAY

    def one(args):
        log_params, amounts = args  # (N, p), (N, n) at the decision time

        def particle(lp, x):
            params = model.parameters(lp)
            # carry the particle from the decision time to the next dose (no dose in between)
            x_dose = x if lead == 0 else diffrax.diffeqsolve(
                diffrax.ODETerm(lambda t, y, _: model.dynamics.vector_field(t, y, params)), diffrax.Tsit5(), 0.0, lead, None, x, None,
                stepsize_controller=diffrax.PIDController(rtol=1e-4, atol=1e-7), max_steps=4096).ys[-1]
            days = jnp.ones((LOOKAHEAD_DAYS,), jnp.float32)
            return jax.vmap(lambda d: trajectory(model, lp, x_dose, d * days, saves, rtol=1e-4))(candidates)  # (C, T)

        inr = jax.vmap(particle)(log_params, amounts)  # (N, C, T)
        times = jnp.arange(1, LOOKAHEAD_DAYS * saves + 1, dtype=jnp.float32) * (24.0 / saves)
        ttr = exposure.fraction_of_time_in_range(times, inr, LOW, HIGH, times[0], times[-1])  # (N, C)
        danger = jnp.max(inr, axis=-1) > DANGER
        return jnp.mean(ttr, axis=0) - risk_weight * jnp.mean(danger, axis=0)

    return jax.jit(lambda lp, x: jax.lax.map(one, (lp, x), batch_size=4))


# ----------------------------------------------------------------------------- arms


def meter_reading(true_value: float, z: float) -> float:
    return round(true_value * math.exp(METER_SD * z), 1)


def reading_time(day: int) -> float:
    return 24.0 * day - READ_BEFORE_DOSE


def nomogram(dose: float, inr: float) -> tuple[float, bool]:
    """(new daily dose, hold the next dose)."""
    for upper, factor in ((1.5, 1.20), (2.0, 1.10), (3.0, 1.0), (3.5, 0.90), (4.0, 0.85)):
        if inr < upper or (upper == 3.0 and inr <= 3.0):
            return max(0.5, round(dose * factor * 2) / 2), False
    return max(0.5, round(dose * 0.80 * 2) / 2), True


class ArmResult(NamedTuple):
    inr: np.ndarray  # (P, 24 · DAYS + 1) true INR, hourly
    doses: np.ndarray  # (P, DAYS) mg
    readings: np.ndarray  # (P,)


def run_arm(arm: str, cohort: Cohort, seed: int, n_particles: int, decision_particles: int, log=print) -> ArmResult:
    model = load_model(MODEL)
    P = len(cohort.covariates)
    doses = np.full((P, DAYS), START_DOSE)
    readings = np.zeros(P, int)
    if arm == "fixed":
        return ArmResult(true_inr(model, cohort.truth_log_params, doses), doses, readings)

    posterior = None
    rng = np.random.default_rng(seed + 29)
    if arm == "filter":
        posterior = init(model, list(cohort.covariates), key=seed, n_particles=n_particles)
    given_until = 0  # doses [0, given_until) are fixed
    for r, day in enumerate((0, *READ_DAYS)):
        if day > 0:
            inr = true_inr(model, cohort.truth_log_params, doses, saves=4)  # every 6 h; later doses do not reach back
            index = int(round(reading_time(day) / 6.0))
            values = [meter_reading(inr[i, index], cohort.meter_z[i, r - 1]) for i in range(P)]
            readings += 1
        if arm == "nomogram":
            if day > 0:
                for i in range(P):
                    new, hold = nomogram(doses[i, day - 1], values[i])
                    doses[i, day:] = new
                    if hold:
                        doses[i, day] = 0.0
            continue
        events = [[Dose(24.0 * k, float(doses[i, k]), 0, 0.0) for k in range(given_until, day)] for i in range(P)]
        if day > 0:
            for i in range(P):
                events[i].append(Reading(reading_time(day), values[i], "inr", False))
        start = time.perf_counter()
        if any(events):
            posterior = update(posterior, events)
        lp = np.asarray(posterior.state.log_params)[:P]
        lw = np.asarray(posterior.state.log_weights)[:P]
        x = np.asarray(posterior.state.amounts)[:P]
        idx = resample_indices(lw, decision_particles, rng)
        lead = READ_BEFORE_DOSE if day > 0 else 0.0
        utility = np.asarray(_decide_jit(model, lead, RISK_WEIGHT)(
            jnp.asarray(np.take_along_axis(lp, idx[..., None], 1), jnp.float32),
            jnp.asarray(np.take_along_axis(x, idx[..., None], 1), jnp.float32)), np.float64)
        best = np.array([int(np.flatnonzero(u >= u.max() - 1e-6)[0]) for u in utility])  # lowest dose among the best
        doses[:, day:] = np.asarray(DOSES)[best][:, None]
        given_until = day
        log(f"    {arm} day {day}: update + decision {time.perf_counter() - start:.1f} s, median dose {np.median(doses[:, day]):g} mg")
    return ArmResult(true_inr(model, cohort.truth_log_params, doses), doses, readings)


# ----------------------------------------------------------------------------- report


def rows_of(arm: str, result: ArmResult, seed: int, misspecified: bool = False) -> list[dict]:
    hours = np.arange(result.inr.shape[1], dtype=np.float32)
    inr = result.inr.astype(np.float32)
    rows = []
    P = result.inr.shape[0]
    for first, last in WINDOWS:
        a, b = 24.0 * first, 24.0 * last
        ttr = np.asarray(exposure.fraction_of_time_in_range(hours, inr, LOW, HIGH, a, b), np.float64)
        above3 = 1.0 - np.asarray(exposure.fraction_of_time_in_range(hours, inr, -1.0, HIGH, a, b), np.float64)
        below2 = 1.0 - np.asarray(exposure.fraction_of_time_in_range(hours, inr, LOW, 1e9, a, b), np.float64)
        segment = result.inr[:, int(a): int(b) + 1]
        mean, sd = float(np.mean(ttr)), float(np.std(ttr, ddof=1)) if P > 1 else 0.0
        half = 1.96 * sd / math.sqrt(P)
        row = {"arm": arm, "truth_model": MODEL + ("+extra-iiv" if misspecified else ""), "controller_model": MODEL,
               "misspecified": misspecified,
               "window_days": [first, last], "patients": P, "ttr_mean": mean, "ttr_ci95": [mean - half, mean + half],
               "time_above_3": float(np.mean(above3)), "time_below_2": float(np.mean(below2))}
        for key, hit in (("ttr_ge_60", ttr >= 0.6), ("any_inr_above_4", segment.max(axis=1) > 4.0),
                         ("any_inr_above_5", segment.max(axis=1) > 5.0)):
            k = int(np.sum(hit))
            row[key], row[key + "_ci95"] = k / P, list(wilson(k, P))
        row["readings_per_patient"] = float(np.mean(result.readings))
        row["mean_daily_dose_mg"] = float(np.mean(result.doses[:, first:last]))
        row["seed"] = seed
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'arm':<10} {'days':>6} {'TTR mean (95% CI)':>22} {'TTR>=60%':>9} {'>3':>6} {'<2':>6} {'INR>4 ever':>11} "
          f"{'INR>5 ever':>11} {'readings':>9} {'mg/day':>7}")
    for r in rows:
        w = f"{r['window_days'][0]}-{r['window_days'][1]}"
        ci = r["ttr_ci95"]
        print(f"{r['arm']:<10} {w:>6} {100 * r['ttr_mean']:6.1f}% [{100 * ci[0]:4.1f},{100 * ci[1]:5.1f}] {100 * r['ttr_ge_60']:8.1f}% "
              f"{100 * r['time_above_3']:5.1f}% {100 * r['time_below_2']:5.1f}% {100 * r['any_inr_above_4']:10.1f}% "
              f"{100 * r['any_inr_above_5']:10.1f}% {r['readings_per_patient']:9.1f} {r['mean_daily_dose_mg']:7.2f}")


def main(argv=None) -> list[dict]:
    global RISK_WEIGHT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 patients (unless --patients), 300 particles")
    parser.add_argument("--patients", type=int, default=None, help="default 200")
    parser.add_argument("--particles", type=int, default=None, help="filter particles (default 500, --quick 300)")
    parser.add_argument("--decision-particles", type=int, default=64)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--risk-weight", type=float, default=RISK_WEIGHT, help="lambda in E[TTR] - lambda P(INR > 4)")
    parser.add_argument("--misspecified", action="store_true", help="truth with variability the controller does not model")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    RISK_WEIGHT = args.risk_weight
    patients = args.patients or (60 if args.quick else 200)
    particles = args.particles or (300 if args.quick else 500)
    cohort = make_cohort(patients, args.seed, args.misspecified)
    log = lambda line: print(line, flush=True)
    return run_arms(args.arms, lambda arm: run_arm(arm, cohort, args.seed, particles, args.decision_particles, log=log),
                    lambda arm, result: rows_of(arm, result, args.seed, args.misspecified), print_table,
                    f"{patients} patients, seed {args.seed}, model {MODEL}{' (misspecified truth)' if args.misspecified else ''}, "
                    f"{particles} particles", args.json, particles=particles, risk_weight=RISK_WEIGHT)


if __name__ == "__main__":
    main()
