"""Reproducibility records: what a recommendation or an alert was computed from.

Replaying the same data through the same model version with the same filter settings and
seed reproduces the filter's posterior bit for bit (``assimilation.online``), hence the same
recommendation; the record names each of those inputs:

* ``model_id`` and ``model_hash`` — SHA-256 of the model's population (names, typical values,
  Ω, covariate effects), structure (compartments, dose compartment, the source code of the
  module that defines the model where it can be read) and analytes (names, units, residual
  error models, LLOQs);
* ``data_hash`` — SHA-256 of the canonical JSON of every dose and reading seen, sorted;
* ``filter_settings`` — canonical JSON of the method and its options; ``seed``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from typing import Any, Iterable, NamedTuple

import numpy as np

from assimilation import Model

__all__ = ["Provenance", "model_hash", "data_hash", "settings_json", "provenance"]


class Provenance(NamedTuple):
    model_id: str
    model_hash: str
    data_hash: str
    filter_settings: str  # canonical JSON
    seed: int

    def as_dict(self) -> dict:
        return self._asdict()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    """JSON-able form: arrays as nested lists of repr-exact floats, tuples as lists."""
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return repr(value)


def _module_source(model: Model) -> str:
    try:
        return inspect.getsource(inspect.getmodule(model.dynamics.rate_matrix if hasattr(model.dynamics, "rate_matrix") else model.dynamics.vector_field))
    except (TypeError, OSError, AttributeError):
        return ""


@functools.lru_cache(maxsize=None)  # a loaded model does not change; its source is read once
def model_hash(model: Model) -> str:
    """Version hash of a model: parameters, structure, analytes and defining source."""
    pop = model.population
    description = {
        "name": model.name,
        "population": {"names": list(pop.names), "typical": _plain(np.asarray(pop.typical, np.float64)),
                       "omega": _plain(np.asarray(pop.omega, np.float64)), "effects": [repr(e) for e in pop.effects]},
        "compartments": list(model.compartments),
        "dose_compartment": model.dose_compartment,
        "dynamics": type(model.dynamics).__name__,
        "analytes": [{"name": a.name, "unit": a.unit, "error": repr(a.error), "lloq": a.lloq} for a in model.analytes],
        "source": _module_source(model),
    }
    return _sha256(json.dumps(description, sort_keys=True))


def data_hash(events: Iterable[Any]) -> str:
    """SHA-256 of the sorted canonical JSON of events (NamedTuples such as ``Dose`` and
    ``Reading``, or dicts); independent of the order they arrived in."""
    rows = []
    for event in events:
        body = event._asdict() if hasattr(event, "_asdict") else dict(event)
        rows.append(json.dumps({"type": type(event).__name__, **_plain(body)}, sort_keys=True))
    return _sha256("\n".join(sorted(rows)))


def settings_json(method: str, options: Any) -> str:
    body = options._asdict() if hasattr(options, "_asdict") else dict(options or {})
    return json.dumps({"method": method, "options": _plain(body)}, sort_keys=True)


def provenance(model: Model, events: Iterable[Any], method: str, options: Any, seed: int) -> Provenance:
    return Provenance(model.name, model_hash(model), data_hash(events), settings_json(method, options), int(seed))
