"""A one-compartment IV model and its closed-form solutions: the independent references.

C(τ) after a zero-order infusion of A mg over d h into V L with clearance CL (k = CL/V):
  during:  (A/d)/CL · (1 − e^{−kτ}),   after: (A/d)/CL · (1 − e^{−kd}) · e^{−k(τ−d)}.
Steady state of A mg q τ over d h, amount at the trough (just before a dose):
  x_trough = V · (A/d)/CL · (1 − e^{−kd}) e^{−k(τ−d)} / (1 − e^{−kτ});  AUC over one interval = A/CL.
"""

import jax.numpy as jnp
import numpy as np
from scipy.stats import norm

from assimilation import Additive, Analyte, LinearCompartments, Model, Population


def one_compartment_iv(cl: float = 4.0, v: float = 50.0, omega_cl: float = 0.09, sigma: float = 1.0, name: str = "test_1cpt_iv") -> Model:
    population = Population(names=("CL", "V"), typical=np.array([cl, v]), omega=np.diag([omega_cl, 0.0]))
    return Model(
        name=name,
        population=population,
        dynamics=LinearCompartments(1, lambda p: jnp.array([[-p["CL"] / p["V"]]])),
        compartments=("central",),
        analytes=(Analyte("concentration", lambda p, x: x[0] / p["V"], Additive(sigma)),),
    )


def infusion_concentration(tau, amount, duration, cl, v):
    """C(τ) of one dose started at τ = 0 (left-continuous: 0 at τ = 0 for a bolus)."""
    tau = np.asarray(tau, np.float64)
    k = cl / v
    if duration == 0:
        return np.where(tau > 0, amount / v * np.exp(-k * tau), 0.0)
    rate = amount / duration
    during = rate / cl * (1 - np.exp(-k * np.clip(tau, 0, None)))
    after = rate / cl * (1 - np.exp(-k * duration)) * np.exp(-k * (tau - duration))
    return np.where(tau <= 0, 0.0, np.where(tau <= duration, during, after))


def steady_state_trough_amount(amount, interval, duration, cl, v):
    k = cl / v
    return v * (amount / duration) / cl * (1 - np.exp(-k * duration)) * np.exp(-k * (interval - duration)) / (1 - np.exp(-k * interval))


def lognormal_pta(total, low, high, mu, sigma):
    """P(low ≤ total/CL ≤ high) and P(total/CL > high) for log CL ~ N(mu, sigma²)."""
    upper = norm.cdf((np.log(total / low) - mu) / sigma)  # P(CL ≤ total/low)
    lower = norm.cdf((np.log(total / high) - mu) / sigma)  # P(CL < total/high)
    return upper - lower, lower


def stratified_log_cl(mu, sigma, n):
    """log CL at the n quantile midpoints of N(mu, sigma²): a deterministic quadrature."""
    return mu + sigma * norm.ppf((np.arange(n) + 0.5) / n)
