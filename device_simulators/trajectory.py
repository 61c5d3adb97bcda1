"""Latent "true" trajectories: the value an analyte really has at a given time.

A trajectory is any callable taking an array of times (s since epoch) and returning the
true values there. Truth models produce them; devices sample them with their own errors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import lfilter

Trajectory = Callable[[np.ndarray], np.ndarray]
"""times (s since epoch) -> true values, in the analyte's canonical unit."""


def from_arrays(times: np.ndarray, values: np.ndarray) -> Trajectory:
    """A trajectory interpolated linearly between samples, constant beyond the ends."""
    times = np.asarray(times, dtype=float)
    values = np.asarray(values, dtype=float)
    if times.shape != values.shape or times.ndim != 1 or len(times) == 0:
        raise ValueError("times and values must be equal-length 1-D arrays")
    order = np.argsort(times)
    times, values = times[order], values[order]
    return lambda t: np.interp(np.asarray(t, dtype=float), times, values)


def constant(value: float) -> Trajectory:
    return lambda t: np.full(np.shape(t), float(value))


def first_order_lag(source: Trajectory, times: np.ndarray, tau_s: float, step_s: float = 60.0) -> np.ndarray:
    """The response of dy/dt = (x - y) / tau to the input trajectory x, sampled at `times`.

    This is the plasma-to-interstitial equilibration (one well-stirred compartment):
    the interstitial level follows plasma with time constant `tau_s` (s). The output starts
    in equilibrium with the input at the first time. The ODE is solved exactly for an
    input that is linear between grid points `step_s` apart, so the only error is the
    linear interpolation of the input.
    """
    times = np.asarray(times, dtype=float)
    if len(times) == 0:
        return np.empty(0)
    if tau_s <= 0:
        return np.asarray(source(times), dtype=float)
    t0, t1 = float(times.min()), float(times.max())
    n = max(2, int(np.ceil((t1 - t0) / step_s)) + 1)
    grid = np.linspace(t0, t1, n) if t1 > t0 else np.array([t0, t0 + step_s])
    x = np.asarray(source(grid), dtype=float)
    h = grid[1] - grid[0]
    a = np.exp(-h / tau_s)
    # exact step for piecewise-linear x: y1 = a*y0 + (1-a)*x0 + (x1-x0)*(1 - tau/h*(1-a)),
    # a linear recursion with constant coefficient, which lfilter runs in C
    u = (1.0 - a) * x[:-1] + (x[1:] - x[:-1]) * (1.0 - tau_s / h * (1.0 - a))
    y_rest, _ = lfilter([1.0], [1.0, -a], u, zi=[a * x[0]])
    y = np.concatenate([[x[0]], y_rest])
    return np.interp(times, grid, y)
