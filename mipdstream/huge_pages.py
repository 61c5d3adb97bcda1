"""Process setting for large filter batches: glibc's malloc asked for transparent huge pages.

XLA's CPU runtime takes each kernel's temporaries from ``malloc``: at 10,000 patients × 1,000
particles a particle-filter step uses 0.5-1 GB of them, a resampling of every patient 0.5 GB.
glibc serves allocations that large with ``mmap`` and unmaps them on ``free``, so every kernel
call touches its temporaries as new pages. In ``benchmarks/assimilation.py --quick`` (40,000
patient-updates of the particle filter) that is 810,000 page faults of 4 KiB and 2.4-2.8 s of
kernel time per run, more than the 1.9-2.2 s of user time. With glibc's ``glibc.malloc.hugetlb=1``
tunable, malloc marks its mappings for transparent huge pages: a fault then maps 2 MiB,
and at 10,000 patients the benchmark's runs took 0.7-0.9 of the time (docs/BENCHMARKS.md).

It reads the process environment and the kernel's setting under /sys, so it lives in the
service's shell, not in the pure numerics of ``assimilation``.

Two alternatives were measured and not taken. Keeping freed memory in the heap (``mallopt``:
one arena, no ``mmap`` chunks, no trim) removes the faults altogether and was faster still,
but small long-lived allocations split the freed holes: 2.1-2.8 GB peak resident where the
live heap peaked at ~1.4 GB (the 2 GB memory target failed). Running the patients of a batch
in chunks (``lax.map`` with a batch size) cut the temporaries to ~0.2 GB but cost 50 % more
CPU time per step.

A tunable is read when the process starts, so it must be in the environment of the process
that runs JAX: :func:`huge_page_environment` adds it to an environment, the ``mipd`` command
restarts itself with it (``mipdstream.runtime.restart_with_huge_page_malloc``), and the
assimilation benchmark starts its measuring processes with it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

__all__ = ["HUGE_PAGE_TUNABLE", "huge_page_environment", "huge_page_malloc_available", "huge_page_malloc_requested"]

HUGE_PAGE_TUNABLE = "glibc.malloc.hugetlb=1"
"""madvise(MADV_HUGEPAGE) on malloc's mappings (glibc ≥ 2.35)."""

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_page_malloc_available() -> bool:
    """Whether the tunable can take effect here: Linux, glibc ≥ 2.35, transparent huge pages
    not switched off (``never``) by the kernel's setting."""
    if platform.system() != "Linux":
        return False
    libc, version = platform.libc_ver()
    if libc != "glibc" or tuple(int(part) for part in version.split(".")[:2]) < (2, 35):
        return False
    try:
        return "[never]" not in THP_SETTING.read_text()
    except OSError:
        return False


def huge_page_malloc_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``environ`` already says anything about ``glibc.malloc.hugetlb`` (a user's own
    setting, 0 included, is left as it is)."""
    return "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", "")


def huge_page_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """A copy of ``environ`` whose ``GLIBC_TUNABLES`` asks malloc for huge pages (other tunables kept)."""
    env = dict(environ)
    if huge_page_malloc_requested(env):
        return env
    tunables = [part for part in env.get("GLIBC_TUNABLES", "").split(":") if part]
    env["GLIBC_TUNABLES"] = ":".join([*tunables, HUGE_PAGE_TUNABLE])
    return env
