"""Model structure: how compartment amounts x (mg) evolve between readings.

Two interchangeable paths implement the :class:`Dynamics` protocol:

* :class:`LinearCompartments` — dx/dt = K(θ) x + u(t), solved *exactly*. K is diagonalised once
  per parameter vector (``prepare``; the result is cached with each particle), and every input
  in the dose table is added by superposition in modal coordinates z = V⁻¹ x:

      z(t1) = e^{Λ (t1−t0)} z(t0) + Σ_bolus e^{Λ (t1−a)} V⁻¹ e_c F·amt
                                   + Σ_infusion e^{Λ (t1−b)} φ(Λ, b−a) V⁻¹ e_c F·amt/dur,

  with φ(λ, τ) = (e^{λτ} − 1)/λ and [a, b] the part of the infusion inside [t0, t1).
  No ODE stepping, any number of doses and lag times at the cost of one exponential per mode
  per dose slot. K must be diagonalisable with real eigenvalues (true for mammillary and
  catenary compartment models with distinct rate constants).
* :class:`OdeCompartments` — any dx/dt = g(t, x, θ) + u(t), integrated with diffrax between
  input breakpoints (dose arrivals, infusion starts/ends) so the solver never steps over a
  discontinuity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .dosing import DoseTable

__all__ = ["Dynamics", "LinearCompartments", "OdeCompartments", "Modes", "modes", "input_breakpoints",
           "mammillary", "modes_with_derivatives"]

Parameters = dict  # name -> scalar (natural units) for one particle


class Dynamics(Protocol):
    n_compartments: int
    may_fail: ClassVar[bool]
    """True when ``propagate`` can return non-finite amounts (a numerical solve that failed)."""

    def prepare(self, params: Parameters) -> Any:
        """Per-parameter-vector cache (e.g. an eigendecomposition); recomputed when θ changes."""

    def propagate(self, params, cache, amounts, t0, t1, doses: DoseTable, bioavailability, lag):
        """Amounts at t1 (left limit) from amounts at t0, given every dose in ``doses``.
        Dynamics with a faster path for tables of boluses only say so by a true
        ``closed_form_boluses`` attribute and take a static keyword ``boluses_only``."""


# ----------------------------------------------------------------------------- linear, exact


class Modes(NamedTuple):
    """K = V diag(rates) V⁻¹ (rates in 1/h, all ≤ 0 for a compartment model)."""

    rates: Float[Array, " n"]
    vectors: Float[Array, "n n"]
    inverse: Float[Array, "n n"]


class _Roots2x2(NamedTuple):
    fast: Float[Array, ""]  # the larger-magnitude eigenvalue (1/h); ≤ slow ≤ 0 for a compartment model
    slow: Float[Array, ""]
    gap: Float[Array, ""]  # fast − slow


def _roots_2x2(a, b, c, d) -> _Roots2x2:
    """Eigenvalues of [[a, b], [c, d]] (assumed real): the larger-magnitude root from the
    quadratic formula, the other as det/root (Vieta), so that neither cancels when the rates
    differ a lot; the discriminant as ((a−d)/2)² + bc rather than (tr/2)² − det, so that it does
    not cancel when they are nearly equal (bc ≥ 0 in a compartment model)."""
    half_trace = 0.5 * (a + d)
    root = jnp.sqrt(jnp.maximum(0.25 * (a - d) * (a - d) + b * c, 0.0))
    fast = jnp.where(half_trace <= 0, half_trace - root, half_trace + root)
    fast = jnp.where(fast == 0, -1e-30, fast)
    slow = (a * d - b * c) / fast
    return _Roots2x2(fast, slow, fast - slow)


def _modes_2x2(K):
    """Closed form for 2×2, written in scalars so XLA fuses it (4× faster than with stacked
    intermediates, ~10× faster than LAPACK geev on CPU)."""
    a, b, c, d = K[0, 0], K[0, 1], K[1, 0], K[1, 1]
    roots = _roots_2x2(a, b, c, d)
    big = roots.fast
    # Equal rates (ka = CL/V) make K defective, with no eigenvector basis, and nearly equal ones
    # make V ill-conditioned (float32 gives NaN at equality and 0 at 1e-4 apart). Rates closer than
    # 3√ε relative are moved that far apart: in float32 (1e-3) the oral model's amounts after
    # boluses and infusions then stay within 0.6 % of solve_ivp at every gap from 0 to 1e-2
    # (1.7 % with √ε, 1.2 % with 3e-3), instead of breaking down.
    separation = 3 * jnp.sqrt(jnp.finfo(K.dtype).eps)
    small = jnp.where(jnp.abs(roots.gap) < separation * jnp.abs(big), big * (1 - separation), roots.slow)

    def vector(lam):
        # (K − λI) v = 0 from either row; the better-conditioned one is kept
        u0, u1, w0, w1 = b, lam - a, lam - d, c
        use_u = u0 * u0 + u1 * u1 >= w0 * w0 + w1 * w1
        v0, v1 = jnp.where(use_u, u0, w0), jnp.where(use_u, u1, w1)
        norm = jax.lax.rsqrt(v0 * v0 + v1 * v1)
        return v0 * norm, v1 * norm

    v00, v10 = vector(big)
    v01, v11 = vector(small)
    inv_det = 1.0 / (v00 * v11 - v01 * v10)
    V = jnp.stack([jnp.stack([v00, v01]), jnp.stack([v10, v11])])
    inverse = jnp.stack([jnp.stack([v11, -v01]), jnp.stack([-v10, v00])]) * inv_det
    return Modes(jnp.stack([big, small]), V, inverse)


def modes(K: Float[Array, "n n"]) -> Modes:
    """Eigendecomposition of a compartmental rate matrix (real parts; see module docstring)."""
    n = K.shape[-1]
    if n == 1:
        return Modes(K[:, 0], jnp.ones_like(K), jnp.ones_like(K))
    if n == 2:
        return _modes_2x2(K)
    rates, vectors = jnp.linalg.eig(K)
    vectors = vectors.real.astype(K.dtype)
    return Modes(rates.real.astype(K.dtype), vectors, jnp.linalg.inv(vectors))


def _phi(rate, tau):
    """(e^{rate·τ} − 1)/rate, equal to τ in the limit rate → 0."""
    small = jnp.abs(rate * tau) < 1e-6
    safe = jnp.where(small, 1.0, rate)
    return jnp.where(small, tau * (1 + 0.5 * rate * tau), jnp.expm1(safe * tau) / safe)


@dataclass(frozen=True, eq=False)
class LinearCompartments:
    """dx/dt = K(θ) x + u(t) with ``rate_matrix(params) -> K`` of shape (n, n) in 1/h.

    Example (one compartment, first-order absorption; compartments depot, central)::

        LinearCompartments(2, lambda p: jnp.array([[-p["ka"], 0.0], [p["ka"], -p["CL"] / p["V"]]]))
    """

    may_fail: ClassVar[bool] = False
    n_compartments: int
    rate_matrix: Callable[[Parameters], Float[Array, "n n"]]
    cache_modes: bool | None = None

    @property
    def cache_in_state(self) -> bool:
        """Whether filters keep each particle's modes in their state (``cache_modes``; default:
        only for n > 2, where a general eigensolver is slow). A 2×2 closed form costs less to
        recompute at every step than its 10 floats per particle cost to store and move."""
        return self.n_compartments > 2 if self.cache_modes is None else self.cache_modes

    def prepare(self, params):
        return modes(self.rate_matrix(params))

    @property
    def closed_form_boluses(self) -> bool:
        """Whether ``propagate(..., boluses_only=True)`` has a path of its own (2 compartments)."""
        return self.n_compartments == 2

    def propagate(self, params, cache: Modes, amounts, t0, t1, doses: DoseTable, bioavailability, lag, boluses_only: bool = False):
        """``boluses_only`` (static): the caller vouches that no slot of ``doses`` is an infusion
        (filters check the slots they pass); a 2-compartment model then takes the closed form."""
        if self.n_compartments == 2 and (boluses_only or doses.time.shape[-1] == 0):
            # e^{K dt} in closed form, no eigenvectors (they cost ~2/3 of a dose-free filter step
            # and most of a dose step's 1 GB of temporaries at 10,000 x 1,000). An infusion's term
            # keeps the modal sums below: the closed form's divided differences are slower there.
            return _propagate_boluses_2x2(self.rate_matrix(params), amounts, t0, t1, doses, bioavailability, lag)
        rates, V, V_inv = cache
        n = rates.shape[0]
        z = [jnp.exp(rates[j] * (t1 - t0)) * sum(V_inv[j, i] * amounts[i] for i in range(n)) for j in range(n)]
        # The K dose slots and n modes are unrolled into scalar expressions (arrays with tiny
        # trailing axes vectorise poorly on CPU). Filters pass only the slots that may deliver
        # in [t0, t1) (dosing.compact), so K is usually 0 or 1 here.
        for k in range(doses.time.shape[-1]):
            compartment = doses.compartment[k]
            fresh, duration = doses.fresh[k], doses.duration[k]
            start = jnp.where(fresh, -jnp.inf, t0)  # a fresh slot counts from its own start
            arrival = doses.time[k] + lag[compartment]
            delivered = bioavailability[compartment] * doses.amount[k]
            is_bolus = duration <= 0
            lo = jnp.maximum(arrival, start)
            hi = jnp.minimum(arrival + duration, t1)
            counts = jnp.where(is_bolus, (arrival >= start) & (arrival < t1), hi > lo)
            # Exponents are clipped at 0 so masked-out slots cannot overflow (inf·0 = nan).
            age = jnp.clip(jnp.where(is_bolus, t1 - arrival, t1 - hi), 0.0, None)
            width = jnp.clip(hi - lo, 0.0, None)
            per_hour = delivered / jnp.where(is_bolus, 1.0, duration)
            for j in range(n):
                spread = jnp.where(is_bolus, delivered, _phi(rates[j], width) * per_hour)
                z[j] = z[j] + jnp.where(counts, jnp.exp(rates[j] * age) * spread * V_inv[j, compartment], 0.0)
        return _assemble([sum(V[i, j] * z[j] for j in range(n)) for i in range(n)])


def _putzer(K: Float[Array, "2 2"], roots: _Roots2x2, dt, x0, x1):
    """e^{K dt} x for a 2×2 K with real eigenvalues λ_fast ≤ λ_slow ≤ 0, by Putzer's formula
    (the matrix function as its interpolating polynomial, Moler & Van Loan 2003, method 15):

        e^{K dt} = α I + β K,   β = e^{λ_slow dt} φ(λ_fast − λ_slow, dt),   α = e^{λ_slow dt} − λ_slow β,

    with φ(δ, τ) = (e^{δτ} − 1)/δ (→ τ as δ → 0). Every term is bounded and sign-definite
    (δ ≤ 0, φ ∈ (0, dt], α ≥ 0), and the formula holds for equal rates too (K defective, e.g.
    ka = CL/V, where eigenvectors do not exist). Accurate relative to the largest amount: a
    compartment holding a small fraction of the drug (the depot long after absorption) carries
    an absolute error of a few ulps of the total, not of its own amount. Written in scalars
    (x = (x0, x1), returned likewise) so that XLA fuses it."""
    a, b, c, d = K[0, 0], K[0, 1], K[1, 0], K[1, 1]
    decay = jnp.exp(roots.slow * dt)
    beta = decay * _phi(roots.gap, dt)
    alpha = decay - roots.slow * beta
    return alpha * x0 + beta * (a * x0 + b * x1), alpha * x1 + beta * (c * x0 + d * x1)


def _propagate_boluses_2x2(K: Float[Array, "2 2"], x: Float[Array, " 2"], t0, t1, doses: DoseTable, bioavailability, lag):
    """Amounts at t1 of a 2×2 system from x at t0 plus the bolus doses in ``doses`` (every slot
    is taken for a bolus; none: a dose-free step): e^{K (t1−t0)} x + Σ_k e^{K (t1 − a_k)} e_c F_c amt_k
    over the boluses arriving (a_k = dose time + lag) in [t0, t1), or since their own time for a
    fresh slot (a late record), each exponential by Putzer's formula (:func:`_putzer`) on the
    eigenvalues computed once. The same terms, cut-offs and left-continuity as the modal path of
    :meth:`LinearCompartments.propagate`."""
    roots = _roots_2x2(K[0, 0], K[0, 1], K[1, 0], K[1, 1])
    y0, y1 = _putzer(K, roots, t1 - t0, x[0], x[1])
    for k in range(doses.time.shape[-1]):
        compartment = doses.compartment[k]
        arrival = doses.time[k] + lag[compartment]
        start = jnp.where(doses.fresh[k], -jnp.inf, t0)
        counts = (arrival >= start) & (arrival < t1)
        delivered = jnp.where(counts, bioavailability[compartment] * doses.amount[k], 0.0)
        u0 = jnp.where(compartment == 0, delivered, 0.0)  # delivered · e_c
        age = jnp.clip(t1 - arrival, 0.0, None)  # clipped: no overflow where it does not count
        v0, v1 = _putzer(K, roots, age, u0, delivered - u0)
        y0, y1 = y0 + v0, y1 + v1
    return _assemble([y0, y1])


def _assemble(columns: list) -> Float[Array, " n"]:
    """The vector (columns[0], ..., columns[n−1]) as Σ_i columns[i]·e_i rather than a stack: XLA's
    CPU backend emits a concatenation fused into a loop as scalar code (measured: no SIMD at all in
    the propagation kernel, 2.3× slower over a whole filter step), while the masked sum vectorises."""
    eye = jnp.eye(len(columns), dtype=columns[0].dtype)
    return sum(column * eye[i] for i, column in enumerate(columns))


# ----------------------------------------------------------------------------- nonlinear ODE


def input_breakpoints(doses: DoseTable, lag, t0, t1):
    """Sorted times in [t0, t1] where the input u(t) jumps: 2K+2 points (duplicates allowed)."""
    arrival = doses.time + lag[doses.compartment]
    points = jnp.concatenate([arrival, arrival + doses.duration, jnp.stack([t0, t1])])
    return jnp.sort(jnp.clip(points, t0, t1))


@dataclass(frozen=True, eq=False)
class OdeCompartments:
    """dx/dt = vector_field(t, x, params) + u(t), for nonlinear models (e.g. Michaelis–Menten
    elimination, Friberg myelosuppression, turnover PD). Integrated with diffrax ``solver``
    between input breakpoints; ``rtol``/``atol`` set the adaptive step controller.

    The vector field must not include the dosing input u(t): doses are added by the framework.
    A solve that fails (more than ``max_steps`` steps) gives NaN amounts rather than raising:
    the particle filter gives such a particle zero weight and the ensemble Kalman filter
    replaces the member, so a batch of patients is never stopped by one (a raising solve also
    puts a host callback in every kernel, which keeps it out of the persistent compilation cache).
    """

    may_fail: ClassVar[bool] = True
    n_compartments: int
    vector_field: Callable[[Any, Float[Array, " n"], Parameters], Float[Array, " n"]]
    rtol: float = 1e-6
    atol: float = 1e-9
    max_steps: int = 4096
    solver: Any = field(default=None)

    def prepare(self, params):
        return ()

    def propagate(self, params, cache, amounts, t0, t1, doses: DoseTable, bioavailability, lag):
        x, _ = self._integrate(params, amounts, t0, t1, doses, bioavailability, lag, None)
        return x

    def trajectory(self, params, cache, amounts, t0, times, doses: DoseTable, bioavailability, lag) -> Float[Array, "T n"]:
        """Amounts (left limits) at sorted ``times`` ≥ t0 in ONE pass over the input segments:
        the same numbers as ``propagate`` from save point to save point, but the solver is not
        restarted at every save point (a forecast of T points costs one solve, not T)."""
        _, xs = self._integrate(params, amounts, t0, times[-1], doses, bioavailability, lag, times)
        return xs

    def _integrate(self, params, amounts, t0, t1, doses: DoseTable, bioavailability, lag, times):
        import diffrax

        solver = self.solver if self.solver is not None else diffrax.Tsit5()
        arrival = doses.time + lag[doses.compartment]
        # Fresh doses from before t0 (late records) are applied at t0: the ODE cannot be rewound.
        arrival = jnp.where(doses.fresh, jnp.maximum(arrival, t0), arrival)
        delivered = bioavailability[doses.compartment] * doses.amount
        is_bolus = doses.duration <= 0
        rate = jnp.where(is_bolus, 0.0, delivered / jnp.where(is_bolus, 1.0, doses.duration))
        points = input_breakpoints(doses._replace(time=arrival - lag[doses.compartment]), lag, t0, t1)

        def field_(t, x, infusion):
            return self.vector_field(t, x, params) + infusion

        term = diffrax.ODETerm(field_)
        controller = diffrax.PIDController(rtol=self.rtol, atol=self.atol)

        def segment(carry, bounds):
            x, saved = carry
            lo, hi = bounds
            # boluses arriving in [lo, hi) are added at the start of the segment (left-continuity)
            lands = is_bolus & (arrival >= lo) & (arrival < hi) & (arrival < t1)
            lands = lands & jnp.where(doses.fresh, True, arrival >= t0)
            x = x.at[doses.compartment].add(jnp.where(lands, delivered, 0.0))
            active = (~is_bolus) & (arrival <= lo) & (arrival + doses.duration >= hi)
            infusion = jnp.zeros_like(x).at[doses.compartment].add(jnp.where(active, rate, 0.0))
            end = jnp.maximum(hi, lo)
            if times is None:
                saveat = diffrax.SaveAt(t1=True)
            else:  # every save time, clipped into the segment; only those inside (lo, hi] are kept
                saveat = diffrax.SaveAt(ts=jnp.clip(times, lo, end), t1=True)
            solution = diffrax.diffeqsolve(term, solver, lo, end, None, x, infusion, stepsize_controller=controller,
                                           max_steps=self.max_steps, saveat=saveat, throw=False)
            ys = jnp.where(solution.result == diffrax.RESULTS.successful, solution.ys, jnp.nan)
            x_next = jnp.where(hi > lo, ys[-1], x)
            if times is not None:
                inside = (times > lo) & (times <= hi) & (hi > lo)
                saved = jnp.where(inside[:, None], ys[:-1], saved)
            return (x_next, saved), None

        initial = None if times is None else jnp.broadcast_to(amounts, (times.shape[0], amounts.shape[0]))  # times == t0: x(t0)
        (x, saved), _ = jax.lax.scan(segment, (amounts, initial), (points[:-1], points[1:]))
        return x, saved


# ----------------------------------------------------------------------------- mammillary models


def mammillary(clearance: str, central: str, peripherals: Sequence[tuple[str, str]] = (), absorption: str | None = None
               ) -> Callable[[Parameters], Float[Array, "n n"]]:
    """``rate_matrix(params) -> K`` of a mammillary model in the parameters named: NONMEM's
    ADVAN1 / ADVAN3 / ADVAN11 (1, 2, 3 compartments, TRANS2 parameters) and, with
    ``absorption``, ADVAN2 / ADVAN4 / ADVAN12. Compartments in state order: the depot (when
    there is absorption, first, as in NONMEM), the central compartment, then each peripheral
    one. With amounts A (mg), CL and Q_j in L/h, volumes in L, ka in 1/h::

        dA_depot/dt = −ka A_depot
        dA_c/dt     =  ka A_depot − (CL + Σ_j Q_j) / V_c · A_c + Σ_j Q_j / V_j · A_j
        dA_j/dt     =  Q_j / V_c · A_c − Q_j / V_j · A_j

    Example (two compartments, oral)::

        LinearCompartments(3, mammillary("CL", "V1", [("Q", "V2")], absorption="ka"))
    """
    peripherals = tuple(peripherals)
    offset = 0 if absorption is None else 1
    n = offset + 1 + len(peripherals)
    c = offset

    def rate_matrix(p: Parameters) -> Float[Array, "n n"]:
        volume = p[central]
        K = jnp.zeros((n, n), jnp.result_type(volume))
        out_of_central = p[clearance] / volume
        for j, (flow, peripheral_volume) in enumerate(peripherals, start=c + 1):
            out_of_central = out_of_central + p[flow] / volume
            K = K.at[j, c].set(p[flow] / volume).at[c, j].set(p[flow] / p[peripheral_volume]).at[j, j].set(-p[flow] / p[peripheral_volume])
        K = K.at[c, c].set(-out_of_central)
        if absorption is not None:
            K = K.at[0, 0].set(-p[absorption]).at[c, 0].set(p[absorption])
        return K

    return rate_matrix


def modes_with_derivatives(K: Float[Array, "n n"]) -> Modes:
    """:func:`modes` whose derivatives JAX can take for any n (the general eigensolver's
    eigenvector derivatives are opt-in: they exist where the eigenvalues are distinct, as in a
    compartment model with distinct rate constants). For computations that differentiate
    predictions with respect to the parameters, such as the population objective."""
    if K.shape[-1] <= 2:
        return modes(K)
    rates, vectors = jax.lax.linalg.eig(K, compute_left_eigenvectors=False, enable_eigvec_derivs=True)
    vectors = vectors.real.astype(K.dtype)
    return Modes(rates.real.astype(K.dtype), vectors, jnp.linalg.inv(vectors))
