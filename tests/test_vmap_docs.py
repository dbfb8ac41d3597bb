"""The code blocks of docs/vmap.md run and their assertions hold."""

from __future__ import annotations

import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "vmap.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if DOC.exists() else []


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_vmap_doc_block_runs(code: str) -> None:
    exec(compile(code, str(DOC), "exec"), {})
