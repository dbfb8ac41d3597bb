"""Every script in ``examples/`` runs to completion: each checks its own results and exits non-zero
on a failed check, so a zero exit status is the test."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
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


# ---------------------------------------------------------------------------------------------
# Documentation snippets: the ```python blocks of README.md and of every page under docs/ run, in
# order, as one script per page (later blocks build on earlier ones). Use another fence (```text,
# ```pycon, ```bash) for code that is not meant to run.

ROOT = EXAMPLES_DIR.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _snippets(page: Path) -> str:
    return "\n\n".join(textwrap.dedent(block) for block in _FENCE.findall(page.read_text()))


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if p.exists() and _snippets(p)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_doc_snippets_run(page: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _snippets(page)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"the python blocks of {page.relative_to(ROOT)} failed (status {proc.returncode})\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )
