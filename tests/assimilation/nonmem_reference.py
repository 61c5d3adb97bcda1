"""Independent float64 references for the NONMEM record features: explicit dose trains by
matrix-exponential superposition (scipy.linalg.expm) for linear models and by solve_ivp for a
nonlinear one, written from the models' equations, not through the engine."""

from __future__ import annotations

import numpy as np
import scipy.integrate
import scipy.linalg


def oral_rate_matrix(p: dict) -> np.ndarray:
    """one_compartment_oral: depot -> central, elimination CL/V."""
    return np.array([[-p["ka"], 0.0], [p["ka"], -p["CL"] / p["V"]]])


def iv_rate_matrix(p: dict) -> np.ndarray:
    """two_compartment_infusion: central <-> peripheral, elimination from central."""
    k10, k12, k21 = p["CL"] / p["V1"], p["Q"] / p["V1"], p["Q"] / p["V2"]
    return np.array([[-(k10 + k12), k21], [k12, -k21]])


def linear_amounts(K: np.ndarray, doses, t: float) -> np.ndarray:
    """Amounts at ``t`` (left limit) from zero under ``doses`` [(time, amount, compartment,
    duration)]: exact piecewise solution of dx/dt = K x + r(t) between the input's breakpoints
    (bolus times, infusion starts and ends), x ← e^{K h} x + K⁻¹(e^{K h} − I) r over a piece of
    length h with constant infusion rate r, a bolus added when it is given (before t only)."""
    n = K.shape[0]
    starts = sorted({s for s, *_ in doses if s < t} | {s + d for s, _, _, d in doses if d > 0 and s + d < t} | {t})
    x, now = np.zeros(n), starts[0]
    for point in starts:
        if point > now:
            rate = np.zeros(n)
            for s, amount, compartment, duration in doses:
                if duration > 0 and s <= now and now < s + duration:
                    rate[compartment] += amount / duration
            E, Phi = _pieces(K, point - now)
            x = E @ x + Phi @ rate
            now = point
        if point < t:
            for s, amount, compartment, duration in doses:
                if duration <= 0 and s == point:
                    x[compartment] += amount
    return x


_CACHE: dict = {}


def _pieces(K: np.ndarray, h: float):
    """(e^{K h}, K⁻¹(e^{K h} − I)), cached: a dose train repeats the same few step lengths."""
    key = (K.tobytes(), round(h, 12))
    if key not in _CACHE:
        E = scipy.linalg.expm(K * h)
        _CACHE[key] = (E, np.linalg.solve(K, E - np.eye(K.shape[0])))
    return _CACHE[key]


def train(time: float, amount: float, interval: float, n: int, compartment: int = 0, duration: float = 0.0):
    """The ``n`` doses of a train before ``time`` (at time − kτ, k = n..1), as dose tuples."""
    return [(time - k * interval, amount, compartment, duration) for k in range(n, 0, -1)]


def michaelis_menten_amounts(p: dict, doses, t: float) -> np.ndarray:
    """michaelis_menten_oral from zero: boluses into the depot arriving at s + tlag with F·a;
    dA_depot/dt = −ka A_depot, dA_c/dt = ka A_depot − Vmax C / (Km + C), C = A_c / V."""

    def field(_, x):
        c = x[1] / p["V"]
        return [-p["ka"] * x[0], p["ka"] * x[0] - p["Vmax"] * c / (p["Km"] + c)]

    arrivals = sorted((s + p["tlag"], p["F"] * a) for s, a, _, _ in doses if s + p["tlag"] < t)
    x, now = np.zeros(2), min([a for a, _ in arrivals] + [t])
    for arrival, given in arrivals:
        if arrival > now:
            x = scipy.integrate.solve_ivp(field, (now, arrival), x, method="LSODA", rtol=1e-11, atol=1e-11).y[:, -1]
            now = arrival
        x = x + np.array([given, 0.0])
    if t > now:
        x = scipy.integrate.solve_ivp(field, (now, t), x, method="LSODA", rtol=1e-11, atol=1e-11).y[:, -1]
    return x


def natural(model, log_params: np.ndarray) -> list[dict]:
    """Per particle {parameter: natural value}."""
    values = np.exp(np.asarray(log_params, np.float64))
    return [{name: values[i, j] for j, name in enumerate(model.population.names)} for i in range(values.shape[0])]
