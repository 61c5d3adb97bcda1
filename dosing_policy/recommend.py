"""Regimen recommendation: the practical regimen with the highest expected utility.

For candidate c and target windows w (days after the decision, each ``metric.window`` long):

    U_c = Σ_w ω_w · [ P(low ≤ m_cw ≤ high) − λ · P(m_cw > toxic_above) ] / Σ_w ω_w

with probabilities over the posterior particles. Maximising the probability of landing in
range, rather than minimising squared distance to the middle, is what worked on the skewed
AUC posterior (FIELD-NOTES, "Dosing decisions"); forecasts run from the current state.
Among candidates within ``tie`` of the best utility the lowest daily dose wins.

Everything is vectorised over particles and candidates (one jitted call per patient; a
batch of patients goes through ``lax.map``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from assimilation import Dose, Model
from assimilation.dosing import DoseTable

from .attainment import LEVELS, Attainment, attainment
from .forecast import (Grid, analyte_is_linear, forecast, history_table, is_linear, linear_functional_modal, linear_functional_of_candidates,
                       shape_steps,
                       plan_regimens, superposed_components, superposed_values)
from .metrics import Target
from .regimen import Regimen, RegimenSpace, candidate_regimens
from .sample import PosteriorSample, for_new_occasion, normalised_weights

__all__ = ["Utility", "Evaluation", "Recommendation", "evaluate", "recommend", "evaluate_patients", "utility_of"]


class Utility(NamedTuple):
    """Window starts (h after the decision), their weights ω, the toxicity weight λ and the
    utility margin within which the lower daily dose is preferred.

    Default: the next 24 h (weight 1, the choice measured in FIELD-NOTES) and the 24 h after
    it (weight 0.5, so that a loading dose that fits day 1 cannot hide an overshoot on day 2
    if no new level arrives); λ = 1 counts P(AUC > 600) once more as a penalty. These are
    operating choices to be checked in the closed-loop benchmark, not clinical evidence."""

    windows: tuple[float, ...] = (0.0, 24.0)
    weights: tuple[float, ...] = (1.0, 0.5)
    toxicity_weight: float = 1.0
    tie: float = 1e-3
    expected: bool = False  # score E[metric] in place of PTA: for metrics that are themselves a fraction (time in range)


class Evaluation(NamedTuple):
    regimens: tuple[Regimen, ...]
    windows: tuple[float, ...]
    attainment: Attainment  # fields shaped (C, W) and quantiles (C, W, Q)
    utility: Float[Array, " C"]


class Recommendation(NamedTuple):
    regimen: Regimen
    utility: float
    pta: tuple[float, ...]  # per window
    risk: tuple[float, ...]
    median: tuple[float, ...]  # metric median per window
    current: Regimen | None
    current_utility: float | None
    current_pta: tuple[float, ...] | None
    current_risk: tuple[float, ...] | None
    current_median: tuple[float, ...] | None
    evaluation: Evaluation
    record: object = None  # provenance.Provenance

    @property
    def gain(self) -> float:
        return self.utility - (self.current_utility if self.current_utility is not None else 0.0)


def utility_of(result: Attainment, utility: Utility) -> Float[Array, "... C"]:
    """U_c = Σ_w ω_w (PTA_cw − λ·risk_cw) / Σ_w ω_w, with E[m_cw] in place of PTA_cw when
    ``utility.expected`` (a time-in-range metric: PTA = P(TTR ≥ x) is flat at 0 while the
    INR cannot be back in range within the window, the expected TTR still ranks the doses)."""
    return _utility_jit(result.mean if utility.expected else result.pta, result.risk, utility)


@functools.partial(jax.jit, static_argnums=2)  # one fused call, not five eager ops per evaluation
def _utility_jit(pta, risk, utility: Utility):
    w = jnp.asarray(utility.weights, pta.dtype)
    return jnp.sum((pta - utility.toxicity_weight * risk) * w, axis=-1) / jnp.sum(w)


def _summarise(target: Target, windows, levels, times, values, weights) -> Attainment:
    """(C, N, T) trajectories -> attainment per (C, W)."""
    t0 = times[0]
    metric = jnp.stack([target.metric(times, values, t0 + start) for start in windows], axis=1)  # (C, W, N)
    return attainment(metric, weights, target, levels)


def _superposed_metric(model: Model, analyte: int, target: Target, windows: tuple, steps, step, sample, history, plan, offsets):
    """Metric (C, W, N) of a linear metric of a linear analyte: m(free) + a·m(train) per
    candidate, with the metric as grid weights (the metric applied to the unit vectors)."""
    times = sample.time + offsets
    basis = jnp.eye(offsets.shape[0], dtype=offsets.dtype)
    weights = jnp.stack([target.metric(times, basis, sample.time + w) for w in windows], axis=1)  # (T, W)
    if steps is not None:  # here: the duration of each train in grid steps
        return linear_functional_modal(model, analyte, steps, step, sample, history, plan, offsets, weights)
    parts = superposed_components(model, analyte, sample, history, plan, offsets, True, True, None, step)
    return linear_functional_of_candidates(parts, plan, weights)


def _linear_pipeline(model: Model, analyte: int, target: Target, windows: tuple, steps, step, levels, sample, history, plan, offsets) -> Attainment:
    """``steps``: each train's duration in grid steps (:func:`.forecast.shape_steps`) or None."""
    weights = normalised_weights(sample.log_weights)
    if getattr(target.metric, "linear", False) and analyte_is_linear(model, analyte):
        metric = _superposed_metric(model, analyte, target, windows, steps, step, sample, history, plan, offsets)
        return attainment(metric, weights, target, levels)
    values = superposed_values(model, analyte, sample, history, plan, offsets, True, None, step)
    return _summarise(target, windows, levels, sample.time + offsets, values, weights)


@functools.lru_cache(maxsize=None)
def _pipeline_jit(model: Model, analyte: int, target: Target, windows: tuple, steps, step: float, levels):
    return jax.jit(functools.partial(_linear_pipeline, model, analyte, target, windows, steps, step, levels))


@functools.lru_cache(maxsize=None)
def _batch_jit(model: Model, analyte: int, target: Target, windows: tuple, steps, step: float, levels):
    one = functools.partial(_linear_pipeline, model, analyte, target, windows, steps, step, levels)

    def batch(samples, histories, plan, offsets):
        return jax.lax.map(lambda args: one(args[0], args[1], plan, offsets), (samples, histories))

    return jax.jit(batch)


@functools.lru_cache(maxsize=None)
def _summarise_jit(target: Target, windows: tuple, levels):
    return jax.jit(functools.partial(_summarise, target, windows, levels))


def _check_grid(grid: Grid, target: Target, windows) -> None:
    if max(windows) + target.metric.window > grid.horizon + 1e-6:
        raise ValueError(f"the forecast grid ({grid.horizon} h) does not cover the last target window")


def evaluate(model: Model, sample: PosteriorSample, history: Sequence[Dose] | DoseTable, regimens: Sequence[Regimen],
             target: Target, utility: Utility = Utility(), grid: Grid = Grid(), levels: tuple[float, ...] | None = LEVELS) -> Evaluation:
    """PTA, risk and metric quantiles (at ``levels``; None skips them) of every regimen in
    every target window, and U_c."""
    windows = tuple(float(w) for w in utility.windows)
    _check_grid(grid, target, windows)
    analyte = model.analyte_index(target.analyte)
    dtype = sample.amounts.dtype
    sample = for_new_occasion(model, sample, history, min(r.start for r in regimens))
    if is_linear(model):
        plan = plan_regimens(regimens, grid, dtype)
        run = _pipeline_jit(model, analyte, target, windows, shape_steps(model, plan, grid), grid.step, levels)
        result = run(sample, history_table(model, history, dtype, now=float(sample.time)), plan, grid.offsets(dtype))
    else:
        fc = forecast(model, sample, history, regimens, grid, analyte, method="stepping")
        result = _summarise_jit(target, windows, levels)(fc.times, fc.values, fc.weights)
    return Evaluation(tuple(regimens), windows, result, utility_of(result, utility))


def evaluate_patients(model: Model, samples: PosteriorSample, histories: DoseTable, regimens: Sequence[Regimen],
                      target: Target, utility: Utility = Utility(), grid: Grid = Grid(),
                      levels: tuple[float, ...] | None = None) -> tuple[Attainment, Float[Array, "P C"]]:
    """Batch version for linear models: ``samples`` and ``histories`` have a leading patient
    axis; regimens are relative to each patient's own time. Returns attainment (P, C, W) and U (P, C)."""
    if not is_linear(model):
        raise ValueError("evaluate_patients needs linear dynamics; call evaluate per patient")
    windows = tuple(float(w) for w in utility.windows)
    _check_grid(grid, target, windows)
    dtype = samples.amounts.dtype
    samples = for_new_occasion(model, samples, histories, min(r.start for r in regimens))
    plan = plan_regimens(regimens, grid, dtype)
    run = _batch_jit(model, model.analyte_index(target.analyte), target, windows, shape_steps(model, plan, grid), grid.step, levels)
    result = run(samples, histories._replace(fresh=jnp.zeros_like(histories.fresh)), plan, grid.offsets(dtype))
    return result, utility_of(result, utility)


def _best(regimens: Sequence[Regimen], utilities: np.ndarray, tie: float) -> int:
    near = np.flatnonzero(utilities >= utilities.max() - tie)
    return int(min(near, key=lambda i: (regimens[i].daily_dose + regimens[i].first_amount * 1e-6, -utilities[i])))


def recommend(model: Model, sample: PosteriorSample, history: Sequence[Dose] | DoseTable, target: Target,
              space: RegimenSpace | Sequence[Regimen], current: Regimen | None = None, utility: Utility = Utility(),
              grid: Grid = Grid(), record: object = None) -> Recommendation:
    """The best regimen of ``space`` (a :class:`RegimenSpace` or an explicit list), reported
    beside ``current`` (the regimen as it would continue; None before the first dose)."""
    candidates = candidate_regimens(space) if isinstance(space, RegimenSpace) else list(space)
    if not candidates:
        raise ValueError("no practical regimen in the search space")
    regimens = candidates + ([current] if current is not None else [])
    # Linear models: score without quantiles (a sort per candidate), then evaluate the two shown
    # regimens with them. ODE models: one pass with quantiles; their trajectories dominate the
    # cost, and a second, differently shaped call would be a second compilation.
    linear = is_linear(model)
    ev = evaluate(model, sample, history, regimens, target, utility, grid, levels=None if linear else LEVELS)
    best = _best(candidates, np.asarray(ev.utility[: len(candidates)], np.float64), utility.tie)
    shown = [best] + ([len(candidates)] if current is not None else [])
    report = evaluate(model, sample, history, [regimens[i] for i in shown], target, utility, grid) if linear else None
    pick = (lambda a: a) if linear else (lambda a: a[np.asarray(shown)])
    source = report if linear else ev
    u, pta, risk, median = (pick(np.asarray(a, np.float64)) for a in (source.utility, source.attainment.pta, source.attainment.risk,
                                                                        source.attainment.quantiles[..., 1]))
    row = lambda a, i: tuple(float(v) for v in a[i])
    has = current is not None
    return Recommendation(
        candidates[best], float(u[0]), row(pta, 0), row(risk, 0), row(median, 0),
        current, float(u[1]) if has else None, row(pta, 1) if has else None, row(risk, 1) if has else None,
        row(median, 1) if has else None, ev, record,
    )


def assessment_event(recommendation: Recommendation, time: float, target: Target, window: int = 0, lead_h: float = 0.0):
    """The alert machine's :class:`.alerts.AssessmentEvent` for window ``window`` of a
    recommendation (current regimen's PTA, risk and median; the suggested regimen and the
    expected-utility gain of switching), carrying the recommendation's record. ``time``: the
    decision (model h); ``lead_h``: how long after the assessment that is."""
    from .alerts import AssessmentEvent
    from .metrics import describe_metric, describe_pta, describe_window

    rec = recommendation
    if rec.current is None:  # nothing given yet: the assessment is of the recommended regimen
        pta, risk, median, current = rec.pta[window], rec.risk[window], rec.median[window], "none"
    else:
        pta, risk, median, current = rec.current_pta[window], rec.current_risk[window], rec.current_median[window], rec.current.describe()
    conditions = ([f"exceeds {target.toxic_above:g}"] if target.toxic_above is not None else []) + (
        [f"falls below {target.toxic_below:g}"] if target.toxic_below is not None else [])
    later = {}
    if window == 0 and len(rec.pta) > 1:  # the utility also weighed the last window: show it beside the first
        current_pta = rec.current_pta if rec.current is not None else rec.pta
        later = dict(later_from_h=float(rec.evaluation.windows[-1]), later_pta=current_pta[-1], later_recommended_pta=rec.pta[-1])
    return AssessmentEvent(float(time), target.metric.name, target.low, target.high, pta, risk, median, current,
                           rec.regimen.describe(), rec.pta[window], rec.gain, rec.record,
                           target.risk_label or f"{target.metric.name} " + " or ".join(conditions),
                           **later, pta_label=describe_pta(target), window_label=describe_window(target.metric.window),
                           lead_h=float(lead_h), recommended_median=rec.median[window], unit=target.metric.unit,
                           metric_label=describe_metric(target))
