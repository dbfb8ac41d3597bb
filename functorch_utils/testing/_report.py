"""What a check says when it fails: the exceptions, the warning and the structured report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CheckReport",
    "ComplexStepWarning",
    "DerivativeCheckError",
    "NonDifferentiablePointError",
    "failure",
    "label_text",
]


class NonDifferentiablePointError(ValueError):
    """The function is not differentiable at the checked point (a kink, tie or discontinuity).

    Raised by :func:`check_grads`, :func:`check_jvp` and :func:`check_vjp` instead of a verdict on
    the derivative: one-sided finite-difference slopes differ far beyond rounding noise and the gap
    does not shrink when the step is halved. In a hypothesis test, catch it and call
    ``hypothesis.reject()``, or draw inputs away from the kinks.

    Example:
        >>> import torch
        >>> from functorch_utils.testing import NonDifferentiablePointError, check_grads
        >>> try:
        ...     check_grads(torch.abs, (torch.tensor([0.0, 1.0], dtype=torch.float64),))
        ... except NonDifferentiablePointError as e:
        ...     print(type(e).__name__)
        NonDifferentiablePointError
    """


class ComplexStepWarning(UserWarning):
    """``reference="complex_step"`` could not be trusted for a leaf and central differences were used.

    Emitted when the function refuses complex input (``relu``, ``clamp``, comparisons), returns
    outputs of another shape, or when the complex-step derivative disagrees with a central
    difference beyond its tolerance (``conj()``, ``abs()`` and ``.real`` are not holomorphic).

    Example:
        >>> import warnings, torch
        >>> from functorch_utils.testing import ComplexStepWarning, check_grads
        >>> x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always", ComplexStepWarning)
        ...     check_grads(torch.relu, (x,), reference="complex_step")
        >>> print(str(w[0].message)[:110])
        check_grads(relu, args): JVP (forward mode): reference='complex_step' is not usable for args[0]: the function
    """


@dataclass(frozen=True)
class CheckReport:
    """What a failed derivative check found; ``DerivativeCheckError.report``.

    Attributes:
        call: The call, e.g. ``"check_grads(f, args)"``.
        check: Which check failed, e.g. ``"VJP (reverse mode)"`` or ``"order 2: VJP of JVP"``.
        leaf: Key path of the input leaf, e.g. ``"args[0]['w']"``.
        error: The error that exceeded the tolerance.
        tolerance: The tolerance (the sum of ``parts``).
        parts: The parts of the tolerance by name (relative, FD rounding, ...).
        derivative: The derivative under test (norm of the JVP, or ``<J^T u, v>``).
        reference_value: The finite-difference (or complex-step) reference for it.
        reference: Which reference was used (``"central"``, ``"richardson"``, ...).
        step: The finite-difference step ``h`` (``None`` where none was used).
        seed: The seed of the random directions.
        message: The full text of the error.

    Example:
        >>> import torch
        >>> from functorch_utils.testing import DerivativeCheckError, check_vjp
        >>> x = torch.linspace(-1.0, 1.0, 4, dtype=torch.float64)
        >>> def bad_vjp(x):
        ...     return torch.sin(x), lambda ct: (1.01 * ct * torch.cos(x),)
        >>> try:
        ...     check_vjp(torch.sin, bad_vjp, (x,), seed=3)
        ... except DerivativeCheckError as e:
        ...     print(e.report.check, e.report.leaf, e.report.seed, e.report.error > e.report.tolerance)
        VJP (reverse mode) args[0] 3 True
    """

    call: str
    check: str
    leaf: str
    error: float
    tolerance: float
    parts: dict[str, float]
    derivative: float
    reference_value: float
    reference: str
    step: float | None
    seed: int
    message: str

    def __str__(self) -> str:
        return self.message


class DerivativeCheckError(AssertionError):
    """An ``AssertionError`` from a failed check, with the structured report as ``.report``.

    Example:
        >>> from functorch_utils.testing import DerivativeCheckError
        >>> issubclass(DerivativeCheckError, AssertionError)
        True
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


# Their public home, shown in tracebacks and doctests.
for _cls in (NonDifferentiablePointError, ComplexStepWarning, CheckReport, DerivativeCheckError):
    _cls.__module__ = "functorch_utils.testing"


def label_text(label: str) -> str:
    """``"JVP"`` -> ``"JVP (forward mode)"``; ``"VJP of JVP"`` -> ``"order 2: VJP of JVP"``."""
    if " of " not in label:
        return {"JVP": "JVP (forward mode)", "VJP": "VJP (reverse mode)"}[label]
    return f"order {label.count(' of ') + 1}: {label}"


def failure(
    call: str,
    check: str,
    leaf: str,
    *,
    err: float,
    parts: dict[str, float],
    seed: int,
    headline: str,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    derivative: float = math.nan,
    reference_value: float = math.nan,
    reference: str = "consistency",
    step: float | None = None,
    err_msg: str = "",
) -> DerivativeCheckError:
    """The error of a failed check: the text every check shares, and its :class:`CheckReport`.

    The text is ``<call>: <check> check failed <headline>.``, the ``before`` lines, the error
    against the tolerance and its parts, the ``after`` lines and the direction seed; ``err_msg``
    (the user's) heads it.
    """
    tol = sum(parts.values())
    parts_text = " + ".join(f"{k} {v:.3g}" for k, v in parts.items())
    lines = [
        *([err_msg] if err_msg else []),
        f"{call}: {check} check failed {headline}.",
        *(f"  {line}" for line in before),
        f"  error {err:.6g} > tolerance {tol:.6g} = {parts_text}",
        *(f"  {line}" for line in after),
        f"  direction seed {seed}; pass seed=... to try other directions.",
    ]
    message = "\n".join(lines)
    report = CheckReport(
        call=call,
        check=check,
        leaf=leaf,
        error=err,
        tolerance=tol,
        parts=dict(parts),
        derivative=derivative,
        reference_value=reference_value,
        reference=reference,
        step=step,
        seed=seed,
        message=message,
    )
    return DerivativeCheckError(message, report)
