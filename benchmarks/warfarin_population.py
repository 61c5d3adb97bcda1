"""The warfarin model against its paper: Table 5, the spread of maintenance doses, a prior check.

    python benchmarks/warfarin_population.py [--draws N] [--seed S]

Three checks of ``assimilation/models/warfarin_hamberg.py`` (Hamberg 2007), printed as tables:

1. **Table 5** (racemic mg/day for a steady-state INR of 2.5, 18 genotypes x 3 ages, as
   transcribed by nlmixr2lib): the model's INR at the average steady-state concentration
   for each of the 54 doses, with the library's rules and with the two rules the public
   transcriptions also use (age effect only above 71 years; F = 0.9).
2. **Spread of the dose needed for INR 2.5** in a cohort with the paper's genotype mix
   (Table 1 as transcribed: CYP2C9 *1/*1 58.7 %, *1/*2 17.3, *1/*3 16.7, *2/*2 3.3, *2/*3 2.7,
   *3/*3 1.3; VKORC1 G/G 39 %, G/A 41, A/A 20) under three readings of the published
   between-subject variability (ω = CV, the library; ω² = ln(1 + CV²), nlmixr2lib; ω² = the
   printed figure / 100, Ravvaz's code), against the paper's cohort: 150 patients on
   6.25-78.75 mg/week (a 12.6-fold range). Ages: normal(68, 12) clipped to 22-87 years
   (assumption; the paper gives median 71, range 22-87). Only CL and EC50 matter at steady
   state.
3. **Prior predictive INR**: 5 mg/day for 60 days in *1/*1, G/A patients of 60 years, true
   parameters drawn from the library's prior, solved by the engine (ODE): INR percentiles on
   day 60, P(2 <= INR <= 3), P(INR > 4).

The steady-state relations (`warfarin_hamberg.inr_at_constant_concentration`, checked against
the ODE in tests/models/test_warfarin_hamberg.py): Css = F · dose/2 / (CL · 24 h); every
transit state at 1 − E(Css); INR = 1 + 20 (1 − (1 − E)²)^λ, inverted by `dose_for_inr`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from assimilation import Dose, load_model  # noqa: E402
from assimilation.models import warfarin_hamberg as wf  # noqa: E402
from assimilation.parameters import prior_mean  # noqa: E402
from assimilation.simulate import amounts_at, dose_table_of, predict_readings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CYP2C9_MIX = {"*1/*1": 0.587, "*1/*2": 0.173, "*1/*3": 0.167, "*2/*2": 0.033, "*2/*3": 0.027, "*3/*3": 0.013}
VKORC1_MIX = {"G/G": 0.39, "G/A": 0.41, "A/A": 0.20}
PAPER_RANGE = 78.75 / 6.25


def typical(covariates: dict, name: str) -> float:
    population = wf.population
    return float(np.exp(prior_mean(population, covariates)[population.index(name)]))


def steady_state_inr(cl, ec50, dose_mg, f=1.0):
    """INR at the average steady-state concentration of `dose_mg` racemic a day."""
    p = {**dict(zip(wf.NAMES, wf.population.typical)), "CL": cl, "EC50": ec50}
    return float(wf.inr_at_constant_concentration(p, f * wf.S_FRACTION * dose_mg / (cl * 24.0)))


def dose_for_inr(cl, ec50, inr=2.5):
    """Racemic mg/day whose average steady-state concentration gives `inr` (F = 1)."""
    p = dict(zip(wf.NAMES, wf.population.typical))
    effect = 1.0 - np.sqrt(1.0 - ((inr - p["base"]) / p["INRmax"]) ** (1.0 / p["lambda"]))
    css = ec50 * (effect / (1.0 - effect)) ** (1.0 / p["gamma"])
    return css * cl * 24.0 / wf.S_FRACTION


def table_5() -> None:
    print("1. Hamberg 2007 Table 5: model INR at the average steady-state concentration of each published dose")
    print(f"{'rule':<34} {'min':>6} {'mean':>6} {'max':>6} {'cells within 3 %':>17}")
    rules = {
        "library (age both sides, F = 1)": lambda c, age: (typical(c, "CL"), 1.0),
        "age effect only above 71 years": lambda c, age: (typical({**c, "AGE": max(age, 71.0)}, "CL"), 1.0),
        "F = 0.9": lambda c, age: (typical(c, "CL"), 0.9),
    }
    for label, rule in rules.items():
        inrs = []
        for (cyp, vkorc1), doses in wf.TABLE_5.items():
            for age, dose in zip(wf.TABLE_5_AGES, doses):
                covariates = {"CYP2C9": cyp, "VKORC1": vkorc1, "AGE": age}
                cl, f = rule(covariates, age)
                inrs.append(steady_state_inr(cl, typical(covariates, "EC50"), dose, f))
        inrs = np.array(inrs)
        print(f"{label:<34} {inrs.min():>6.3f} {inrs.mean():>6.3f} {inrs.max():>6.3f} "
              f"{np.sum(np.abs(inrs - 2.5) <= 0.075):>13} / 54")


def dose_spread(rng: np.random.Generator, cohorts: int = 2000, size: int = 150) -> None:
    print(f"\n2. Dose for INR 2.5 in cohorts of {size} with the paper's genotype mix ({cohorts} cohorts; "
          f"the paper's cohort: {PAPER_RANGE:.1f}-fold range)")
    readings = {
        "omega = CV (library)": {k: v**2 for k, v in wf.IIV_CV.items()},
        "omega^2 = ln(1 + CV^2) (nlmixr2lib)": {k: np.log1p(v**2) for k, v in wf.IIV_CV.items()},
        "omega^2 = CV (Ravvaz code)": dict(wf.IIV_CV),
    }
    print(f"{'IIV reading':<38} {'omega^2 CL':>10} {'omega^2 EC50':>12} {'log-SD dose':>12} {'max/min (5-95 %)':>22}")
    # Typical CL and EC50 per genotype at 71 years (the age reference), times the age effect.
    cl_71 = np.array([typical({"CYP2C9": c, "VKORC1": "G/G", "AGE": 71.0}, "CL") for c in CYP2C9_MIX])
    ec50_typ = np.array([typical({"CYP2C9": "*1/*1", "VKORC1": v, "AGE": 71.0}, "EC50") for v in VKORC1_MIX])
    age_effect = next(e for e in wf.population.effects if e.covariate == "AGE")
    for label, variance in readings.items():
        sds, ratios = [], []
        for _ in range(cohorts):
            cyp = rng.choice(len(CYP2C9_MIX), size, p=list(CYP2C9_MIX.values()))
            vkorc1 = rng.choice(len(VKORC1_MIX), size, p=list(VKORC1_MIX.values()))
            age = np.clip(rng.normal(68.0, 12.0, size), 22.0, 87.0)
            cl = cl_71[cyp] * np.exp([age_effect.log_effect(a) for a in age])
            ec50 = ec50_typ[vkorc1]
            cl = cl * np.exp(rng.normal(0.0, np.sqrt(variance["CL"]), size))
            ec50 = ec50 * np.exp(rng.normal(0.0, np.sqrt(variance["EC50"]), size))
            dose = dose_for_inr(cl, ec50)
            sds.append(np.log(dose).std())
            ratios.append(dose.max() / dose.min())
        lo, mid, hi = np.percentile(ratios, [5, 50, 95])
        print(f"{label:<38} {variance['CL']:>10.4f} {variance['EC50']:>12.4f} {np.median(sds):>12.2f} "
              f"{mid:>8.0f} ({lo:.0f}-{hi:.0f})")


def prior_predictive(draws: int, seed: int) -> None:
    model = load_model(ROOT / "assimilation" / "models" / "warfarin_hamberg.py")
    covariates = {"CYP2C9": "*1/*1", "VKORC1": "G/A", "AGE": 60.0}
    mean = jnp.asarray(prior_mean(model.population, covariates), jnp.float32)
    root = jnp.asarray(model.population.omega_sqrt(), jnp.float32)
    eta = jax.random.normal(jax.random.PRNGKey(seed), (draws, len(mean))) @ root.T
    table = dose_table_of(model, [Dose(24.0 * day, 5.0, "depot") for day in range(60)])
    times = jnp.asarray([24.0 * 60])

    @jax.jit
    @jax.vmap
    def inr_on_day_60(log_params):
        amounts = amounts_at(model, log_params, table, times)[-1]
        return predict_readings(model, model.parameters(log_params), amounts)[0]

    inr = np.asarray(inr_on_day_60(mean + eta))
    q05, q50, q95 = np.percentile(inr, [5, 50, 95])
    print(f"\n3. 5 mg/day, *1/*1, G/A, 60 years, {draws} prior draws: INR on day 60 "
          f"{q05:.2f} / {q50:.2f} / {q95:.2f} (5 / 50 / 95 %); in 2-3 {np.mean((inr >= 2) & (inr <= 3)):.0%}, "
          f"above 4 {np.mean(inr > 4):.0%}; typical patient {steady_state_inr(typical(covariates, 'CL'), typical(covariates, 'EC50'), 5.0):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=500, help="prior draws for check 3")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    table_5()
    dose_spread(np.random.default_rng(args.seed))
    prior_predictive(args.draws, args.seed)


if __name__ == "__main__":
    main()
