"""Shared helpers: load a library model by path (until it is registered as a built-in),
simulate one parameter vector, run a few particle-filter updates."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from assimilation import Dose, load_model
from assimilation.dosing import empty_dose_table
from assimilation.parameters import prior_mean
from assimilation.simulate import Course, amounts_after, amounts_at, dose_table_of, predict_readings

MODELS = Path(__file__).resolve().parents[2] / "assimilation" / "models"


def library_model(name: str):
    return load_model(MODELS / f"{name}.py")


def typical_log_params(model, covariates: dict, dtype=jnp.float32):
    return jnp.asarray(prior_mean(model.population, covariates), dtype)


@functools.partial(jax.jit, static_argnums=0)
def _simulate(model, log_params, table, times):
    amounts = amounts_at(model, log_params, table, times)
    params = model.parameters(log_params)
    return jax.vmap(lambda x: predict_readings(model, params, x))(amounts), amounts


def readings(model, log_params, doses, times, dtype=jnp.float32):
    """Expected readings of every analyte, shape (T, A), and the amounts (T, n)."""
    values, amounts = _simulate(model, log_params, dose_table_of(model, doses, dtype=dtype), jnp.asarray(times, dtype))
    return np.asarray(values), np.asarray(amounts)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _superpose(model, log_params, starts, amounts, durations, compartment, times):
    def one(start, amount, duration):  # the dose's own response: from no drug and no sensor state
        table = dose_table_of(model, [Dose(0.0, 1.0, compartment, 1.0)])
        table = table._replace(amount=table.amount * amount, duration=table.duration * duration)
        shifted = times - start
        empty = Course(jnp.zeros(model.n_compartments, times.dtype), jnp.minimum(shifted[0], 0.0), table)
        return amounts_after(model, log_params, empty, shifted)[1]

    # plus the free course of the start state from time zero (e.g. a sensor's decaying gain)
    free = amounts_at(model, log_params, empty_dose_table(1, times.dtype), times)
    return free + jnp.sum(jax.vmap(one)(starts, amounts, durations), axis=0)


def linear_readings(model, log_params, doses, times, dtype=jnp.float32):
    """As :func:`readings`, by superposing single-dose responses: exact for a linear model
    and compiled once whatever the number of doses (the engine unrolls its dose slots)."""
    compartments = {model.compartment_index(d.compartment) for d in doses}
    assert len(compartments) == 1, "one dose compartment"
    columns = [jnp.asarray([getattr(d, f) for d in doses], dtype) for f in ("time", "amount", "duration")]
    amounts = _superpose(model, log_params, *columns, compartments.pop(), jnp.asarray(times, dtype))
    params = model.parameters(log_params)
    values = jax.vmap(lambda x: predict_readings(model, params, x))(amounts)
    return np.asarray(values), np.asarray(amounts)


def population_draws(model, covariates: dict, n: int, seed: int = 0):
    """n log-parameter vectors from the model's prior (numpy, float32)."""
    mean = prior_mean(model.population, covariates)
    z = np.random.default_rng(seed).standard_normal((n, model.n_parameters))
    return (mean + z @ model.population.omega_sqrt().T).astype(np.float32)
