"""The documentation covers the public API, and the site builds with ``mkdocs build --strict``.

A public name counts as documented when it appears as code in some page under ``docs/``: in an
inline code span, a fenced code block, or a ``:::`` mkdocstrings directive. The site build runs
when mkdocs, mkdocs-material and mkdocstrings are installed (``pip install -e ".[docs]"``) and is
skipped otherwise.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PUBLIC_MODULES = [
    "functorch_utils",
    "functorch_utils.nn",
    "functorch_utils.testing",
    "functorch_utils.tree_util",
    "functorch_utils.flatten_util",
    "functorch_utils.lax",
    "functorch_utils.distributed",
    "functorch_utils.random",
]

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SPAN = re.compile(r"`([^`\n]+)`")
# a ::: directive with its indented options (e.g. a members: list)
_DIRECTIVE = re.compile(r"^:::[^\n]*\n(?:[ \t]+[^\n]*\n)*", re.MULTILINE)


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "ext" not in p.relative_to(DOCS).parts)


def _code_text() -> str:
    """Everything the docs show as code: fenced blocks, inline spans and ::: directives."""
    chunks: list[str] = []
    for page in _pages():
        text = page.read_text()
        chunks += _FENCE.findall(text)
        prose = _FENCE.sub("", text)
        chunks += _SPAN.findall(prose)
        chunks += _DIRECTIVE.findall(prose)
    return "\n".join(chunks)


def _mentioned(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text) is not None


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_name_is_documented(module: str) -> None:
    mod = importlib.import_module(module)
    text = _code_text()
    missing = [name for name in mod.__all__ if not _mentioned(name, text)]
    assert not missing, (
        f"{module}.__all__ has names that no page under docs/ shows as code: {missing}. "
        "Document each (a `name` code span, a code block, or a ::: directive) on its page."
    )


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:") :]
    listed = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, re.MULTILINE))
    pages = {p.relative_to(DOCS).as_posix() for p in _pages()}
    assert not listed - pages, f"mkdocs.yml lists pages that do not exist: {sorted(listed - pages)}"
    assert not pages - listed, f"pages missing from the mkdocs.yml nav: {sorted(pages - listed)}"


_DOCS_DEPS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


@pytest.mark.skipif(
    any(importlib.util.find_spec(m.split(".")[0]) is None for m in _DOCS_DEPS),
    reason='mkdocs, mkdocs-material or mkdocstrings not installed (pip install -e ".[docs]")',
)
def test_site_builds_strict(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, (
        f"mkdocs build --strict failed (status {proc.returncode})\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    )
    assert (tmp_path / "site" / "index.html").exists()
