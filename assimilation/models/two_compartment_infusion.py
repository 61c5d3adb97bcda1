"""Two-compartment model for intravenous (infusion) dosing.

Compartments: central (dose target), peripheral. Parameters CL, Q (L/h), V1, V2 (L).
Reading: serum concentration = central / V1 in mg/L, combined additive + proportional error.

Numbers — typical values and residual error as reported for vancomycin by Goti et al. (2018),
"Hospitalized patient population pharmacokinetics of vancomycin", Ther Drug Monit 40:212–221:
CL 4.5 L/h (at creatinine clearance 120 mL/min, exponent 0.8), V1 58.4 L (at 70 kg, linear),
Q 6.5 L/h, V2 38.4 L, residual 3.4 mg/L additive and 22.7 % proportional. Quoted from memory of
the publication — verify before clinical use; here they only make a realistic generic example.
Between-patient variances are rounded from the reported CVs (CL ~40 %, V1 reduced to ~40 %
for a better-conditioned example); Q and V2 are fixed (no variability) in this example.
"""

import jax.numpy as jnp
import numpy as np

from assimilation import Analyte, Combined, Continuous, LinearCompartments, Model, Population, PowerEffect

population = Population(
    names=("CL", "V1", "Q", "V2"),
    typical=np.array([4.5, 58.4, 6.5, 38.4]),
    omega=np.diag([0.15, 0.15, 0.0, 0.0]),
    effects=(PowerEffect("CL", "CRCL", 120.0, 0.8), PowerEffect("V1", "WT", 70.0, 1.0)),
)


def rate_matrix(p):
    k10, k12, k21 = p["CL"] / p["V1"], p["Q"] / p["V1"], p["Q"] / p["V2"]
    return jnp.array([[-(k10 + k12), k21], [k12, -k21]])


model = Model(
    name="two_compartment_infusion",
    population=population,
    dynamics=LinearCompartments(2, rate_matrix),
    compartments=("central", "peripheral"),
    analytes=(Analyte("concentration", lambda p, x: x[0] / p["V1"], Combined(3.4, 0.227), lloq=1.0),),
    dose_compartment=0,
    covariates=(Continuous("CRCL", "mL/min", 1.0, 300.0, "creatinine clearance"), Continuous("WT", "kg", 30.0, 300.0, "body weight")),
    parameter_units=(("CL", "L/h"), ("V1", "L"), ("Q", "L/h"), ("V2", "L")),
)
