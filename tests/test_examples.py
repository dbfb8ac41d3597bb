"""Every script in ``examples/`` runs to completion: each checks its own results and exits non-zero
on a failed check, so a zero exit status is the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))


def test_examples_exist() -> None:
    assert EXAMPLES, f"no examples found in {EXAMPLES_DIR}"


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=EXAMPLES_DIR.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"{script.name} exited with status {proc.returncode}\n"
        f"--- stdout (last 4000 chars) ---\n{proc.stdout[-4000:]}\n"
        f"--- stderr (last 4000 chars) ---\n{proc.stderr[-4000:]}"
    )
