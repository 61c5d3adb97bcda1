"""`mipd objective`: a model's objective on a NONMEM-style dataset at the model's own values.

The dataset is read as `mipd replay` reads it (:func:`mipdstream.replay.read_nonmem_csv`); the
numbers are :func:`assimilation.objective.objective`'s: −2 log-likelihood without N log 2π,
the convention of NONMEM's reported OFV, so that a model file written from a NONMEM run can be
checked against the OFV in its .lst file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from assimilation import load_model
from assimilation.objective import METHODS, objective

__all__ = ["objective_command"]

LABELS = {"focei": "FOCE-I", "laplace": "Laplace", "importance": "importance sampling"}


def objective_command(data: Path, model: str, methods: Sequence[str] = ("focei", "importance"), samples: int = 10_000,
                      seed: int = 0, ignore: Sequence[str] = ()) -> dict[str, float]:
    """Print and return each method's objective (method -> value) of ``model`` on ``data``;
    ``ignore``: columns to leave out, as for `mipd replay`."""
    from mipdstream.replay import read_nonmem_csv

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    chosen = load_model(model)
    patients = read_nonmem_csv(Path(data), chosen, ignore=ignore)
    results = {method: objective(chosen, patients, method, samples=samples, seed=seed) for method in methods}
    first = next(iter(results.values()))
    print(f"{chosen.name} on {Path(data).name}: {len(patients)} patients, {first.n_readings} normally distributed readings (N); "
          f"values are -2 log-likelihood without the constant N log(2 pi) (here {first.constant:.6f}), as NONMEM reports its OFV")
    for method, result in results.items():
        spread = f" +/- {result.standard_error:.3f} (Monte Carlo SE, {samples} samples per patient)" if method == "importance" else ""
        print(f"  {LABELS[method]:<20} {result.value:.6f}{spread}   (with the constant: {result.with_constant:.6f})")
        stuck = [i.id for i in result.individuals if not i.converged]
        if stuck:
            print(f"  warning ({LABELS[method]}): no converged mode for patients {stuck[:10]}{' ...' if len(stuck) > 10 else ''}")
    return {method: result.value for method, result in results.items()}
