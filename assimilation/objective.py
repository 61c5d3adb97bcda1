"""The population objective of a model on a dataset: −2 log-likelihood at the model's own values.

A model file holds a population's parameter values (typical values or their expressions, Ω,
residual errors). This module computes what an estimation program reports for those values
on a dataset, so that a model file can be checked against a published fit (NONMEM's OFV at
the final estimates of its .lst or .ext file).

For patient i with readings y_ij and free random effects η (the entries with Ω_kk > 0;
log θ_i(t) = log θ_typical(covariates_i(t)) + η, covariates changing at ``CovariateChange``
events), the marginal likelihood is L_i = ∫ p(y_i | η) N(η; 0, Ω) dη and the objective is
Σ_i −2 log L_i. With

    φ_i(η) = −2 Σ_j log p(y_ij | η) + ηᵀ Ω⁻¹ η,        η̂_i = argmin φ_i,

the methods are

* ``"focei"``, NONMEM's FOCE with INTERACTION: on each residual error's Gaussian scale
  (transform(y) ~ N(m(η), V(m)), :mod:`.residuals`),

      −2 log L_i ≈ φ_i(η̂) + log|Ω| + log|Ω⁻¹ + Σ_j (g_j g_jᵀ / V_j + ½ d_j d_jᵀ / V_j²)|,

  g_j = ∂m_j/∂η and d_j = ∂V_j/∂η at η̂: the Laplace approximation with the data term's
  Hessian replaced by its expectation, the information the readings carry about η (NONMEM's
  methods as approximations of the Laplace approximation: Wang Y, J Pharmacokinet Pharmacodyn
  2007;34:575-593). With the variance term it reproduces NONMEM 7.4's FOCE-I OFV of the pheno
  example to 1e-8
  (tests/assimilation/test_objective.py; without it the value is 1.6 lower). Censored
  readings have no Gaussian scale: use "laplace" or "importance" for them;
* ``"laplace"``: the same with the exact Hessian, log|½ ∇²φ_i(η̂)| (NONMEM's LAPLACIAN);
* ``"importance"``: L_i by importance sampling from a multivariate t (ν = 4 degrees of freedom)
  centred at η̂ with the FOCE-I curvature as its scale matrix: unbiased for L_i and exact as
  the number of samples grows, the check of the two approximations; with its Monte Carlo
  standard error (delta method).

Convention, as NONMEM reports its OFV ("OBJECTIVE FUNCTION VALUE WITHOUT CONSTANT"): the value
leaves out N log 2π, N the number of normally distributed readings (censored ones are not);
``Objective.with_constant`` adds it. Each reading counts fully: an analyte's
``persistence_h`` (a tempering the filters use for correlated sensor errors) is not applied.
Predictions and derivatives are computed in float64 with JAX (forward and reverse mode through
the model's own dynamics).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.scipy.special import gammaln

from .dosing import Dose, DoseTable
from .events import CovariateChange, Reading, Reset, SensorChange, SteadyState, bucket, sort_events
from .model import Model
from .simulate import predict_readings
from .structure import LinearCompartments, modes_with_derivatives

__all__ = ["METHODS", "IndividualObjective", "Objective", "objective"]

METHODS = ("focei", "laplace", "importance")
LOG_2PI = math.log(2.0 * math.pi)
DEGREES_OF_FREEDOM = 4.0  # of the importance sampler's multivariate t: tails heavier than the posterior's


class IndividualObjective(NamedTuple):
    """One patient's −2 log L_i (without the constant), its η̂ (free entries) and whether the
    mode was found (gradient of φ below 1e-4 and a positive-definite curvature)."""

    id: object
    value: float
    n_readings: int  # normally distributed readings, the N of the N log 2π constant
    eta: np.ndarray
    converged: bool
    standard_error: float = 0.0


class Objective(NamedTuple):
    """Σ_i −2 log L_i without N log 2π (NONMEM's OFV convention), per method."""

    method: str
    value: float
    n_readings: int
    individuals: tuple[IndividualObjective, ...]
    standard_error: float = 0.0  # Monte Carlo standard error ("importance"); 0 for the approximations

    @property
    def constant(self) -> float:
        """N log 2π."""
        return self.n_readings * LOG_2PI

    @property
    def with_constant(self) -> float:
        return self.value + self.constant

    @property
    def converged(self) -> bool:
        return all(i.converged for i in self.individuals)


def objective(model: Model, patients: Sequence, method: str = "focei", *, samples: int = 10_000, seed: int = 0) -> Objective:
    """The objective of ``model`` at its own parameter values on ``patients`` (records with
    ``id``, ``covariates`` and ``events``: doses, readings, covariate changes, e.g.
    :class:`~assimilation.replay.PatientRecord`). ``samples``, ``seed``: of "importance"."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if model.occasions is not None:
        raise ValueError(f"model {model.name!r} has inter-occasion variability, which the objective does not integrate over")
    data = [_patient_data(model, record) for record in patients]
    data = [(record, d) for record, d in zip(patients, data) if d is not None]
    if not data:
        raise ValueError("no patient has a reading: the objective is empty")
    arrays = _pad([d for _, d in data])
    kernels = _kernels(model)
    omega = np.asarray(model.population.omega, np.float64)[np.ix_(kernels.free, kernels.free)]
    rng = np.random.default_rng(seed)
    individuals = []
    with jax.enable_x64(True):
        precision = jnp.asarray(np.linalg.inv(omega)) if kernels.free.size else jnp.zeros((0, 0))
        log_det_omega = float(np.linalg.slogdet(omega)[1]) if kernels.free.size else 0.0
        for i, (record, d) in enumerate(data):
            patient = jax.tree_util.tree_map(lambda a: jnp.asarray(a[i]), arrays)
            if method == "focei" and d.n_censored:
                raise ValueError(f"patient {record.id!r}: {d.n_censored} censored reading(s) have no Gaussian scale for FOCE-I; "
                                 "use method 'laplace' or 'importance'")
            individuals.append(_individual(kernels, method, record.id, patient, d.n_normal, precision, log_det_omega, samples, rng))
    total_se = math.sqrt(sum(i.standard_error**2 for i in individuals))
    return Objective(method, float(sum(i.value for i in individuals)), sum(i.n_readings for i in individuals), tuple(individuals), total_se)


# ----------------------------------------------------------------------------- one patient's data


class _PatientData(NamedTuple):
    """One patient's arrays before padding (float64, model indices)."""

    start: float
    dose_time: np.ndarray
    dose_amount: np.ndarray
    dose_duration: np.ndarray
    dose_compartment: np.ndarray
    grid: np.ndarray  # increasing times at which the state is needed (readings, covariate changes)
    log_mean: np.ndarray  # (G, p): prior mean of log θ over the interval that ends at grid[g]
    reading_grid: np.ndarray
    reading_value: np.ndarray
    reading_analyte: np.ndarray
    reading_censored: np.ndarray
    n_normal: int
    n_censored: int


def _patient_data(model: Model, record) -> _PatientData | None:
    """The arrays of one record, or None for a patient without readings (L_i = 1)."""
    events = sort_events(record.events)
    stray = [e for e in events if isinstance(e, (SensorChange, Reset, SteadyState))]
    if stray:
        what = {SensorChange: "sensor changes", Reset: "resets", SteadyState: "steady-state doses"}[type(stray[0])]
        raise ValueError(f"patient {record.id!r}: the objective does not take {what} (t = {stray[0].time} h)")
    doses = [e for e in events if isinstance(e, Dose)]
    readings = [e for e in events if isinstance(e, Reading)]
    changes = [e for e in events if isinstance(e, CovariateChange)]
    if not readings:
        return None
    for reading in readings:
        if not math.isfinite(reading.value):
            raise ValueError(f"patient {record.id!r}: reading at t = {reading.time} h has value {reading.value!r}")
    for dose in doses:
        if dose.amount < 0 or dose.duration < 0:
            raise ValueError(f"patient {record.id!r}: dose with negative amount or duration: {dose!r}")
    grid = np.array(sorted({float(e.time) for e in readings + changes}), np.float64)
    start = min([float(d.time) for d in doses] + [float(grid[0])])
    covariates = model.check_covariates(dict(record.covariates))
    log_mean, previous, pending = [], start, list(changes)
    for t in grid:  # the interval (previous, t] has the covariates of the changes made by its start
        while pending and pending[0].time <= previous:
            covariates = {**covariates, **model.check_covariates(dict(pending.pop(0).values), partial=True)}
        log_mean.append(model.prior_mean(covariates))
        previous = float(t)
    censored = np.array([bool(r.censored) for r in readings])
    return _PatientData(
        start=start,
        dose_time=np.array([d.time for d in doses], np.float64), dose_amount=np.array([d.amount for d in doses], np.float64),
        dose_duration=np.array([d.duration for d in doses], np.float64),
        dose_compartment=np.array([model.compartment_index(d.compartment) for d in doses], np.int32),
        grid=grid, log_mean=np.array(log_mean, np.float64),
        reading_grid=np.searchsorted(grid, [float(r.time) for r in readings]).astype(np.int32),
        reading_value=np.array([r.value for r in readings], np.float64),
        reading_analyte=np.array([model.analyte_index(r.analyte) for r in readings], np.int32),
        reading_censored=censored, n_normal=int((~censored).sum()), n_censored=int(censored.sum()),
    )


class _Arrays(NamedTuple):
    """Every patient's data padded to common shapes (P, ...): doses of amount 0, grid points
    repeating the last (steps of zero length), readings with ``reading_valid`` False."""

    start: np.ndarray
    dose_time: np.ndarray
    dose_amount: np.ndarray
    dose_duration: np.ndarray
    dose_compartment: np.ndarray
    grid: np.ndarray
    log_mean: np.ndarray
    reading_grid: np.ndarray
    reading_value: np.ndarray
    reading_analyte: np.ndarray
    reading_censored: np.ndarray
    reading_valid: np.ndarray


def _pad(data: list[_PatientData]) -> _Arrays:
    K = bucket(max(max(d.dose_time.size for d in data), 1))
    G = bucket(max(d.grid.size for d in data))
    J = bucket(max(d.reading_value.size for d in data))

    def fill(values, size, pad):
        return np.concatenate([values, np.full((size - values.shape[0], *values.shape[1:]), pad, values.dtype)])

    def last(values, size):  # repeat the last entry (grid times, prior means)
        return np.concatenate([values, np.repeat(values[-1:], size - values.shape[0], axis=0)])

    rows = [_Arrays(
        start=np.float64(d.start), dose_time=fill(d.dose_time, K, d.start), dose_amount=fill(d.dose_amount, K, 0.0),
        dose_duration=fill(d.dose_duration, K, 0.0), dose_compartment=fill(d.dose_compartment, K, 0),
        grid=last(d.grid, G), log_mean=last(d.log_mean, G),
        reading_grid=fill(d.reading_grid, J, 0), reading_value=fill(d.reading_value, J, 1.0),
        reading_analyte=fill(d.reading_analyte, J, 0), reading_censored=fill(d.reading_censored, J, False),
        reading_valid=fill(np.ones(d.reading_value.size, bool), J, False),
    ) for d in data]
    return _Arrays(*(np.stack(column) for column in zip(*rows)))


# ----------------------------------------------------------------------------- the jitted pieces


class _Kernels(NamedTuple):
    free: np.ndarray  # indices of the free (random) entries of the log-parameter vector
    phi_and_gradient: object  # (η, patient, precision) -> (φ, ∇φ)
    phi_hessian: object  # (η, patient, precision) -> ∇²φ
    curvature: object  # (η, patient, precision) -> FOCE-I's Ω⁻¹ + expected information
    phi_of_samples: object  # (η (M, f), patient, precision) -> φ (M,)


def _prepare(model: Model, params: dict):
    """The dynamics' per-θ cache; a general linear model's through an eigensolver JAX can
    differentiate (its default one is not, for n > 2)."""
    dynamics = model.dynamics
    if isinstance(dynamics, LinearCompartments) and type(dynamics).prepare is LinearCompartments.prepare:
        return modes_with_derivatives(dynamics.rate_matrix(params))
    return dynamics.prepare(params)


@functools.lru_cache(maxsize=None)
def _kernels(model: Model) -> _Kernels:
    free = np.flatnonzero(model.population.random_mask())
    errors = [analyte.error for analyte in model.analytes]

    def by_analyte(per_error, analyte):
        """per_error(error) (J,) for the error of each reading's own analyte."""
        values = jnp.stack([per_error(error) for error in errors])
        return jnp.take_along_axis(values, analyte[None, :], axis=0)[0]

    def predictions(eta, patient: _Arrays):
        """Expected value of every reading, (J,), for the free random effects ``eta``."""
        log_params = patient.log_mean.at[:, free].add(eta)
        table = DoseTable(patient.dose_time, patient.dose_amount, patient.dose_duration, patient.dose_compartment,
                          jnp.ones(patient.dose_time.shape, bool), jnp.int32(patient.dose_time.shape[0]))

        def step(carry, inputs):
            amounts, t0, fresh = carry
            t1, lp = inputs
            params = model.parameters(lp)
            F, lag = model.dose_attributes(params, jnp.float64)
            amounts = model.dynamics.propagate(params, _prepare(model, params), amounts, t0, t1, table._replace(fresh=fresh), F, lag)
            return (amounts, t1, jnp.zeros_like(fresh)), predict_readings(model, params, amounts)

        start = (model.amounts_at_start(jnp.float64), patient.start, table.fresh)
        _, expected = jax.lax.scan(step, start, (patient.grid, log_params))  # (G, A)
        return expected[patient.reading_grid, patient.reading_analyte]

    def data_term(eta, patient: _Arrays):
        """−2 Σ_j log p(y_j | η) over the valid readings (censored: log P(Y < LLOQ))."""
        f = predictions(eta, patient)
        y = patient.reading_value
        density = by_analyte(lambda e: e.log_likelihood(y, f), patient.reading_analyte)
        below = by_analyte(lambda e: e.log_cdf(y, f), patient.reading_analyte)
        log_p = jnp.where(patient.reading_censored, below, density)
        return -2.0 * jnp.sum(jnp.where(patient.reading_valid, log_p, 0.0))

    def phi(eta, patient, precision):
        return data_term(eta, patient) + eta @ precision @ eta

    def gaussian_view(eta, patient):
        """Mean m and variance V of every reading on its error's Gaussian scale, (J,) each."""
        f = predictions(eta, patient)
        m = by_analyte(lambda error: error.transform(f), patient.reading_analyte)
        return m, by_analyte(lambda error: error.variance(m), patient.reading_analyte)

    def curvature(eta, patient, precision):
        """Ω⁻¹ + Σ_j [g_j g_jᵀ / V_j + ½ d_j d_jᵀ / V_j²], g = ∂m/∂η, d = ∂V/∂η: the expected
        information about η of the readings (FOCE-I's Hessian), positive definite."""
        (_, variance), (G, D) = gaussian_view(eta, patient), jax.jacfwd(gaussian_view)(eta, patient)
        weight = jnp.where(patient.reading_valid, 1.0 / variance, 0.0)
        return precision + (G * weight[:, None]).T @ G + 0.5 * (D * (weight * weight)[:, None]).T @ D

    return _Kernels(
        free=free,
        phi_and_gradient=jax.jit(jax.value_and_grad(phi)),
        phi_hessian=jax.jit(jax.hessian(phi)),
        curvature=jax.jit(curvature),
        phi_of_samples=jax.jit(jax.vmap(phi, in_axes=(0, None, None))),
    )


# ----------------------------------------------------------------------------- one patient's objective


def _individual(kernels: _Kernels, method: str, patient_id, patient: _Arrays, n_normal: int, precision, log_det_omega: float,
                samples: int, rng: np.random.Generator) -> IndividualObjective:
    constant = n_normal * LOG_2PI
    f = kernels.free.size
    if f == 0:  # nothing varies between patients: L_i = p(y_i) exactly
        value, _ = kernels.phi_and_gradient(jnp.zeros(0), patient, precision)
        return IndividualObjective(patient_id, float(value) - constant, n_normal, np.zeros(0), True)
    eta, phi_hat, converged = _mode(kernels, patient, precision, f)
    if method == "laplace":
        curvature = 0.5 * np.asarray(kernels.phi_hessian(jnp.asarray(eta), patient, precision))
    else:  # FOCE-I's, also the importance sampler's scale: positive definite by construction
        curvature = np.asarray(kernels.curvature(jnp.asarray(eta), patient, precision))
    sign, log_det = np.linalg.slogdet(0.5 * (curvature + curvature.T))
    converged = converged and sign > 0
    if method != "importance":
        value = phi_hat + log_det_omega + log_det if sign > 0 else math.nan
        return IndividualObjective(patient_id, value - constant, n_normal, eta, bool(converged))
    if sign <= 0:
        raise ValueError(f"patient {patient_id!r}: the curvature at the mode is not positive definite; no proposal for importance sampling")
    minus_two_log_l, se = _importance(kernels, patient, precision, log_det_omega, eta, curvature, samples, rng)
    return IndividualObjective(patient_id, minus_two_log_l - constant, n_normal, eta, bool(converged), se)


def _mode(kernels: _Kernels, patient, precision, f: int) -> tuple[np.ndarray, float, bool]:
    """η̂ = argmin φ from η = 0 (the prior mode), by BFGS with exact gradients, polished by
    Newton steps on the exact Hessian; converged when |∇φ| < 1e-4."""

    def fun(x):
        value, gradient = kernels.phi_and_gradient(jnp.asarray(x), patient, precision)
        return float(value), np.asarray(gradient, np.float64)

    result = scipy.optimize.minimize(fun, np.zeros(f), jac=True, method="BFGS", options={"gtol": 1e-8, "maxiter": 500})
    eta, (value, gradient) = result.x, fun(result.x)
    for _ in range(3):
        hessian = np.asarray(kernels.phi_hessian(jnp.asarray(eta), patient, precision))
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            break
        candidate = fun(eta - step)
        if not candidate[0] <= value:
            break
        eta, (value, gradient) = eta - step, candidate
    return eta, value, bool(np.isfinite(value) and np.max(np.abs(gradient)) < 1e-4)


def _importance(kernels: _Kernels, patient, precision, log_det_omega: float, eta, curvature, samples: int,
                rng: np.random.Generator) -> tuple[float, float]:
    """−2 log L̂_i with the N log 2π constant, and its Monte Carlo standard error."""
    f = eta.size
    nu = DEGREES_OF_FREEDOM
    scale = np.linalg.inv(curvature)
    root = np.linalg.cholesky(0.5 * (scale + scale.T))
    z = rng.standard_normal((samples, f))
    u = rng.chisquare(nu, samples)
    draws = eta + (z @ root.T) / np.sqrt(u / nu)[:, None]
    phi = np.asarray(kernels.phi_of_samples(jnp.asarray(draws), patient, precision), np.float64)
    log_joint = -0.5 * phi - 0.5 * f * LOG_2PI - 0.5 * log_det_omega  # log p(y | η) + log N(η; 0, Ω)
    quadratic = np.einsum("mi,ij,mj->m", draws - eta, curvature, draws - eta)
    log_proposal = (float(gammaln((nu + f) / 2) - gammaln(nu / 2)) - 0.5 * f * math.log(nu * math.pi)
                    + 0.5 * np.linalg.slogdet(curvature)[1] - 0.5 * (nu + f) * np.log1p(quadratic / nu))
    log_w = log_joint - log_proposal
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)  # a draw whose prediction failed carries no weight
    top = np.max(log_w)
    w = np.exp(log_w - top)
    log_l = top + math.log(w.mean())
    se = 2.0 * float(w.std(ddof=1) / (w.mean() * math.sqrt(samples)))
    return -2.0 * log_l, se
