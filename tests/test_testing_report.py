"""Tests of functorch_utils.testing._report: the failure text and its structured report."""

from __future__ import annotations

import math

import pytest

from functorch_utils.testing import (
    CheckReport,
    ComplexStepWarning,
    DerivativeCheckError,
    NonDifferentiablePointError,
)
from functorch_utils.testing._report import failure, label_text


def test_labels() -> None:
    assert label_text("JVP") == "JVP (forward mode)"
    assert label_text("VJP") == "VJP (reverse mode)"
    assert label_text("VJP of JVP") == "order 2: VJP of JVP"
    assert label_text("JVP of VJP of JVP") == "order 3: JVP of VJP of JVP"


def test_failure_text_and_report() -> None:
    err = failure(
        "check_grads(f, args)",
        "VJP (reverse mode)",
        "args[0]",
        err=0.5,
        parts={"relative": 0.25, "FD rounding": 0.125},
        seed=3,
        headline="for input args[0]",
        before=["what was compared"],
        after=["derivative 1 vs reference 1.5"],
        derivative=1.0,
        reference_value=1.5,
        reference="central",
        step=2.0**-17,
        err_msg="my rule",
    )
    assert isinstance(err, DerivativeCheckError) and isinstance(err, AssertionError)
    assert str(err).splitlines() == [
        "my rule",
        "check_grads(f, args): VJP (reverse mode) check failed for input args[0].",
        "  what was compared",
        "  error 0.5 > tolerance 0.375 = relative 0.25 + FD rounding 0.125",
        "  derivative 1 vs reference 1.5",
        "  direction seed 3; pass seed=... to try other directions.",
    ]
    rep = err.report
    assert isinstance(rep, CheckReport)
    assert (rep.check, rep.leaf, rep.seed, rep.step) == ("VJP (reverse mode)", "args[0]", 3, 2**-17)
    assert rep.tolerance == 0.375 and rep.parts == {"relative": 0.25, "FD rounding": 0.125}
    assert str(rep) == str(err)


def test_consistency_failures_have_no_derivative_pair() -> None:
    err = failure("c", "adjoint", "x", err=1.0, parts={"relative": 0.5}, seed=0, headline="at x")
    assert math.isnan(err.report.derivative) and err.report.reference == "consistency"


@pytest.mark.parametrize(
    "cls", [CheckReport, ComplexStepWarning, DerivativeCheckError, NonDifferentiablePointError]
)
def test_public_home(cls: type) -> None:
    assert cls.__module__ == "functorch_utils.testing"
    assert issubclass(NonDifferentiablePointError, ValueError)
    assert issubclass(ComplexStepWarning, UserWarning)
