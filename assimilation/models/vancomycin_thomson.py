"""Vancomycin, IV: Thomson et al. (2009) adult two-compartment model — an alternative truth.

For closed-loop benchmarks with a misspecified model: simulate patients from this model
and estimate with :mod:`assimilation.models.vancomycin` (Goti 2018). The two differ in the
shape of the renal effect (linear here, power 0.8 there), in V1 (0.675 L/kg here: 47 L at
70 kg against 58.4 L) and in the peripheral distribution.

Source: Thomson AH, Staatz CE, Tobin CM, Gall M, Lovering AM. Development and evaluation of
vancomycin dosage guidelines designed to achieve new target concentrations. J Antimicrob
Chemother 2009;63(5):1050-1057 (final population model). Values quoted from memory and
cross-checked against the public transcriptions of InsightRX (PKPDmodels
``pk_vanco_thomson``; PKPDposterior vancomycin example: IIV as CV 0.27 / 0.15 / 0.49 / 1.3,
residual 1.6 mg/L + 15 %): verify against the publication before clinical use. The IIV
numbers are read as CVs; were they SDs of the log, Ω would be 0.073 / 0.023 / 0.24 / 1.69.

Structure (time h, amounts mg, volumes L, clearances L/h)::

    CL = 2.99 · (1 + 0.0154 · (CrCL − 66))     V1 = 0.675 · WT
    Q  = 2.28                                  V2 = 0.732 · WT

| parameter | typical | unit | IIV CV → ω² = ln(1 + CV²) | source |
|---|---|---|---|---|
| CL | 2.99 at CrCL 66 mL/min, +1.54 % per mL/min | L/h | 27 % → 0.070 | Thomson 2009 |
| V1 | 0.675 · WT | L | 15 % → 0.022 | Thomson 2009 |
| Q | 2.28 | L/h | 49 % → 0.214 | Thomson 2009 |
| V2 | 0.732 · WT | L | 130 % → 0.990 | Thomson 2009 |
| residual | 1.6 mg/L additive + 15 % proportional | | | Thomson 2009 |

Covariates: ``CRCL`` (Cockcroft-Gault, mL/min), ``WT`` (kg). No dialysis covariate (the
study excluded dialysis patients), so ``DIAL`` is not a covariate here. The ISF biosensor is
the same assumed effect compartment as in :mod:`.vancomycin` (see there), so that both
models produce every analyte the wire carries.
"""

import numpy as np

from assimilation import Analyte, Combined, Model, Population, PowerEffect
from assimilation.models import vancomycin
from assimilation.models.covariate_effects import LinearEffect


def _omega(cv):
    return float(np.log1p(cv**2))


population = Population(
    names=("CL", "V1", "Q", "V2") + vancomycin.SENSOR_NAMES,
    typical=np.array([2.99, 0.675 * 70.0, 2.28, 0.732 * 70.0, *vancomycin.SENSOR_TYPICAL]),
    omega=np.diag([_omega(0.27), _omega(0.15), _omega(0.49), _omega(1.3), *vancomycin.SENSOR_OMEGA]),
    effects=(
        LinearEffect("CL", "CRCL", 66.0, 0.0154),
        PowerEffect("V1", "WT", 70.0, 1.0),
        PowerEffect("V2", "WT", 70.0, 1.0),
    ),
)

model = Model(
    name="vancomycin_thomson",
    population=population,
    dynamics=vancomycin.PlasmaWithEffectCompartment(4, vancomycin.rate_matrix, cache_modes=False),
    compartments=vancomycin.COMPARTMENTS,
    analytes=(
        Analyte("plasma", vancomycin.plasma_concentration, Combined(1.6, 0.15), lloq=2.0, unit="mg/L", code="20578-1"),
        Analyte("isf", vancomycin.isf_reading, Combined(1.0, 0.15), lloq=1.0, unit="mg/L", code="x-mipd-vancomycin-isf",
                persistence_h=vancomycin.SENSOR_ERROR_PERSISTENCE_H, sensor=vancomycin.ISF_SENSOR),
    ),
    dose_compartment=0,
    initial_amounts=vancomycin.START,
    covariates=(vancomycin.CRCL, vancomycin.WT),
    parameter_units=vancomycin.PARAMETER_UNITS,
)

DRUG = vancomycin.DRUG
ANALYTE_CODES = {analyte.name: analyte.code for analyte in model.analytes}
COVARIATES = {c.name: c.description for c in model.covariates}
TARGETS = vancomycin.TARGETS
METRICS = vancomycin.METRICS
