"""Tests of functorch_utils.testing._numerics: steps, tolerances, kinks, the precision pin."""

from __future__ import annotations

import threading

import pytest
import torch

from functorch_utils.testing import NonDifferentiablePointError, check_grads
from functorch_utils.testing._numerics import (
    COMPLEX_STEP,
    finite_difference_step,
    highest_matmul_precision,
    rtol_of,
    step,
)

# ---------------------------------------------------------------------------------------------
# The numbers of docs/testing.md ("The numbers")


def test_steps_are_powers_of_two_from_the_reference_epsilon() -> None:
    assert finite_difference_step(torch.float64) == 2.0**-17  # eps64^(1/3) = 6.1e-6
    assert finite_difference_step(torch.float16) == 2.0**-17  # upcast: float64's epsilon
    assert finite_difference_step(torch.float64, reference="richardson") == 2.0**-10
    assert finite_difference_step(torch.float32, reference="same_dtype") == 2.0**-8
    assert finite_difference_step(torch.float64, 100.0) == 2.0**-11
    x = torch.tensor([-8.0, 1.0], dtype=torch.float64)
    assert step(x, torch.finfo(torch.float64).eps, None) == 2.0**-14
    assert step(x, torch.finfo(torch.float64).eps, 1e-3) == 1e-3  # eps is used as given


def test_rtol_table() -> None:
    assert rtol_of(torch.float64) == 1e-6
    assert rtol_of(torch.float32) == 2e-4
    assert rtol_of(torch.float32, "richardson") == 1e-5
    assert rtol_of(torch.float64, "richardson") == 1e-8
    assert rtol_of(torch.float64, "complex_step") == 1e-10
    assert rtol_of(torch.complex64) == 2e-4
    assert rtol_of(torch.float16) == 4 * torch.finfo(torch.float16).eps
    assert rtol_of(torch.bfloat16) == 4 * torch.finfo(torch.bfloat16).eps
    assert COMPLEX_STEP == 1e-20


def test_kink_rule_flags_kinks_not_steep_smooth_functions() -> None:
    x = torch.tensor([0.0, 0.5], dtype=torch.float64)
    with pytest.raises(NonDifferentiablePointError, match="one-sided slopes differ"):
        check_grads(torch.relu, (x,), modes=("fwd",))
    # steep but smooth: the gap between one-sided slopes halves with h
    check_grads(lambda x: torch.tanh(50 * x), (torch.tensor([0.01], dtype=torch.float64),))


# ---------------------------------------------------------------------------------------------
# The matmul-precision pin


@pytest.fixture
def medium_precision() -> object:
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    yield
    torch.set_float32_matmul_precision(old)


@pytest.mark.usefixtures("medium_precision")
def test_precision_pin_shared_by_overlapping_threads() -> None:
    # A enters, B enters, A leaves (B still needs "highest"), B leaves: "medium" is back.
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, str] = {}

    def a() -> None:
        with highest_matmul_precision():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b() -> None:
        a_in.wait(5)
        with highest_matmul_precision():
            b_in.set()
            a_out.wait(5)
            seen["b after a left"] = torch.get_float32_matmul_precision()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"b after a left": "highest"}
    assert torch.get_float32_matmul_precision() == "medium"


@pytest.mark.usefixtures("medium_precision")
def test_check_grads_restores_precision_under_threads() -> None:
    seen: set[str] = set()
    start = threading.Barrier(4)

    def f(x: torch.Tensor) -> torch.Tensor:
        seen.add(torch.get_float32_matmul_precision())
        return torch.sin(x @ x.T)

    def work(seed: int) -> None:
        start.wait(5)
        for k in range(3):
            # reverse mode only: torch's forward mode is not thread-safe (docs/sharp_edges.md)
            x = torch.randn(3, 2, dtype=torch.float64)
            check_grads(f, (x,), modes=("rev",), seed=seed + k)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"highest"}
    assert torch.get_float32_matmul_precision() == "medium"


@pytest.mark.usefixtures("medium_precision")
def test_precision_restored_after_a_failing_check() -> None:
    with pytest.raises(ValueError), highest_matmul_precision():
        assert torch.get_float32_matmul_precision() == "highest"
        raise ValueError("inside")
    assert torch.get_float32_matmul_precision() == "medium"
