"""Property-testing a user-written custom derivative rule with hypothesis and `check_grads`.

Two user rules, each tested on inputs drawn by hypothesis with
`functorch_utils.testing.check_grads` (finite differences in float64, random directions):

- `softplus`, a `custom_jvp`: the forward pass `where(x > 0, x + log1p(exp(-x)), log1p(exp(x)))`
  is stable, but plain autodiff of it gives NaN for large |x| (the branch `where` does not pick
  still overflows, and 0 * inf = NaN). The rule `t * sigmoid(x)` fixes that, in both modes.
- `logsumexp`, a `custom_vjp` whose backward reuses the softmax saved by the forward pass.

Then each rule gets a planted bug (a sign error, a missing cotangent factor), and the same
property test must catch it: the script exits non-zero if a correct rule fails or a buggy rule
passes.

    python examples/custom_rule_property_test.py
"""

from __future__ import annotations

import sys

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import functorch_utils as fu
from functorch_utils.testing import check_grads

# Deterministic and bounded, as in CI; no shrinking (it would only make the bug report shorter).
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow],
)


def vectors(lo: float, hi: float) -> st.SearchStrategy[torch.Tensor]:
    """1-d float64 tensors of 1 to 6 finite values in [lo, hi]."""
    floats = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return st.lists(floats, min_size=1, max_size=6).map(
        lambda v: torch.tensor(v, dtype=torch.float64)
    )


# ---------------------------------------------------------------------------------------------
# the user's rules, written as a factory so the same code can carry a planted bug


def make_softplus(buggy: bool = False) -> fu.custom_jvp:
    @fu.custom_jvp
    def softplus(x):
        return torch.where(x > 0, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))

    @softplus.defjvp
    def softplus_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        slope = torch.sigmoid(-x) if buggy else torch.sigmoid(x)  # the bug: a sign error
        return softplus(x), t * slope

    return softplus


def make_logsumexp(buggy: bool = False) -> fu.custom_vjp:
    @fu.custom_vjp
    def logsumexp(x):
        return torch.logsumexp(x, dim=-1)

    def fwd(x):
        out = torch.logsumexp(x, dim=-1)
        return out, torch.exp(x - out)  # residual: the softmax

    def bwd(softmax, ct):
        if buggy:  # the bug: the cotangent is forgotten
            return (softmax,)
        return (ct * softmax,)

    logsumexp.defvjp(fwd, bwd)
    return logsumexp


# ---------------------------------------------------------------------------------------------
# the property tests


def property_softplus(softplus) -> None:
    @SETTINGS
    @given(vectors(-1000.0, 1000.0))
    def test(x):
        check_grads(lambda x: softplus(x), (x,), order=1, modes=("fwd", "rev"))
        # and reverse over reverse (the second derivative, sigmoid', through the rule)
        check_grads(lambda x: softplus(x), (x,), order=2, modes=("rev",))

    test()


def property_logsumexp(logsumexp) -> None:
    @SETTINGS
    @given(vectors(-50.0, 50.0), st.floats(0.5, 3.0))
    def test(x, scale):
        # a multiplied output, so a missing cotangent factor cannot hide behind ct = 1
        check_grads(lambda x: scale * logsumexp(x), (x,), order=2, modes=("rev",))

    test()


def expect_pass(name, prop, rule) -> bool:
    try:
        prop(rule)
    except AssertionError as e:
        print(f"  {name}: FAILED, but the rule is correct:\n{e}")
        return False
    print(f"  {name}: property holds on {SETTINGS.max_examples} drawn inputs")
    return True


def expect_caught(name, prop, rule) -> bool:
    try:
        prop(rule)
    except AssertionError as e:
        first = str(e).strip().splitlines()[0]
        print(f"  {name}: planted bug caught: {first[:150]}")
        return True
    print(f"  {name}: planted bug NOT caught")
    return False


def main() -> int:
    x = torch.tensor([-800.0, 0.0, 800.0], dtype=torch.float64)

    def naive(x):
        return torch.where(x > 0, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))

    print("why a custom rule: d softplus(x)/dx at x = -800, 0, 800")
    print(
        f"  plain autodiff of the stable forward: {fu.grad(lambda x: naive(x).sum())(x).tolist()}"
    )
    softplus = make_softplus()
    print(
        f"  with the custom_jvp rule (reverse):   {fu.grad(lambda x: softplus(x).sum())(x).tolist()}"
    )
    t = fu.jvp(softplus, (x,), (torch.ones_like(x),))[1]
    print(f"  with the custom_jvp rule (forward):   {t.tolist()}")
    ok = torch.equal(t, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))

    print("correct rules:")
    ok &= expect_pass("softplus (custom_jvp)", property_softplus, softplus)
    ok &= expect_pass("logsumexp (custom_vjp)", property_logsumexp, make_logsumexp())
    print("planted bugs:")
    ok &= expect_caught("softplus with sigmoid(-x)", property_softplus, make_softplus(buggy=True))
    ok &= expect_caught("logsumexp without ct", property_logsumexp, make_logsumexp(buggy=True))
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
