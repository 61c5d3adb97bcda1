"""Vancomycin, IV: Purwonugroho et al. (2012) two-compartment model of Thai adults + the ISF biosensor.

A third published adult model for model averaging (:mod:`assimilation.averaging`), from a
population that neither :mod:`.vancomycin` (Goti 2018, US hospitalised patients with and
without haemodialysis) nor :mod:`.vancomycin_thomson` (Thomson 2009, UK adults) covers: Thai
adult inpatients of any ward. Its covariate model differs in kind as well as in value: the
central volume scales with AGE, not with body weight, and clearance is proportional to the
Cockcroft-Gault creatinine clearance (exponent 1, against Goti's 0.8 and Thomson's linear
function with an intercept).

Source: Purwonugroho TA, Chulavatnatol S, Preechagoon Y, Chindavijak B, Malathum K,
Bunuparadah P. Population pharmacokinetics of vancomycin in Thai patients. Scientific World
Journal 2012;2012:762649, doi:10.1100/2012/762649 (open access; 212 patients aged over 18,
319 serum levels, Ramathibodi Hospital, Bangkok, 2007-2010; NONMEM). Values read from the
publisher's abstract page (hindawi.com/journals/tswj/2012/762649) and cross-checked against a
second public copy of the full text (scribd document 354519995, same abstract and final
model): CL = 0.044 CLCr, V1 = 0.542 Age, Q 6.95 L/h, V2 44.2 L, interindividual variability
35.78 / 20.93 / 39.50 / 57.27 % on CL / V1 / Q / V2, intraindividual (residual) variability
4.51 mg/L. No code transcription of this model (nlmixr2lib, mrgsolve, PKPDsim) was found to
compare with. The interindividual variabilities are read as CVs of log-normal effects
(NONMEM's exponential model), ω² = ln(1 + CV²); were they √ω² · 100, Ω would be 0.128 /
0.0438 / 0.156 / 0.328 (verify against the paper's table before clinical use).

Structure (time h, amounts mg, volumes L, clearances L/h)::

    CL = 0.044 · CrCL          (CrCL Cockcroft-Gault, mL/min)
    V1 = 0.542 · AGE           (years)
    Q  = 6.95                  V2 = 44.2

written here at the reference patient CrCL 100 mL/min, age 60 y (CL 4.4 L/h, V1 32.52 L) with
power effects of exponent 1, which is the same proportionality.

| parameter | typical | unit | IIV CV → ω² = ln(1 + CV²) | source |
|---|---|---|---|---|
| CL | 0.044 · CrCL (4.4 at 100 mL/min) | L/h | 35.78 % → 0.1205 | Purwonugroho 2012 |
| V1 | 0.542 · age (32.52 at 60 y) | L | 20.93 % → 0.0429 | Purwonugroho 2012 |
| Q | 6.95 | L/h | 39.50 % → 0.1450 | Purwonugroho 2012 |
| V2 | 44.2 | L | 57.27 % → 0.2837 | Purwonugroho 2012 |
| plasma error (used) | 0.5 mg/L + 10 % | | | the library's point-of-care assumption, :mod:`.vancomycin` |
| residual (published, :data:`PURWONUGROHO_RESIDUAL_ERROR`) | 4.51 mg/L additive | | | Purwonugroho 2012 |

The plasma level's error is the connected point-of-care meter's, as in :mod:`.vancomycin`
and for the same reason (routine-TDM residuals also absorb charting errors of dose and sample
times, which a connected system does not make); it also keeps the models of a set from being
weighed by the workflows of their source studies rather than by their pharmacokinetics, since
every member then predicts the same device's reading. The published residual is kept beside it.

Covariates: ``CRCL`` (Cockcroft-Gault, mL/min), ``AGE`` (years). No weight effect was
retained and no dialysis covariate exists (patients on dialysis are not described as part of
the data: DIAL is not a covariate here). The ISF biosensor is the same assumed effect
compartment as in :mod:`.vancomycin` (parameters, error, persistence, sensor restart), so
that every vancomycin model reads every analyte the wire carries and a set of them shares one
state layout (what :mod:`dosing_policy.mixture` needs).
"""

import dataclasses

import numpy as np

from assimilation import Additive, Continuous, Population, PowerEffect
from assimilation.models import vancomycin

PURWONUGROHO_RESIDUAL_ERROR = Additive(4.51)
"""Purwonugroho 2012's residual (intraindividual) variability, mg/L, routine hospital TDM."""

AGE = Continuous("AGE", "a", 18.0, 110.0, "age, years (V1 is proportional to it)")
"""Adults: the study included patients over 18 years; the upper bound is a plausibility limit (ASSUMPTION)."""


def _omega(cv):
    return float(np.log1p(cv**2))


population = Population(
    names=("CL", "V1", "Q", "V2") + vancomycin.SENSOR_NAMES,
    typical=np.array([0.044 * 100.0, 0.542 * 60.0, 6.95, 44.2, *vancomycin.SENSOR_TYPICAL]),
    omega=np.diag([_omega(0.3578), _omega(0.2093), _omega(0.3950), _omega(0.5727), *vancomycin.SENSOR_OMEGA]),
    effects=(
        PowerEffect("CL", "CRCL", 100.0, 1.0),
        PowerEffect("V1", "AGE", 60.0, 1.0),
    ),
)

model = dataclasses.replace(  # the library's structure, analytes and sensor; this study's population
    vancomycin.model, name="vancomycin_purwonugroho2012", population=population, covariates=(vancomycin.CRCL, AGE),
)

DRUG = vancomycin.DRUG
ANALYTE_CODES = {analyte.name: analyte.code for analyte in model.analytes}
COVARIATES = {c.name: c.description for c in model.covariates}
TARGETS = vancomycin.TARGETS
METRICS = vancomycin.METRICS
