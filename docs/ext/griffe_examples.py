"""Griffe extension for the docs build: read an ``Example:`` docstring section as ``Examples:``.

The library's docstrings use ``Example:`` (singular). Griffe's Google parser only knows the
plural, and renders anything else as an admonition of plain Markdown text, where ``>>>`` lines
become nested block quotes. Renaming the section header lets griffe split the doctest into
highlighted ``pycon`` code blocks. The docstrings themselves stay as they are (the test suite runs
them with ``--doctest-modules``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and "Example:" in obj.docstring.value:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
