"""pytest plugin (entry point ``pytest11``): registers the library's hypothesis profiles."""

from __future__ import annotations

import os
from typing import Any


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "cuda: the test needs a CUDA device; skipped without one")
    try:
        from hypothesis import settings
    except ImportError:  # hypothesis is an optional (test) dependency
        return
    from . import _profiles

    _profiles.register_profiles()
    settings.load_profile(os.environ.get("FUNCTORCH_UTILS_PROFILE", "deterministic"))
