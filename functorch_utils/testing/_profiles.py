"""Hypothesis profiles: ``deterministic`` for CI, ``thorough`` for long local runs, ``interactive``.

Chosen by the environment variable ``FUNCTORCH_UTILS_PROFILE`` (default ``deterministic``).
"""

from __future__ import annotations


def register_profiles() -> None:
    from hypothesis import HealthCheck, settings

    slow = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    settings.register_profile(
        "deterministic",
        derandomize=True,
        max_examples=20,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=slow,
    )
    settings.register_profile(
        "thorough", max_examples=500, deadline=None, suppress_health_check=slow
    )
    settings.register_profile(
        "interactive", max_examples=50, deadline=None, print_blob=True, suppress_health_check=slow
    )
