"""glibc's malloc with transparent huge pages for the processes that run large batches."""

import os
import subprocess
import sys
import textwrap

import pytest

from mipdstream.huge_pages import HUGE_PAGE_TUNABLE, huge_page_environment, huge_page_malloc_available, huge_page_malloc_requested

needs_huge_pages = pytest.mark.skipif(not huge_page_malloc_available(), reason="no glibc >= 2.35 with transparent huge pages here")

# Faults of a kernel call that writes a fresh 256 MB output, after a warm-up call: XLA takes the
# buffer from malloc, glibc maps it afresh (and unmaps it when the array is dropped).
FAULTS_PER_CALL = textwrap.dedent("""
    import resource
    import jax
    import jax.numpy as jnp

    double = jax.jit(lambda x: 2.0 * x)
    x = jnp.ones(64 * 2**20, jnp.float32)
    jax.block_until_ready(double(x))
    faults = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(double(x))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(min(faults))
""")


def _run(code: str, env: dict) -> str:
    env = {**env, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def _without_tunables() -> dict:
    return {name: value for name, value in os.environ.items() if name != "GLIBC_TUNABLES"}


def test_the_tunable_is_added_beside_other_tunables_and_a_users_own_setting_is_kept():
    assert huge_page_environment({})["GLIBC_TUNABLES"] == HUGE_PAGE_TUNABLE
    both = huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "HOME": "/h"})
    assert both == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{HUGE_PAGE_TUNABLE}", "HOME": "/h"}
    own = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert huge_page_malloc_requested(own) and huge_page_environment(own) == own
    assert not huge_page_malloc_requested({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})


@needs_huge_pages
def test_a_fresh_256_mb_buffer_faults_in_huge_pages_under_the_tunable():
    plain = int(_run(FAULTS_PER_CALL, _without_tunables()))
    huge = int(_run(FAULTS_PER_CALL, huge_page_environment(_without_tunables())))
    assert plain > 30_000  # 4 KiB pages: 65,536 for the output alone
    assert huge < plain / 10


@needs_huge_pages
def test_the_mipd_process_restarts_itself_once_with_the_tunable_and_keeps_its_pid():
    code = textwrap.dedent("""
        import os
        from mipdstream.runtime import restart_with_huge_page_malloc
        print("start", os.getpid(), flush=True)
        restart_with_huge_page_malloc()
        print("running", os.getpid(), os.environ["GLIBC_TUNABLES"])
    """)
    lines = _run(code, _without_tunables()).split("\n")
    (first, _), (again, _), (running, tunables) = (line.split(" ", 1) for line in lines[:3])
    assert (first, again, running) == ("start", "start", "running")  # the script ran twice, the restart once
    assert len({line.split()[1] for line in lines[:3]}) == 1  # one pid throughout
    assert tunables.split()[-1] == HUGE_PAGE_TUNABLE
    kept = _run(code, {**_without_tunables(), "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert kept.count("start") == 1 and kept.strip().endswith("glibc.malloc.hugetlb=0")
