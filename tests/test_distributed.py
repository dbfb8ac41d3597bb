"""Tests of ``distributed.pmap`` (_distributed) and the collectives across processes.

Each process count is spawned once (2 gloo processes on the CPU, and 4 for the subgroup checks);
every rank runs all the checks of tests/distributed_worker.py, which compare ``pmap`` on this
rank's shard with slice ``rank`` of the one-process ``vmap`` reference. A process group timeout
and a subprocess timeout make a hang fail fast. The errors that need no process group run here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from functorch_utils import psum
from functorch_utils.distributed import pmap
from tests import distributed_worker

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 240  # the whole group of processes; the process group itself times out after 60 s


def _spawn(world: int, tmp: Path) -> dict[int, dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.distributed_worker",
                str(r),
                str(world),
                str(tmp / "init"),
                str(tmp),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    logs: list[str] = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT_S)
            logs.append(out)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"{world} pmap worker processes did not finish within {TIMEOUT_S} s (a hang)")
    results: dict[int, dict[str, str]] = {}
    for r in range(world):
        path = tmp / f"rank{r}.json"
        if not path.exists():
            pytest.fail(f"rank {r} of {world} wrote no results; its output:\n{logs[r][-4000:]}")
        results[r] = json.loads(path.read_text())
    return results


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, str]]:
    return _spawn(2, tmp_path_factory.mktemp("pmap2"))


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, str]]:
    return _spawn(4, tmp_path_factory.mktemp("pmap4"))


def _verdict(results: dict[int, dict[str, str]], name: str) -> None:
    failed = {r: res.get(name, "not run") for r, res in results.items()}
    failed = {r: text for r, text in failed.items() if text != "ok"}
    assert not failed, "\n".join(f"rank {r}:\n{text}" for r, text in failed.items())


@pytest.mark.parametrize("name", list(distributed_worker.CHECKS))
def test_pmap_two_processes_equal_vmap(two: dict[int, dict[str, str]], name: str) -> None:
    _verdict(two, name)


@pytest.mark.parametrize("name", list(distributed_worker.CHECKS_4))
def test_pmap_four_processes_equal_vmap(four: dict[int, dict[str, str]], name: str) -> None:
    _verdict(four, name)


# ---------------------------------------------------------------------------------------------
# Errors that need no process group (pinned: error text is API).


def _raises(kind: type[BaseException], text: str) -> Any:
    return pytest.raises(kind, match=re.escape(text))


def test_error_no_process_group() -> None:
    assert not dist.is_initialized()

    def f(x: torch.Tensor) -> torch.Tensor:
        return psum(x, "i")

    with _raises(
        ValueError,
        "pmap(f, axis_name='i')(...): no torch.distributed process group is initialised; "
        "expected torch.distributed.init_process_group(...) to have run on this process, got "
        "torch.distributed.is_initialized() == False. Launch the script with "
        "`torchrun --nproc_per_node=N script.py` and call "
        "torch.distributed.init_process_group('gloo') (CPU tensors) or "
        "init_process_group('nccl') (CUDA tensors) on every process",
    ):
        pmap(f, "i")(torch.ones(2))


def test_error_unbound_name_outside_pmap() -> None:
    with _raises(NameError, "psum(x, axis_name='i'): unbound axis name 'i'"):
        psum(torch.ones(2), "i")
    with _raises(NameError, "Across processes, functorch_utils.distributed.pmap(f, axis_name='i')"):
        psum(torch.ones(2), "i")


def test_error_pmap_build() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return x

    with _raises(
        TypeError,
        "pmap(fun): fun is not callable; expected a function, got str 'i'. To use pmap as a "
        "decorator, pass the name by keyword: @pmap(axis_name='i').",
    ):
        pmap("i")  # type: ignore[call-overload]
    with _raises(TypeError, "pmap(f, axis_name=None): axis_name is required"):
        pmap(f)  # type: ignore[call-overload]
    with _raises(TypeError, "pmap(fun=None, axis_name=None): axis_name is required"):
        pmap()
    with _raises(TypeError, "axis_name is a tensor or an array, which cannot name an axis"):
        pmap(lambda x: x, torch.tensor(1))
    with _raises(TypeError, "axis_name is not hashable"):
        pmap(lambda x: x, ["i"])
    with _raises(
        TypeError,
        "pmap(f, axis_name='i', group=...): group is not a torch.distributed process group; "
        "expected None (the default group) or a ProcessGroup such as dist.new_group([0, 1]), "
        "got list [0, 1]. Make the group with torch.distributed.new_group(ranks) on every "
        "process.",
    ):
        pmap(f, "i", group=[0, 1])


def test_pmap_keeps_the_function_name_and_works_as_a_decorator() -> None:
    @pmap(axis_name="i")
    def step(x: torch.Tensor) -> torch.Tensor:
        """Docs."""
        return x

    assert step.__name__ == "step" and step.__doc__ == "Docs."
