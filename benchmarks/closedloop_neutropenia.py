"""Closed-loop docetaxel dosing: grade 4 neutropenia per cycle, policy vs body-surface-area dosing.

    python benchmarks/closedloop_neutropenia.py [--quick] [--misspecified] [--patients N] [--seed S] --json FILE

One seeded run. Virtual patients on docetaxel every 21 days for 4 cycles (1 h infusions at
the start of each cycle); every patient's TRUE parameters are drawn from the population of
``docetaxel_friberg`` (Onoue 2016 PK + Friberg myelosuppression, Kloft 2006 parameters), the model the
controller uses: the well-specified case, or with ``--misspecified`` that population plus
inter-occasion variability the controller does not model: each cycle's CL is the patient's CL
× exp(0.2 z), z ~ N(0, 1) per cycle (assumption; an IOV of the order population analyses of
anticancer drugs commonly report). Body-surface area ~ N(1.8, 0.18) m², clipped to
1.4-2.4 (assumption: adult oncology patients); the model has no BSA effect, in line with BSA
explaining little of docetaxel clearance. Home ANC readings with a point-of-care meter on
days 4, 7, 10 and 14 of each cycle and 2 h before the next cycle's dose (frequent home
monitoring as studied by Netterberg I et al., Cancer Chemother Pharmacol 2017;80:343-353).
Arms, on the same patients and the same meter-noise draws:

(a) ``bsa``: 75 mg/m² every cycle, rounded to 10 mg (TAXOTERE prescribing information:
    75 mg/m² every 3 weeks).
(b) ``label_rule``: as (a), with the label's dose reduction 75 → 60 mg/m² (then 60 → 50)
    after a cycle with neutrophils < 0.5 × 10^9/L, here seen as a home reading < 0.5 (the
    label asks for < 0.5 for more than a week or febrile neutropenia; any reading < 0.5 is
    the cautious reading of it with the same data as (c)).
(c) ``filter``: cycle 1 as (a); from cycle 2 our particle filter (all readings so far)
    chooses the cycle's dose from 40 mg to min(100 mg/m² × BSA, 200 mg) in 10 mg steps,
    maximising

        U(d) = P(0.5 ≤ nadir ≤ 1.5) − λ · P(nadir < 0.5)        (10^9/L, over the cycle)

    (λ = ``--risk-weight``, default 1) over ``--decision-particles`` (32) particles
    systematically resampled from the posterior; ties go to the lower dose. Target: grade 2-3
    neutropenia at nadir and no grade 4 (CTCAE v5.0 grades; neutropenia during treatment is
    associated with better outcomes, e.g. Di Maio M et al., Lancet Oncol 2005;6:669-677,
    which is why the policy does not simply minimise the dose).
(d) ``filter_iov``: as (c), with the controller's model given inter-occasion variability on
    CL (``assimilation.Occasions``, SD 0.2, an occasion per cycle): the filter splits what it
    learns between the patient's lasting CL and the cycle's κ, and the decision draws the
    next cycle's κ afresh from N(0, 0.2²). With ``--misspecified`` this controller knows the
    truth's structure; without it, it assumes IOV that the truth lacks.

Measurement: ANC reading = true ANC × exp(0.1 z), z ~ N(0, 1), rounded to 0.01 (assumption;
the model's residual, 0.2 on the log scale, also covers model error).

Output: per arm and cycle, the fraction of patients whose TRUE nadir (ANC every 2 h) is
grade 4 (< 0.5), in 0.5-1.5, and above 1.5, with 95 % Wilson intervals, the mean dose in
mg/m² (relative dose intensity against 75 mg/m²) and the readings per patient.
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

import dataclasses  # noqa: E402

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from assimilation import Dose, load_model  # noqa: E402
from assimilation.events import Reading  # noqa: E402
from assimilation.online import init, update  # noqa: E402
from assimilation.parameters import prior_mean  # noqa: E402
from assimilation.models.docetaxel_friberg import GRADE_4_ANC  # noqa: E402
from assimilation.occasions import Occasions, with_fresh_kappa  # noqa: E402
from benchmarks.closedloop import resample_indices, run_arms, wilson  # noqa: E402

MODEL = "docetaxel_friberg"
ARMS = ("bsa", "label_rule", "filter", "filter_iov")
CYCLES = 4
CYCLE_H = 504.0
INFUSION_H = 1.0
READ_DAYS = (4, 7, 10, 14)
PRE_CYCLE_H = 2.0  # the pre-cycle reading: 2 h before the next dose
MG_PER_M2, LABEL_STEPS = 75.0, (75.0, 60.0, 50.0)
MAX_MG_PER_M2, STRENGTH, MIN_DOSE, MAX_DOSE = 100.0, 10.0, 40.0, 200.0
LOW, HIGH = GRADE_4_ANC, 1.5
METER_SD = 0.1
TRUTH_SAVE_H = 2.0
DECISION_SAVE_H = 6.0
RISK_WEIGHT = 1.0
CANDIDATES = tuple(float(d) for d in np.arange(MIN_DOSE, MAX_DOSE + 1e-9, STRENGTH))


def reading_times(cycle: int) -> list[float]:
    """Absolute times (h) of the readings that follow the dose of ``cycle`` (0-based)."""
    start = cycle * CYCLE_H
    return [start + 24.0 * d for d in READ_DAYS] + [start + CYCLE_H - PRE_CYCLE_H]


IOV_CL_SD = 0.2  # --misspecified
OCCASION_GAP_H = 168.0  # a dose a week or more after the last opens an occasion: one per cycle


@functools.lru_cache(maxsize=None)
def controller_model(arm: str):
    """The model the arm's filter uses: the library's, or for ``filter_iov`` the same with IOV on CL."""
    model = load_model(MODEL)
    if arm != "filter_iov":
        return model
    return dataclasses.replace(model, name=MODEL + "_iov", occasions=Occasions((("CL", IOV_CL_SD),), gap=OCCASION_GAP_H))


class Cohort(NamedTuple):
    bsa: np.ndarray  # (P,) m²
    truth_log_params: np.ndarray  # (P, CYCLES, p): each cycle's true parameters
    meter_z: np.ndarray  # (P, CYCLES, readings per cycle)
    misspecified: bool = False


def make_cohort(n: int, seed: int, misspecified: bool = False) -> Cohort:
    rng = np.random.default_rng(seed)
    model = load_model(MODEL)
    bsa = np.clip(rng.normal(1.8, 0.18, n), 1.4, 2.4)
    eta = rng.standard_normal((n, len(model.population.names)))
    truth = prior_mean(model.population, {})[None] + eta @ np.asarray(model.population.omega_sqrt()).T
    meter_z = rng.standard_normal((n, CYCLES, len(reading_times(0))))
    kappa = rng.standard_normal((n, CYCLES))  # drawn either way: the same patients in both cases
    per_cycle = np.repeat(truth[:, None, :], CYCLES, axis=1)
    if misspecified:
        per_cycle[:, :, list(model.population.names).index("CL")] += IOV_CL_SD * kappa
    return Cohort(bsa, per_cycle, meter_z, misspecified)


def round_dose(mg: float) -> float:
    return float(STRENGTH * round(mg / STRENGTH))


# ----------------------------------------------------------------------------- dynamics
#
# One cycle = a 1 h infusion at its start, then 503 h without drug: two diffrax solves of the
# model's own vector field per cycle, saving ANC every ``save`` h. The engine's generic dose
# table propagation gives the same states (the filter uses it) but restarts the solver at every
# save point; solving a cycle in one go is what makes a candidate search per patient affordable.


def _solve(model, params, x, t0, t1, rate, ts=None):
    term = diffrax.ODETerm(lambda t, y, r: model.dynamics.vector_field(t, y, params) + r)
    saveat = diffrax.SaveAt(ts=ts) if ts is not None else diffrax.SaveAt(t1=True)
    solution = diffrax.diffeqsolve(term, diffrax.Tsit5(), t0, t1, None, x, rate,
                                   stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-7), max_steps=16384, saveat=saveat)
    return solution.ys


def cycle(model, log_params, x0, dose, save: float, length: float = CYCLE_H):
    """(state at the end, ANC at save, 2·save, …, length) of one cycle from its dose."""
    params = model.parameters(log_params)
    rate = jnp.zeros_like(x0).at[model.dose_compartment].set(dose / INFUSION_H)
    x1 = _solve(model, params, x0, 0.0, INFUSION_H, rate)[-1]
    ts = jnp.arange(1, int(round(length / save)) + 1, dtype=x0.dtype) * save
    ys = _solve(model, params, x1, INFUSION_H, length, jnp.zeros_like(x0), ts=jnp.maximum(ts, INFUSION_H))
    anc = jax.vmap(lambda y: model.analytes[0].predict(params, y))(ys)
    return ys[-1], anc


@functools.lru_cache(maxsize=None)
def _truth_jit(model):
    def one(lp, doses):  # lp (CYCLES, p): the parameters of each cycle
        def step(x, args):
            dose, lp_cycle = args
            x, anc = cycle(model, lp_cycle, x, dose, TRUTH_SAVE_H)
            return x, anc

        _, anc = jax.lax.scan(step, jnp.zeros(model.n_compartments, lp.dtype), (doses, lp))
        return anc  # (CYCLES, T)

    return jax.jit(jax.vmap(one))


def true_anc(model, log_params: np.ndarray, doses: np.ndarray) -> np.ndarray:
    """(P, CYCLES, CYCLE_H / TRUTH_SAVE_H) true ANC at TRUTH_SAVE_H, 2·TRUTH_SAVE_H, … h into each
    cycle; ``log_params`` (P, p) or per cycle (P, CYCLES, p)."""
    if log_params.ndim == 2:
        log_params = np.repeat(log_params[:, None, :], doses.shape[1], axis=1)
    return np.asarray(_truth_jit(model)(jnp.asarray(log_params, jnp.float32), jnp.asarray(doses, jnp.float32)), np.float64)


def baseline(model, log_params: np.ndarray) -> np.ndarray:
    return np.exp(log_params[:, list(model.population.names).index("Circ0")])


@functools.lru_cache(maxsize=None)
def _decide_jit(model, risk_weight: float):
    """Per patient: U(d) for each candidate dose from particles PRE_CYCLE_H before the cycle."""
    candidates = jnp.asarray(CANDIDATES, jnp.float32)

    def one(args):
        log_params, amounts, allowed, key = args
        if model.occasions is not None:  # the cycle is a new occasion: κ drawn afresh at its dose
            next_cycle = with_fresh_kappa(model, log_params, key)
        else:
            next_cycle = log_params

        def particle(lp, lp_next, x):
            x_dose = _solve(model, model.parameters(lp), x, 0.0, PRE_CYCLE_H, jnp.zeros_like(x))[-1]
            return jax.vmap(lambda d: jnp.min(cycle(model, lp_next, x_dose, d, DECISION_SAVE_H)[1]))(candidates)  # (C,)

        nadir = jax.vmap(particle)(log_params, next_cycle, amounts)  # (N, C)
        pta = jnp.mean((nadir >= LOW) & (nadir <= HIGH), axis=0)
        risk = jnp.mean(nadir < LOW, axis=0)
        return jnp.where(allowed, pta - risk_weight * risk, -jnp.inf)

    return jax.jit(lambda lp, x, allowed, keys: jax.lax.map(one, (lp, x, allowed, keys), batch_size=4))


# ----------------------------------------------------------------------------- arms


class ArmResult(NamedTuple):
    anc: np.ndarray  # (P, CYCLES, T) true ANC
    doses: np.ndarray  # (P, CYCLES) mg
    readings: np.ndarray  # (P,)


def _readings(model, cohort: Cohort, doses: np.ndarray, c: int) -> list[list[Reading]]:
    """The home readings after the dose of cycle c (true ANC × meter error)."""
    anc = true_anc(model, cohort.truth_log_params, doses)  # later cycles' doses do not reach back
    out = []
    for i in range(doses.shape[0]):
        rows = []
        for k, t in enumerate(reading_times(c)):
            j = int(round((t - c * CYCLE_H) / TRUTH_SAVE_H)) - 1
            value = max(0.01, round(anc[i, c, j] * math.exp(METER_SD * cohort.meter_z[i, c, k]), 2))
            rows.append(Reading(t, value, "anc", False))
        out.append(rows)
    return out


def run_arm(arm: str, cohort: Cohort, seed: int, n_particles: int, decision_particles: int, log=print) -> ArmResult:
    model = load_model(MODEL)
    P = cohort.bsa.size
    doses = np.array([[round_dose(MG_PER_M2 * b)] * CYCLES for b in cohort.bsa])
    readings = np.zeros(P, int)
    if arm == "bsa":
        return ArmResult(true_anc(model, cohort.truth_log_params, doses), doses, readings)
    level = np.zeros(P, int)  # label_rule: index into LABEL_STEPS
    controller = controller_model(arm)
    posterior = init(controller, [{}] * P, key=seed, n_particles=n_particles) if arm.startswith("filter") else None
    rng = np.random.default_rng(seed + 31)
    allowed = np.array([[MIN_DOSE - 1e-6 <= d <= min(MAX_MG_PER_M2 * b, MAX_DOSE) + 1e-6 for d in CANDIDATES] for b in cohort.bsa])
    for c in range(CYCLES - 1):
        start = time.perf_counter()
        seen = _readings(model, cohort, doses, c)
        readings += len(seen[0])
        if arm == "label_rule":
            for i in range(P):
                if any(r.value < GRADE_4_ANC for r in seen[i]):
                    level[i] = min(level[i] + 1, len(LABEL_STEPS) - 1)
                doses[i, c + 1:] = round_dose(LABEL_STEPS[level[i]] * cohort.bsa[i])
            continue
        events = [[Dose(c * CYCLE_H, float(doses[i, c]), 0, INFUSION_H), *seen[i]] for i in range(P)]
        posterior = update(posterior, events)
        lp = np.asarray(posterior.state.log_params)[:P]
        lw = np.asarray(posterior.state.log_weights)[:P]
        x = np.asarray(posterior.state.amounts)[:P]
        idx = resample_indices(lw, decision_particles, rng)
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed + 97 * (c + 1)), i))(jnp.arange(P))
        utility = np.asarray(_decide_jit(controller, RISK_WEIGHT)(
            jnp.asarray(np.take_along_axis(lp, idx[..., None], 1), jnp.float32),
            jnp.asarray(np.take_along_axis(x, idx[..., None], 1), jnp.float32), jnp.asarray(allowed), keys), np.float64)
        best = np.array([int(np.flatnonzero(u >= u.max() - 1e-6)[0]) for u in utility])
        doses[:, c + 1:] = np.asarray(CANDIDATES)[best][:, None]
        log(f"    {arm} cycle {c + 2}: update + decision {time.perf_counter() - start:.1f} s, "
            f"median dose {np.median(doses[:, c + 1] / cohort.bsa):.0f} mg/m2")
    readings += len(reading_times(0))  # the last cycle's readings are taken too (not acted on here)
    return ArmResult(true_anc(model, cohort.truth_log_params, doses), doses, readings)


# ----------------------------------------------------------------------------- report


def rows_of(arm: str, result: ArmResult, cohort: Cohort, seed: int) -> list[dict]:
    rows = []
    P = result.anc.shape[0]
    for c in range(CYCLES):
        nadir = result.anc[:, c].min(axis=1)
        row = {"arm": arm, "truth_model": MODEL + ("+iov-cl" if cohort.misspecified else ""), "controller_model": controller_model(arm).name,
               "misspecified": cohort.misspecified, "cycle": c + 1, "patients": P}
        for key, hit in (("grade4", nadir < LOW), ("in_target", (nadir >= LOW) & (nadir <= HIGH)), ("nadir_above_1_5", nadir > HIGH)):
            k = int(np.sum(hit))
            row[key], row[key + "_ci95"] = k / P, list(wilson(k, P))
        row["median_nadir"] = float(np.median(nadir))
        row["mean_dose_mg_per_m2"] = float(np.mean(result.doses[:, c] / cohort.bsa))
        row["relative_dose_intensity"] = row["mean_dose_mg_per_m2"] / MG_PER_M2
        row["readings_per_patient"] = float(np.mean(result.readings))
        row["seed"] = seed
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'arm':<11} {'cycle':>5} {'grade 4 (95% CI)':>22} {'nadir 0.5-1.5 (95% CI)':>24} {'nadir>1.5':>10} "
          f"{'median nadir':>13} {'mg/m2':>6} {'readings':>9}")
    for r in rows:
        cell = lambda k: f"{100 * r[k]:5.1f}% [{100 * r[k + '_ci95'][0]:4.1f},{100 * r[k + '_ci95'][1]:5.1f}]"
        print(f"{r['arm']:<11} {r['cycle']:>5} {cell('grade4'):>22} {cell('in_target'):>24} {100 * r['nadir_above_1_5']:9.1f}% "
              f"{r['median_nadir']:13.2f} {r['mean_dose_mg_per_m2']:6.1f} {r['readings_per_patient']:9.1f}")


def main(argv=None) -> list[dict]:
    global RISK_WEIGHT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 patients (unless --patients), 100 particles")
    parser.add_argument("--patients", type=int, default=None, help="default 120")
    parser.add_argument("--particles", type=int, default=None, help="filter particles (default 200, --quick 100)")
    parser.add_argument("--decision-particles", type=int, default=32)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--risk-weight", type=float, default=RISK_WEIGHT, help="lambda in P(in 0.5-1.5) - lambda P(nadir < 0.5)")
    parser.add_argument("--misspecified", action="store_true", help="truth with inter-occasion variability on CL")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    RISK_WEIGHT = args.risk_weight
    patients = args.patients or (30 if args.quick else 120)
    particles = args.particles or (100 if args.quick else 200)
    cohort = make_cohort(patients, args.seed, args.misspecified)
    log = lambda line: print(line, flush=True)
    return run_arms(args.arms, lambda arm: run_arm(arm, cohort, args.seed, particles, args.decision_particles, log=log),
                    lambda arm, result: rows_of(arm, result, cohort, args.seed), print_table,
                    f"{patients} patients, seed {args.seed}, model {MODEL}{' (misspecified truth)' if args.misspecified else ''}, "
                    f"{particles} particles", args.json, particles=particles, risk_weight=RISK_WEIGHT)


if __name__ == "__main__":
    main()
