"""Differential fuzzing: random small programs under random transform stacks, run here and in a
reference, compared in float64.

The programs, transform stacks and the three interpreters (``functorch_utils``, JAX, and
``torch.func`` with Python loops) live in ``tests/fuzz_programs.py``: one representation, read
by every backend, so the two sides of a comparison cannot drift. Each case also runs under
``torch.no_grad()``, ``torch.inference_mode()`` and with inputs that require grad: the answer must
not change.

The number of cases follows the hypothesis profile (``FUNCTORCH_UTILS_PROFILE``): the
``deterministic`` CI profile runs a fixed few, ``thorough`` runs hundreds per test. Known
disagreements are kept out by the narrow filters in ``KNOWN``, each naming its bug; remove a
filter once its bug is fixed (the fuzzer then checks the fix).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

pytest.importorskip("hypothesis")  # the optional test extra; the JAX tests also need jax
pytest.importorskip("numpy")

from hypothesis import assume, given, note, reject, settings

import functorch_utils as fu

from . import fuzz_programs as fp
from .fuzz_programs import Case

FORWARD = ("jvp", "linearize", "jacfwd")  # one forward-mode level each
REVERSE = ("grad", "value_and_grad", "jacrev", "vjp", "hessian", "hvp")  # rev-over-rev here


def _has(case: Case, *names: str) -> bool:
    return bool(case.names() & set(names))


def _forward_levels(case: Case) -> int:
    """Forward-mode levels in the stack; ``hessian`` under a named vmap is jacfwd(jacrev)."""
    levels = 0
    for i, t in enumerate(case.stack):
        named_above = any(u.name == "vmap" and u.axis_name for u in case.stack[i + 1 :])
        levels += t.name in FORWARD or (t.name == "hessian" and named_above)
    return levels


def _nested_forward_custom_rule(case: Case) -> bool:
    """A custom_jvp or custom_vjp op under two forward-mode levels (anywhere in the stack)."""
    custom = _has(case, "cjvp", "pair", "cvjp", "cvjp2")
    return custom and _forward_levels(case) >= 2


def _custom_vjp_in_forward_mode(case: Case, dead_only: bool) -> bool:
    """A custom_vjp op (one whose value never reaches the output, if ``dead_only``) where the
    innermost derivative transform is forward mode: the rule has no forward mode."""
    ops = {op.name for op in case.ops()}
    if dead_only:
        ops -= {op.name for op in fp.live_ops(case.body)}
    if not ops & {"cvjp", "cvjp2"}:
        return False
    modes = [n for n in case.transforms() if n in FORWARD or n in REVERSE]
    return bool(modes) and modes[0] in FORWARD


# (filter, what it keeps out). Each entry is a disagreement with the reference that is known: a
# bug being fixed (remove the entry with the fix) or a documented difference.
KNOWN: list[tuple[Callable[[Case], bool], str]] = [
    (
        _nested_forward_custom_rule,
        "documented difference (docs/sharp_edges.md): a custom rule under forward-over-forward "
        "(jvp of jvp, jacfwd of linearize, also with a reverse level between them) is refused "
        "with a TypeError, as torch drops the outer tangent through an autograd.Function's jvp; "
        "JAX supports it",
    ),
    (
        lambda case: _custom_vjp_in_forward_mode(case, dead_only=True),
        "documented difference (docs/sharp_edges.md): forward mode over a custom_vjp is refused "
        "with a TypeError, also where the result is unused; JAX refuses it too, except under jit "
        "(the reference runs jitted), which drops dead code before the check",
    ),
]

# The library never returns torch's internal ZeroTensor (on which .numpy() raises): a result that
# is one fails the comparison.
ZERO_TENSOR_OK = False


def known(case: Case) -> str | None:
    for matches, why in KNOWN:
        if matches(case):
            return why
    return None


FU = fp.FuBackend()
REF = fp.RefBackend()


def _check(case: Case, ref_bk: Any) -> None:
    note(fp.render(case))
    assume(known(case) is None)
    try:
        ref = fp.reference(ref_bk, case)
    except fp.Rejected as e:  # the reference refuses the case (JAX: forward mode of custom_vjp)
        note(str(e))
        reject()
    problem = fp.disagreement(FU, case, ref, zero_tensor_ok=ZERO_TENSOR_OK)
    assert problem is None, f"functorch_utils disagrees with {ref_bk.name}: {problem}"


@settings(max_examples=settings().max_examples * 3 // 2)  # 30 in CI, 750 in the thorough profile
@given(fp.cases(collectives=True))
def test_matches_jax(case: Case) -> None:
    pytest.importorskip("jax")
    _check(case, _jax())


@settings(max_examples=settings().max_examples * 2)  # cheap: no JAX
@given(fp.cases(collectives=False))
def test_matches_torch_func_and_loops(case: Case) -> None:
    # forward mode straight over a custom_vjp is refused (as JAX does); the plain reference runs it
    assume(not _custom_vjp_in_forward_mode(case, dead_only=False))
    _check(case, REF)


@settings(max_examples=settings().max_examples * 2)  # cheap: no JAX
@given(fp.cases(collectives=True))
def test_grad_mode_does_not_change_the_answer(case: Case) -> None:
    note(fp.render(case))
    assume(known(case) is None)
    try:
        ref = fp.plain(fp.run(FU, case), force=ZERO_TENSOR_OK)
    except Exception:  # raising is test_matches_*'s business; here only the modes are compared
        reject()
    assume(fp.finite_and_moderate(ref))
    for mode in fp.GRAD_MODES:
        problem = fp.disagreement(FU, case, ref, mode, zero_tensor_ok=ZERO_TENSOR_OK)
        assert problem is None, f"the answer changes under {mode}: {problem}"


_JAX: list[fp.JaxBackend] = []


def _jax() -> fp.JaxBackend:
    if not _JAX:
        _JAX.append(fp.JaxBackend())
    return _JAX[0]


# every op kind once (no collectives): two vector leaves and a scalar, in a nested dict
_FIXED_BODY = fp.Block(
    3,
    (
        fp.Op("sin", (0,)),  # r3
        fp.Op("matmul", (3,)),  # r4
        fp.Op("mul", (4, 2)),  # r5
        fp.Op("splice", (5, 1), 1),  # r6
        fp.Op("cjvp", (6,)),  # r7
        fp.Op("pair", (7, 2)),  # r8, r9
        fp.Op("cvjp2", (8, 1)),  # r10
        fp.Op("checkpoint", (10, 2), None, fp.Block(2, (fp.Op("tanh", (0,)),), (2,))),  # r11
        fp.Op("index", (11,), 2),  # r12
        fp.Op("stop_gradient", (12,)),  # r13
        fp.Op("add", (13, 9)),  # r14
        fp.Op("mean", (14,)),  # r15
        fp.Op("cvjp", (15,)),  # r16
        fp.Op("exp", (16,)),  # r17
    ),
    (11, 17),
)


def _fixed(*stack: fp.Transform) -> Case:
    values = ((0.5, -0.25, 1.0), (0.75, 0.125, -0.5), (0.375,))
    return Case(("v", "v", "s"), "nested", values, _FIXED_BODY, "dict", stack)


_REVERSE_STACKS = [
    (fp.Transform("grad"),),
    (fp.Transform("value_and_grad"),),
    (fp.Transform("jacrev"),),
    (fp.Transform("hessian"),),
    (fp.Transform("vjp", seed=1),),
    (fp.Transform("vmap", (1, 0), "prefix", size=3), fp.Transform("grad")),
    (fp.Transform("grad"), fp.Transform("vmap", (None, 0), "prefix", out_axes=-1)),
]


@pytest.mark.parametrize("stack", _REVERSE_STACKS, ids=lambda s: "-".join(t.name for t in s))
def test_fixed_program_matches_reference(stack: tuple[fp.Transform, ...]) -> None:
    case = _fixed(*stack)
    assert fp.disagreement(FU, case, fp.reference(REF, case)) is None


def test_fixed_program_references_agree() -> None:
    pytest.importorskip("jax")
    for stack in (_REVERSE_STACKS[2], _REVERSE_STACKS[5]):  # jacrev, vmap-of-grad
        case = _fixed(*stack)
        assert fp.mismatch(fp.reference(REF, case), fp.reference(_jax(), case)) is None


class _CosOff:
    """torch, except that ``cos`` is 1e-6 off: only the custom rules use it."""

    def __getattr__(self, name: str) -> object:
        return getattr(torch, name)

    @staticmethod
    def cos(x: torch.Tensor) -> torch.Tensor:
        return torch.cos(x) * (1 + 1e-6)


@pytest.mark.parametrize("stack", _REVERSE_STACKS[:3], ids=lambda s: s[0].name)
def test_a_rule_one_millionth_off_is_caught(stack: tuple[fp.Transform, ...]) -> None:
    """The harness is not vacuous: custom rules 1e-6 off give a reported disagreement."""
    wrong = fp.FuBackend()
    wrong.custom = fp.make_custom_ops(_CosOff(), fu.custom_jvp, fu.custom_vjp)
    case = _fixed(*stack)
    problem = fp.disagreement(wrong, case, fp.reference(REF, case))
    assert problem is not None and problem.startswith("values"), problem
