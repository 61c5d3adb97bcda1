"""The online API, one way for every method::

    posterior = init(model, covariates, key, n_particles, method="pf")
    posterior = update(posterior, events)          # doses and readings, times in h
    forecast  = predict(posterior, times, regimen) # quantiles and samples
    blob = to_bytes(posterior); posterior = from_bytes(blob)

A :class:`Posterior` holds a batch of patients (rows padded to a power of two so that the
jitted kernels are shared by batches of similar size). Events/regimens are given per patient
(a list of lists) or, for a one-patient posterior, as a flat list. Same key + same data gives
bit-identical results.
"""

from __future__ import annotations

import io
import json
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import ensemble_kalman, map_estimator, particle_filter, rejuvenation
from .dosing import Dose, DoseTable
from .events import CovariateChange, Reading, Reset, SensorChange, SteadyState, bucket, pack_events, split_at
from .model import Model, load_model
from .occasions import last_dose_times, occasion_starts
from .parameters import as_covariate_list
from .particle_filter import Forecast

__all__ = ["Posterior", "PatientParticles", "init", "update", "rejuvenate", "predict", "particles", "log_evidence", "to_bytes", "from_bytes", "METHODS"]

METHODS = {"pf": particle_filter, "enkf": ensemble_kalman, "map": map_estimator}


class Posterior(NamedTuple):
    method: str
    model: Model
    options: Any  # the method's Options
    state: Any  # the method's state (NamedTuple of arrays, rows padded)
    n_patients: int
    covariates: tuple  # one dict per patient (kept for snapshots and MAP priors)


def _patient_keys(key, n_rows: int, n_patients: int | None = None):
    """One raw (2,) uint32 key per row.

    ``key`` an int or a PRNG key: row i gets fold_in(key, i) — fold_in, not split, so that a
    patient's random stream does not depend on the batch (bucket) size. ``key`` a sequence of
    ints (one seed per patient): row i gets PRNGKey(seed_i), so a patient filtered alone or in
    any batch draws the same numbers.
    """
    if isinstance(key, (list, tuple, np.ndarray)) and np.ndim(key) == 1 and not isinstance(key, jax.Array):
        seeds = [int(k) for k in key]
        if n_patients is not None and len(seeds) != n_patients:
            raise ValueError(f"key: expected one seed per patient ({n_patients}), got {len(seeds)}")
        seeds = seeds + [seeds[0]] * (n_rows - len(seeds))
        return jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    key = jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_rows))


def init(
    model: Model | str,
    covariates: dict | Sequence[dict] | None = None,
    key: int | Sequence[int] | jax.Array = 0,
    n_particles: int = 1000,
    method: str = "pf",
    *,
    time: float = 0.0,
    **options,
) -> Posterior:
    """Prior posterior for one patient (``covariates`` a dict) or many (a list of dicts).

    ``n_particles`` is the number of particles (pf), ensemble members (enkf) or Laplace
    samples used for prediction (map). Extra keyword ``options`` go to the method's Options
    (e.g. ``threshold``, ``discount``, ``dose_slots``, ``dtype="float64"``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    model = load_model(model) if isinstance(model, str) else model
    module = METHODS[method]
    opts = module.Options(n_particles=n_particles, **options)
    patients = as_covariate_list(covariates)
    n_rows = bucket(len(patients))
    if method == "map" and model.occasions is not None:
        raise ValueError(f"model {model.name!r} has inter-occasion variability, which method 'map' does not estimate "
                         "(it would need one κ per occasion in the fit); use 'pf' or 'enkf'")
    means = np.stack([model.prior_mean(c) for c in patients])
    means = np.concatenate([means, np.repeat(means[:1], n_rows - len(patients), axis=0)])
    state = module.initial_state(model, opts, means, _patient_keys(key, n_rows, len(patients)), time)
    return Posterior(method, model, opts, state, len(patients), tuple(patients))


def _per_patient(posterior: Posterior, items, what: str) -> list[list]:
    items = list(items)
    if posterior.n_patients == 1 and all(isinstance(e, _EVENTS) for e in items):
        return [items]
    if len(items) != posterior.n_patients:
        raise ValueError(f"{what}: expected one list per patient ({posterior.n_patients}), got {len(items)}")
    return [list(e) for e in items]


_EVENTS = (Dose, Reading, CovariateChange, SensorChange, Reset, SteadyState)
_CHANGES = (CovariateChange, SensorChange)  # applied between packed steps, patient by patient


def update(posterior: Posterior, events) -> Posterior:
    """Assimilate doses, readings, covariate changes, sensor changes, resets and steady-state
    doses (any order; sorted per patient). All but doses must not be older than the posterior's
    time for that patient (a filter cannot revisit the past)."""
    per_patient = _per_patient(posterior, events, "events")
    now = np.asarray(posterior.state.time)
    what = {Reading: "reading", CovariateChange: "covariate change", SensorChange: "sensor change", Reset: "reset",
            SteadyState: "steady-state dose"}
    for i, patient_events in enumerate(per_patient):
        for event in patient_events:
            if type(event) in what and event.time < now[i] - 1e-6:
                raise ValueError(f"patient {i}: {what[type(event)]} at t={event.time} h is older than the posterior (t={now[i]:.6g} h)")
            if isinstance(event, Reading) and not np.isfinite(event.value):
                raise ValueError(f"patient {i}: reading value {event.value!r} is not finite")
    if any(isinstance(e, _CHANGES) for patient_events in per_patient for e in patient_events):
        return _update_with_changes(posterior, per_patient)
    return _update_events(posterior, per_patient)


def _update_with_changes(posterior: Posterior, per_patient: list[list]) -> Posterior:
    """Rounds of (events up to a covariate or sensor change, the change) across patients: each
    change is applied once the patient's earlier events are assimilated, at its own time."""
    if posterior.method == "map":
        raise ValueError("method 'map' does not take covariate or sensor changes (its prior is fixed per patient and "
                         "its fit replays one history); use 'pf' or 'enkf'")
    segments = [split_at(patient_events, _CHANGES) for patient_events in per_patient]
    covariates = [dict(c) for c in posterior.covariates]
    model = posterior.model
    for r in range(max(len(s) for s in segments)):
        posterior = _update_events(posterior, [s[r][0] if r < len(s) else [] for s in segments])
        changes = [(i, s[r][1]) for i, s in enumerate(segments) if r < len(s) and s[r][1] is not None]
        shifts = [(i, c) for i, c in changes if isinstance(c, CovariateChange)]
        sensors = [(i, c) for i, c in changes if isinstance(c, SensorChange)]
        state = posterior.state
        if shifts:
            deltas = []
            for i, change in shifts:
                new = {**covariates[i], **change.values}
                deltas.append(model.prior_mean(new) - model.prior_mean(covariates[i]))
                covariates[i] = new
            state = particle_filter.shift_parameters(model, state, np.array([i for i, _ in shifts]),
                                                     np.array([float(c.time) for _, c in shifts]), np.stack(deltas))
        if sensors:
            state = particle_filter.restart_sensors(model, state, np.array([i for i, _ in sensors]), np.array([float(c.time) for _, c in sensors]),
                                                    [c.analyte for _, c in sensors], np.stack([model.prior_mean(covariates[i]) for i, _ in sensors]))
        posterior = posterior._replace(state=state, covariates=tuple(covariates))
    return posterior


def _update_events(posterior: Posterior, per_patient: list[list]) -> Posterior:
    dtype = np.dtype(posterior.options.dtype)
    steps = pack_events(posterior.model, per_patient, posterior.state.time.shape[0], dtype)
    module = METHODS[posterior.method]
    state = module.update(posterior.model, posterior.options, posterior.state, steps)
    if hasattr(state, "lost_dose"):
        lost = np.flatnonzero(np.asarray(state.lost_dose)[: posterior.n_patients] & ~np.asarray(posterior.state.lost_dose)[: posterior.n_patients])
        if lost.size:
            raise ValueError(
                f"patients {lost.tolist()}: more doses delivering at once than dose_slots={posterior.options.dose_slots}; "
                "init with a larger dose_slots (the posterior passed in is unchanged)"
            )
    return posterior._replace(state=state)


def rejuvenate(posterior: Posterior, history, moves: int = 5, *, start: float = 0.0, scale: float = 1.0) -> tuple[Posterior, np.ndarray]:
    """Resample-move for a particle-filter posterior (:mod:`.rejuvenation`): resample to equal
    weights, then ``moves`` Metropolis moves of every particle against the exact posterior of
    the whole ``history`` (every dose and reading assimilated since ``init(..., time=start)``).

    Costs ``moves + 1`` replays of the history; use it when the cloud has collapsed (many
    resamplings), not at every reading. Returns (posterior, acceptance rate per patient)."""
    if posterior.method != "pf":
        raise ValueError(f"rejuvenate is for particle-filter posteriors, not {posterior.method!r}")
    per_patient = _per_patient(posterior, history, "history")
    if any(isinstance(e, _CHANGES) for events in per_patient for e in events):
        raise ValueError("rejuvenate does not replay covariate or sensor changes; give a history of doses and readings")
    now = np.asarray(posterior.state.time)[: posterior.n_patients]
    for i, events in enumerate(per_patient):
        last = max([float(e.time) for e in events], default=start)
        if abs(last - now[i]) > 1e-4 * max(1.0, abs(now[i])):
            raise ValueError(f"patient {i}: the history ends at t={last:.6g} h but the posterior is at t={now[i]:.6g} h; "
                             "pass every event assimilated since init")
    n_rows = posterior.state.time.shape[0]
    steps = pack_events(posterior.model, per_patient, n_rows, np.dtype(posterior.options.dtype))
    means = np.stack([posterior.model.prior_mean(c) for c in posterior.covariates])
    means = np.concatenate([means, np.repeat(means[:1], n_rows - len(means), axis=0)])
    state, acceptance = rejuvenation.resample_move(
        posterior.model, posterior.options, posterior.state, steps, np.full(n_rows, start), means, moves, scale,
    )
    return posterior._replace(state=state), acceptance[: posterior.n_patients]


def _regimen_table(posterior: Posterior, regimen) -> DoseTable:
    per_patient = _per_patient(posterior, regimen, "regimen") if len(regimen) else [[] for _ in range(posterior.n_patients)]
    n_rows = posterior.state.time.shape[0]
    slots = bucket(max([len(r) for r in per_patient] + [1]))
    dtype = np.dtype(posterior.options.dtype)
    time, amount, duration = (np.zeros((n_rows, slots), dtype) for _ in range(3))
    compartment = np.zeros((n_rows, slots), np.int32)
    for i, doses in enumerate(per_patient):
        for k, dose in enumerate(doses):
            time[i, k], amount[i, k], duration[i, k] = dose.time, dose.amount, dose.duration
            compartment[i, k] = posterior.model.compartment_index(dose.compartment)
    fresh = np.ones((n_rows, slots), bool)
    return DoseTable(*map(jnp.asarray, (time, amount, duration, compartment, fresh)), jnp.zeros(n_rows, jnp.int32))


def predict(
    posterior: Posterior,
    times,
    regimen: Sequence = (),
    analyte: int | str = 0,
    *,
    observation_noise: bool = False,
    levels: Sequence[float] = (0.05, 0.5, 0.95),
) -> Forecast:
    """Predictive distribution of ``analyte`` at ``times`` (h, ≥ the posterior's time) if
    ``regimen`` (future doses) is given on top of the doses already recorded.

    ``times``: shape (T,) for all patients or (patients, T). ``observation_noise=True``
    predicts a *reading* (adds residual error), otherwise the true concentration.
    Returns a :class:`Forecast` with arrays for the real patients only.
    """
    n_rows = posterior.state.time.shape[0]
    times = np.asarray(times, np.dtype(posterior.options.dtype))
    times = np.broadcast_to(times, (posterior.n_patients, times.shape[-1])) if times.ndim == 1 else times
    if times.shape[0] != posterior.n_patients:
        raise ValueError(f"times: expected {posterior.n_patients} rows, got {times.shape[0]}")
    if np.any(np.diff(times, axis=1) < 0):
        raise ValueError("times must be increasing")
    now = np.asarray(posterior.state.time)[: posterior.n_patients]
    if np.any(times[:, 0] < now - 1e-4):
        raise ValueError("cannot predict before the posterior's time; replay from the start instead")
    padded = np.concatenate([times, np.repeat(times[:1], n_rows - posterior.n_patients, axis=0)])
    module = METHODS[posterior.method]
    table = _regimen_table(posterior, regimen)
    grid, renew, keep = _occasion_grid(posterior, padded, table)
    extra = {} if renew is None else {"renew": jnp.asarray(renew)}
    result = module.forecast(
        posterior.model, posterior.state, jnp.asarray(grid), table,
        posterior.model.analyte_index(analyte), observation_noise, levels, posterior.options, **extra,
    )
    k = posterior.n_patients
    mean, quantiles, samples = result.mean[:k], result.quantiles[:k], result.samples[:k]
    if keep is not None:  # drop the occasion boundaries added to the grid
        columns = keep[:k]
        mean = np.take_along_axis(np.asarray(mean), columns, 1)
        quantiles = np.take_along_axis(np.asarray(quantiles), columns[:, None, :], 2)
        samples = np.take_along_axis(np.asarray(samples), columns[:, None, :], 2)
    return Forecast(jnp.asarray(times), mean, result.levels, quantiles, samples)


def _occasion_grid(posterior: Posterior, times: np.ndarray, table: DoseTable):
    """For an IOV model whose ``regimen`` opens occasions: the forecast grid with each opening
    dose's time merged in (after any forecast time equal to it, so forecasts at a dose time stay
    left limits of the old occasion), the renewal flags, and per row the columns to keep.
    Returns (times, None, None) when nothing opens."""
    occasions = posterior.model.occasions
    if occasions is None:
        return times, None, None
    state = posterior.state
    previous = last_dose_times(np.asarray(state.doses.time), np.asarray(state.doses.amount))
    amount, dose_time = np.asarray(table.amount), np.asarray(table.time, np.float64)
    order = np.argsort(np.where(amount > 0, dose_time, np.inf), axis=1, kind="stable")
    amount, dose_time = np.take_along_axis(amount, order, 1), np.take_along_axis(dose_time, order, 1)
    opens = occasion_starts(occasions, previous, amount > 0, dose_time, amount)
    if not opens.any():
        return times, None, None
    width = int(opens.sum(1).max())
    boundaries = np.repeat(times[:, -1:].astype(np.float64), width, axis=1)
    flags = np.zeros(boundaries.shape, bool)
    for i in np.flatnonzero(opens.any(1)):
        opened = dose_time[i, opens[i]]
        boundaries[i, : opened.size], flags[i, : opened.size] = opened, True
    merged = np.concatenate([times.astype(np.float64), boundaries], axis=1)
    is_boundary = np.concatenate([np.zeros(times.shape, bool), np.ones(boundaries.shape, bool)], axis=1)
    order = np.lexsort((is_boundary, merged), axis=1)
    renew = np.take_along_axis(np.concatenate([np.zeros(times.shape, bool), flags], axis=1), order, 1)
    keep = np.argsort(np.take_along_axis(is_boundary, order, 1), axis=1, kind="stable")[:, : times.shape[1]]
    return np.take_along_axis(merged, order, 1).astype(times.dtype), renew, keep


class PatientParticles(NamedTuple):
    """One patient's weighted sample of the posterior (stable public accessor).

    log_params: (N, p) log θ in the order of ``model.parameter_names`` (population parameters,
    then the current occasion's κ for a model with inter-occasion variability);
    amounts: (N, n) compartment amounts (mg) at ``time``, left limits;
    log_weights: (N,) normalised log-weights (equal for EnKF members and MAP-Laplace draws);
    time: the posterior's time in h (that of the last assimilated event).
    """

    log_params: np.ndarray
    amounts: np.ndarray
    log_weights: np.ndarray
    time: float


def particles(posterior: Posterior, patient: int = 0) -> PatientParticles:
    """The particles of patient ``patient`` (row in the order given to :func:`init`).

    For "map" they are N draws from the Laplace approximation replayed through the patient's
    dose history. Parameters in natural units: ``np.exp(log_params)``; propagate them with
    :mod:`assimilation.simulate`.
    """
    if not 0 <= patient < posterior.n_patients:
        raise IndexError(f"patient {patient} out of range ({posterior.n_patients} patients)")
    state = posterior.state
    if posterior.method == "map":
        state = map_estimator.laplace_particles(posterior.model, posterior.options, state)
    return PatientParticles(
        np.asarray(state.log_params[patient]), np.asarray(state.amounts[patient]),
        np.asarray(state.log_weights[patient]), float(state.time[patient]),
    )


def log_evidence(posterior: Posterior) -> np.ndarray:
    """log p(readings so far) of each patient (P,), float64: the filter's accumulated
    one-step-ahead predictive log-densities (PF: log mean of the unnormalised weights; EnKF:
    its Gaussian predictive) or MAP's Laplace evidence. The change over one reading is that
    reading's one-step-ahead predictive log-likelihood (what replay reports and model
    averaging weighs by)."""
    if posterior.method == "map":
        value = map_estimator.laplace_log_evidence(posterior.model, posterior.state)
    else:
        value = np.asarray(posterior.state.log_evidence, np.float64)
    return value[: posterior.n_patients]


# ----------------------------------------------------------------------------- snapshots


def to_bytes(posterior: Posterior) -> bytes:
    """Serialise a posterior (arrays + method/options/model name/covariates), model excluded."""
    leaves = jax.tree.leaves(posterior.state)
    meta = {
        "method": posterior.method,
        "model": posterior.model.name,
        "options": posterior.options._asdict(),
        "n_patients": posterior.n_patients,
        "covariates": list(posterior.covariates),
    }
    buffer = io.BytesIO()
    arrays = {f"leaf{i}": np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a) for i, a in enumerate(leaves)}
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta, default=str).encode(), np.uint8), **arrays)
    return buffer.getvalue()


def from_bytes(data: bytes, model: Model | str | None = None) -> Posterior:
    """Inverse of :func:`to_bytes`. ``model`` defaults to the built-in/path stored by name."""
    with np.load(io.BytesIO(data)) as archive:
        meta = json.loads(archive["meta"].tobytes().decode())
        leaves = [archive[f"leaf{i}"] for i in range(len(archive.files) - 1)]
    model = load_model(meta["model"] if model is None else model) if not isinstance(model, Model) else model
    if model.name != meta["model"]:
        raise ValueError(f"snapshot is for model {meta['model']!r}, got {model.name!r}")
    module = METHODS[meta["method"]]
    options = module.Options(**meta["options"])
    n_rows = leaves[0].shape[0]
    template = jax.eval_shape(
        lambda: module.initial_state(model, options, np.zeros((n_rows, model.n_parameters)), _patient_keys(0, n_rows), 0.0)
    )
    treedef = jax.tree.structure(template)
    if treedef.num_leaves != len(leaves):
        raise ValueError(
            f"snapshot holds {len(leaves)} arrays, this version's {meta['method']} state {treedef.num_leaves}: "
            "written by another version; rebuild the posterior from the readings"
        )
    # MAP keeps float64 numpy arrays (host-side optimiser); the filters keep device arrays
    convert = np.asarray if meta["method"] == "map" else jnp.asarray
    state = jax.tree.unflatten(treedef, [convert(a) for a in leaves])
    return Posterior(meta["method"], model, options, state, meta["n_patients"], tuple(meta["covariates"]))
