"""A user ODE model: one compartment, first-order absorption after a lag time, saturable
(Michaelis-Menten) elimination. An example of :class:`~assimilation.OdeCompartments`: the
structure a linear model cannot state. Loads by path:
``load_model("assimilation/models/examples/michaelis_menten_oral.py")``.

    dA_depot/dt   = −ka · A_depot
    dA_central/dt =  ka · A_depot − Vmax · C / (Km + C),     C = A_central / V

with a dose into the depot arriving ``tlag`` after it is given, with fraction ``F``. Doses
(and infusions) are added by the framework, not written in the vector field. Units: time h,
amount mg, V L, Vmax mg/h, Km mg/L, ka 1/h.

The values are ILLUSTRATIVE (phenytoin-like saturable kinetics), not a published fit.
"""

import jax.numpy as jnp
import numpy as np

from assimilation import Analyte, Combined, Continuous, Model, OdeCompartments, Population

population = Population.of(
    {
        "ka": 1.0,
        "V": lambda WT: 0.7 * WT,
        "Vmax": lambda WT: 0.3 * WT,
        "Km": 4.0,
        "tlag": 0.5,
        "F": 0.9,
    },
    omega=np.diag([0.1, 0.02, 0.05, 0.1, 0.0, 0.0]),  # ILLUSTRATIVE; tlag and F fixed
    reference={"WT": 70.0},
)


def vector_field(t, amounts, p):
    depot, central = amounts[0], amounts[1]
    concentration = central / p["V"]
    elimination = p["Vmax"] * concentration / (p["Km"] + concentration)
    return jnp.stack([-p["ka"] * depot, p["ka"] * depot - elimination])


model = Model(
    name="michaelis_menten_oral",
    population=population,
    dynamics=OdeCompartments(2, vector_field, rtol=1e-8, atol=1e-8),
    compartments=("depot", "central"),
    analytes=(Analyte("concentration", lambda p, x: x[1] / p["V"], Combined(0.5, 0.1)),),
    bioavailability=lambda p: jnp.stack([p["F"], jnp.ones_like(p["F"])]),
    lag_time=lambda p: jnp.stack([p["tlag"], jnp.zeros_like(p["tlag"])]),
    dose_compartment=0,
    covariates=(Continuous("WT", "kg", 20.0, 250.0, "body weight"),),
)
