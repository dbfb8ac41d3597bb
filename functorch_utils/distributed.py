"""Named-axis collectives across processes, on ``torch.distributed``.

``pmap(f, axis_name)`` runs ``f`` on this process with ``axis_name`` naming the processes of a
process group, so the same ``psum``/``pmean``/``pmax``/``pmin``/``all_gather``/``axis_index``
calls that reduce over a ``vmap(..., axis_name=...)`` axis on one process reduce across the
processes (gloo on CPU, NCCL on CUDA), with the same values and derivatives.

Example:
    >>> import torch
    >>> import torch.distributed as dist
    >>> from functorch_utils import pmean
    >>> from functorch_utils.distributed import pmap
    >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    >>> pmap(lambda g: pmean(g, "batch"), "batch")({"w": torch.ones(2)})
    {'w': tensor([1., 1.])}
    >>> dist.destroy_process_group()
"""

from ._distributed import pmap as pmap

__all__ = [
    # mapping over processes
    "pmap",
]
