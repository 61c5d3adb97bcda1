"""One-compartment model with first-order absorption (theophylline-like).

Compartments: depot (dose target), central. Parameters ka (1/h), CL (L/h), V (L).
Reading: plasma concentration = central / V in mg/L, additive error.

Numbers — from the theophylline example (Boeckmann, Sheiner & Beal, NONMEM Users Guide Part V;
data set ``Theoph``) as fitted in Pinheiro & Bates (2000), *Mixed-Effects Models in S and
S-PLUS*, §8.2 (``fm2Theo.nlme``): log ka = 0.45 (ka ≈ 1.57 /h), log ke = −2.43,
log CL = −3.21 (CL ≈ 0.040 L/h/kg), SD of the random effects 0.64 (log ka) and 0.17 (log CL),
residual SD 0.70 mg/L. Per-kg values are scaled to 70 kg (CL = 2.8 L/h, V = CL/ke ≈ 32 L)
and weight enters linearly (power 1), as dosing per kg implies. The source has no random effect
on V; the 0.1² variance used here is an assumption so that V is learnable.
"""

import jax.numpy as jnp
import numpy as np

from assimilation import Additive, Analyte, Continuous, LinearCompartments, Model, Population, PowerEffect

population = Population(
    names=("ka", "CL", "V"),
    typical=np.array([1.57, 2.8, 32.0]),
    omega=np.diag([0.64**2, 0.17**2, 0.10**2]),
    effects=(PowerEffect("CL", "WT", 70.0, 1.0), PowerEffect("V", "WT", 70.0, 1.0)),
)


def rate_matrix(p):
    ke = p["CL"] / p["V"]
    return jnp.array([[-p["ka"], 0.0], [p["ka"], -ke]])


model = Model(
    name="one_compartment_oral",
    population=population,
    dynamics=LinearCompartments(2, rate_matrix),
    compartments=("depot", "central"),
    analytes=(Analyte("concentration", lambda p, x: x[1] / p["V"], Additive(0.70), lloq=0.1),),
    dose_compartment=0,
    covariates=(Continuous("WT", "kg", 2.0, 300.0, "body weight"),),
    parameter_units=(("ka", "/h"), ("CL", "L/h"), ("V", "L")),
)
