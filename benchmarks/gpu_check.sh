#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see benchmarks/README.md): the CUDA tests and core tests
# with that machine's torch (a second torch version of the range we support), then the
# benchmarks on CUDA. optree travels as a wheel in .whl/ (it is not installed there).
# Usage there: bash benchmarks/gpu_check.sh   (writes logs to $OUT when set)
set -u -o pipefail
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, optree; print('torch', torch.__version__, torch.cuda.get_device_name(), 'optree', optree.__version__)"
timeout 100 python3 -m pytest -q -p no:cacheprovider -p functorch_utils.testing._pytest_plugin \
  tests/test_cuda.py tests/test_grad.py tests/test_jac.py tests/test_jvp_vjp.py tests/test_custom.py \
  2>&1 | tail -n 25 | tee "$out/tests.log"
timeout 75 python3 benchmarks/bench_curvature.py --device cuda --reps 9 2>&1 | tee "$out/bench_curvature.log"
timeout 60 python3 benchmarks/bench_core.py --device cuda --quick 2>&1 | tee "$out/bench_core.log"
