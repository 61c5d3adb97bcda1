"""Warfarin: Hamberg et al. (2007) S-warfarin PK / INR model with CYP2C9, VKORC1 and age.

Source: Hamberg AK, Dahl ML, Barban M, Scordo MG, Wadelius M, Pengo V, Padrini R, Jonsson EN.
A PK-PD model for predicting the impact of age, CYP2C9, and VKORC1 genotype on
individualization of warfarin therapy. Clin Pharmacol Ther 2007;81(4):529-538 (final-model
parameter table). The values below are quoted as transcribed in the public simulation code of
Ravvaz K et al., Personalized warfarin dosing in patients using clinical pharmacology
(Circ Cardiovasc Genet 2017), which implements Hamberg 2007; verify against the publication.

Two public transcriptions agree on every typical value below (PK Table 2, PD Table 4) but
disagree on two points this file cannot settle without the paper:

* **IIV scale.** The Ravvaz lineage (also the ``reil`` package's ``HambergPKPD``) uses the
  table's figures as variances of the log (ω² = 0.31 on CL, SD 0.56); nlmixr2lib's
  ``Hamberg_2007_warfarin_s`` reads them as CV % and converts, ω² = ln(1 + CV²) (0.0917 on
  CL, 0.0664 V1, 0.6845 V2, 0.0197 MTT1, 0.7253 MTT2, 0.1551 EC50). This file follows the
  Ravvaz reading: the prior is the wider of the two, which costs early precision but does
  not make the filter overconfident if the narrower reading is the right one.
* **Fast chain rate.** The Ravvaz code sets ktr1 = 6/MTT1 (its comment: "changed from
  1/MTT_1"); nlmixr2lib writes the paper's formula as ktr1 = 1/MTT1 (11.6 h per
  compartment, ~70 h through the chain). This file follows Ravvaz (11.6 h through the
  chain). Steady-state INR does not depend on it; the speed of the INR response does.

The ``reil`` code also assumes F = 0.9 for the racemate; this file assumes complete
absorption (``S_FRACTION``).

Structure (time h; dose = racemic warfarin in mg, of which half is S-warfarin)::

    depot → central ⇄ peripheral, ka = 2 /h, F = 0.5 (S-fraction; complete absorption assumed)
    C   = A_central / V1 (mg/L S-warfarin)
    E   = C^γ / (EC50^γ + C^γ)          (Emax = 1: inhibition of clotting-factor synthesis)
    chain 1: 6 transit compartments, ktr1 = 6/MTT1; chain 2: 1 compartment, ktr2 = 1/MTT2
    dA1/dt = ktr1 (1 − E − A1), dAi/dt = ktr1 (A(i−1) − Ai) (i = 2..6), dA7/dt = ktr2 (1 − E − A7)
    INR = base + INRmax · (1 − A6 · A7)^λ

The engine starts states at zero, so the transit states are stored as inhibitions
Bi = 1 − Ai (zero = untreated steady state, Ai = 1).

Covariates: ``CYP2C9`` genotype string ("*1/*1", "*1/*2", "*1/*3", "*2/*2", "*2/*3",
"*3/*3"), ``VKORC1`` −1639 G>A genotype ("G/G", "G/A" or "A/G", "A/A"), ``AGE`` (years).

| parameter | typical | unit | IIV ω² | source |
|---|---|---|---|---|
| CL (*1/*1, ≤ 71 y) | 0.314 | L/h | 0.31 | Hamberg 2007 |
| CL reduction *1/*2, *1/*3, *2/*2, *2/*3, *3/*3 | 31.5, 45.3, 72.2, 69.0, 85.2 | % | | Hamberg 2007 |
| CL age effect | −0.91 % per year above 71 | | | Hamberg 2007 |
| V1 | 13.8 | L | 0.262 | Hamberg 2007 |
| Q | 0.131 | L/h | — | Hamberg 2007 |
| V2 | 6.59 | L | 0.991 | Hamberg 2007 |
| ka | 2 (fixed) | 1/h | — | Hamberg 2007 |
| EC50 VKORC1 G/G, G/A, A/A | 4.61, 3.02, 2.20 | mg/L | 0.409 | Hamberg 2007 |
| γ | 0.424 | – | — | Hamberg 2007 |
| MTT1 (6 compartments) | 11.6 | h | 0.141 | Hamberg 2007 |
| MTT2 (1 compartment) | 120 | h | 1.02 | Hamberg 2007 |
| λ | 3.61 | – | — | Hamberg 2007 |
| INRmax, base INR | 20, 1 | – | — | Hamberg 2007 |
| INR residual | 0.10 on the log scale | | | assumption: point-of-care meter error; the Ravvaz transcription uses 0.0325 |

Target: INR 2-3 (e.g. Ageno W et al., Oral anticoagulant therapy, ACCP guidelines 9th ed.,
Chest 2012;141(2 Suppl):e44S-e88S); metrics: time in therapeutic range (Rosendaal) and
P(INR > 4).
"""

import jax.numpy as jnp
import numpy as np

from assimilation import Analyte, CategoricalEffect, LogNormal, Model, OdeCompartments, Population
from assimilation.models import exposure
from assimilation.models.covariate_effects import LinearEffect

DRUG = "warfarin"
S_FRACTION = 0.5
"""Racemic warfarin is half S-warfarin; absorption is assumed complete (verify)."""

CYP2C9_CL_FACTORS = (("*1/*1", 1.0), ("*1/*2", 1 - 0.315), ("*1/*3", 1 - 0.453), ("*2/*2", 1 - 0.722), ("*2/*3", 1 - 0.690), ("*3/*3", 1 - 0.852))
VKORC1_EC50_FACTORS = (("G/G", 1.0), ("G/A", 3.02 / 4.61), ("A/G", 3.02 / 4.61), ("A/A", 2.20 / 4.61))

population = Population(
    names=("ka", "CL", "V1", "Q", "V2", "EC50", "gamma", "MTT1", "MTT2", "lambda", "INRmax", "base"),
    typical=np.array([2.0, 0.314, 13.8, 0.131, 6.59, 4.61, 0.424, 11.6, 120.0, 3.61, 20.0, 1.0]),
    omega=np.diag([0.0, 0.31, 0.262, 0.0, 0.991, 0.409, 0.0, 0.141, 1.02, 0.0, 0.0, 0.0]),
    effects=(
        CategoricalEffect("CL", "CYP2C9", CYP2C9_CL_FACTORS),
        LinearEffect("CL", "AGE", 71.0, -0.0091, only_above=True),
        CategoricalEffect("EC50", "VKORC1", VKORC1_EC50_FACTORS),
    ),
)

N_CHAIN1 = 6


def concentration(p, x):
    """S-warfarin plasma concentration, mg/L."""
    return jnp.maximum(x[1], 0.0) / p["V1"]


def inhibition(p, c):
    """E = C^γ / (EC50^γ + C^γ). C^γ is written so that its gradient at C = 0 (before the
    first dose) is 0, not ∞ · 0 = NaN, for gradient-based estimators (MAP)."""
    positive = c > 1e-12
    cg = jnp.where(positive, jnp.where(positive, c, 1.0) ** p["gamma"], 0.0)
    return cg / (p["EC50"] ** p["gamma"] + cg)


def vector_field(t, x, p):
    depot, central, peripheral = x[0], x[1], x[2]
    chain1, chain2 = x[3 : 3 + N_CHAIN1], x[3 + N_CHAIN1]
    k10, k12, k21 = p["CL"] / p["V1"], p["Q"] / p["V1"], p["Q"] / p["V2"]
    ktr1, ktr2 = N_CHAIN1 / p["MTT1"], 1.0 / p["MTT2"]
    effect = inhibition(p, concentration(p, x))
    upstream = jnp.concatenate([effect[None], chain1[:-1]])
    return jnp.concatenate([
        jnp.stack([
            -p["ka"] * depot,
            p["ka"] * depot - (k10 + k12) * central + k21 * peripheral,
            k12 * central - k21 * peripheral,
        ]),
        ktr1 * (upstream - chain1),
        (ktr2 * (effect - chain2))[None],
    ])


def inr(p, x):
    """INR = base + INRmax · (1 − A6·A7)^λ with Ai = 1 − Bi."""
    a6, a7 = 1.0 - x[3 + N_CHAIN1 - 1], 1.0 - x[3 + N_CHAIN1]
    return p["base"] + p["INRmax"] * jnp.clip(1.0 - a6 * a7, 0.0, 1.0) ** p["lambda"]


def bioavailability(p):
    return jnp.ones(3 + N_CHAIN1 + 1).at[0].set(S_FRACTION)


model = Model(
    name="warfarin_hamberg",
    population=population,
    dynamics=OdeCompartments(3 + N_CHAIN1 + 1, vector_field, rtol=1e-5, atol=1e-8),
    compartments=("depot", "central", "peripheral", *[f"transit{i + 1}" for i in range(N_CHAIN1)], "slow"),
    analytes=(Analyte("inr", inr, LogNormal(0.10), unit="{INR}", code="6301-6"),),
    bioavailability=bioavailability,
    dose_compartment=0,
)

# --------------------------------------------------------------- metadata (not in the Model API)

ANALYTE_CODES = {analyte.name: analyte.code for analyte in model.analytes}
"""Analyte name -> wire code; a point-of-care meter may report LOINC 34714-6 (same unit {INR})."""

COVARIATES = {
    "CYP2C9": "genotype, e.g. '*1/*3'",
    "VKORC1": "-1639 G>A genotype: 'G/G', 'G/A' or 'A/A'",
    "AGE": "years",
}

TARGETS = {"inr": (2.0, 3.0)}
INR_HIGH = 4.0
"""INR above which bleeding risk rises steeply; P(INR > 4) is reported as a risk metric."""


def time_in_range(times, inr_values, start, end):
    """Fraction of [start, end] with 2 ≤ INR ≤ 3 (Rosendaal linear interpolation)."""
    low, high = TARGETS["inr"]
    return exposure.fraction_of_time_in_range(times, inr_values, low, high, start, end)


def probability_inr_above(times, inr_values, start, end, threshold=INR_HIGH, weights=None):
    """P(max INR in [start, end] > threshold) over the particles (axis −2 of (..., N, T))."""
    return exposure.probability(exposure.peak(times, inr_values, start, end) > threshold, weights)


METRICS = {"time_in_range": time_in_range, "p_inr_above_4": probability_inr_above}
