"""Pins every private torch API in functorch_utils/_torch_hooks.py (one test per hook)."""

from __future__ import annotations

import pytest
import torch
import torch.func

from functorch_utils import _torch_hooks as hooks


# ---------------------------------------------------------------------------------------------
# vmap_error_kind: torch.func.vmap's texts for a user's mistakes in the batched function


def _raw_vmap_error(fn, x):
    with pytest.raises(RuntimeError) as info:
        torch.func.vmap(fn)(x)
    return info.value


def test_vmap_error_kind_recognises_torchs_messages():
    buf = torch.zeros(2)
    cases = [
        ("item", lambda v: v * v.sum().item(), torch.ones(3, 2)),
        ("control_flow", lambda v: v if v.sum() > 0 else -v, torch.ones(3, 2)),
        ("dynamic_shape", lambda v: v[v > 0], torch.ones(3, 2)),
        ("in_place", lambda v: buf.add_(v), torch.ones(3, 2)),
        ("randomness", lambda v: v + torch.rand(2), torch.ones(3, 2)),
        # an unbatched (2**62,) view batched to 4 members: numel overflows as torch expands it
        ("overflow", lambda v: torch.zeros(()).expand(2**62), torch.ones(4)),
    ]
    for kind, fn, x in cases:
        err = _raw_vmap_error(fn, x)
        assert hooks.vmap_error_kind(err) == kind, (kind, str(err)[:200])


def test_vmap_error_kind_is_none_for_other_errors():
    assert hooks.vmap_error_kind(RuntimeError("some other failure")) is None
    assert hooks.vmap_error_kind(ValueError("calling .item() on a Tensor")) is None
