"""Phenobarbital in neonates (NONMEM's "pheno" example): one compartment, IV boluses.

A published model written as a model file, to check a fit and to teach; it is not offered to
clinicians (a file in this folder is not in the service's model list; it loads by path:
``load_model("assimilation/models/examples/pheno.py")``).

Study: Grasela TH Jr, Donn SM. Neonatal population pharmacokinetics of phenobarbital derived
from routine clinical data. Dev Pharmacol Ther 1985;8(6):374-383 (59 neonates, 155 levels;
data: tests/data/pheno.csv, see tests/data/pheno.md).

Control stream and final estimates: pharmpy's test data (https://github.com/pharmpy/pharmpy,
LGPL-3.0), ``tests/testdata/nonmem/pheno_real.mod`` and the NONMEM 7.4.2 run's
``cdd/pheno_real.ext`` (final iteration -1000000000) and ``pheno_real.lst``
(FOCE with INTERACTION; "OBJECTIVE FUNCTION VALUE WITHOUT CONSTANT: 586.27605628188053")::

    $SUBROUTINE ADVAN1 TRANS2
    $PK
          TVCL=THETA(1)*WGT
          TVV=THETA(2)*WGT
    IF(APGR.LT.5) TVV=TVV*(1+THETA(3))
          CL=TVCL*EXP(ETA(1))
          V=TVV*EXP(ETA(2))
          S1=V
    $ERROR
          W=F
          Y=F+W*EPS(1)

| NONMEM | value | here |
|---|---|---|
| THETA(1) | 4.69555E-03 L/h/kg | CL = θ1·WGT |
| THETA(2) | 9.84258E-01 L/kg | V = θ2·WGT·(1 + θ3·[APGR < 5]) |
| THETA(3) | 1.58920E-01 | (a low Apgar score: 16 % larger V) |
| OMEGA(1,1) | 2.93508E-02 | Ω of log CL |
| OMEGA(2,2) | 2.79060E-02 | Ω of log V |
| SIGMA(1,1) | 1.32410E-02 | Proportional(√σ²): Y = F (1 + ε) |

Units: time h, dose mg, level mg/L, weight kg.
"""

import jax.numpy as jnp
import numpy as np

from assimilation import Analyte, Categorical, Continuous, LinearCompartments, Model, Population, Proportional

THETA = (4.69555e-03, 9.84258e-01, 1.58920e-01)
OMEGA = np.diag([2.93508e-02, 2.79060e-02])
SIGMA = 1.32410e-02  # variance of EPS(1)
REPORTED_OFV = 586.27605628188053  # pheno_real.lst, FOCE-I, without the N log 2π constant (N = 155)

population = Population.of(
    {
        "CL": lambda WGT: THETA[0] * WGT,
        "V": lambda WGT, APGR: THETA[1] * WGT * (1 + THETA[2] * (APGR < 5)),
    },
    omega=OMEGA,
    reference={"WGT": 1.3, "APGR": 7},  # the neonates' median weight and Apgar score
)

model = Model(
    name="pheno",
    population=population,
    dynamics=LinearCompartments(1, lambda p: jnp.array([[-p["CL"] / p["V"]]])),
    compartments=("central",),
    analytes=(Analyte("phenobarbital", lambda p, x: x[0] / p["V"], Proportional(float(np.sqrt(SIGMA)))),),
    covariates=(
        Continuous("WGT", "kg", 0.2, 7.0, "birth weight", studied=(0.6, 3.6)),
        Categorical("APGR", tuple(range(11)), "Apgar score"),
    ),
)
