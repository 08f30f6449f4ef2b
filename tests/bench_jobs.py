"""Stand-ins for one benchmark seed, importable by the benchmark's spawned worker processes (see test_bench.py)."""

import time


def fail_seed_one_else_wait(settings, workdir, bar):
    """Seed 1 fails at once; any other seed would take ten minutes."""
    if settings.seed == 1:
        raise ValueError("seed 1 failed")
    time.sleep(600)
    return {}, {}
