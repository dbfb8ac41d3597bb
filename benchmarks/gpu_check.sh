#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see benchmarks/README.md): the whole test suite with
# that machine's torch (a second torch version for the range we support) including the CUDA
# tests, then the benchmarks on CUDA. optree travels as a wheel in .whl/ (not installed there).
# Usage there: bash benchmarks/gpu_check.sh   (writes logs to $OUT when set)
set -u -o pipefail
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, optree; print('torch', torch.__version__, torch.cuda.get_device_name(), 'optree', optree.__version__)"
timeout 240 python3 -m pytest -q -p no:cacheprovider -p functorch_utils.testing._pytest_plugin \
  -x --timeout 120 tests functorch_utils 2>&1 | tail -n 40 | tee "$out/tests.log"
timeout 150 python3 benchmarks/bench_core.py --device cuda --reps 15 2>&1 | tee "$out/bench_core.log"
timeout 120 python3 benchmarks/bench_curvature.py --device cuda --reps 15 2>&1 | tee "$out/bench_curvature.log"
