#!/usr/bin/env bash
# The CUDA checks, for a machine with a GPU, run from the repository root:
#   1. build the kernels in place (the CUDA tests compare against the compiled backend too);
#   2. every test whose id names cuda (conformance of every model against the numpy backend, the
#      torch backend, interop, bf16, the CLI), with the failures' tracebacks;
#   3. the side-by-side training speed of fastrnn's torch backend and cuDNN's
#      nn.LSTM/nn.GRU/nn.RNN, TF32 off and on (bench/gpu_rnn.py).
# Results go to ${OUT:-gpu_results}/. PYTHON picks the interpreter (default python3); BUILD=0
# skips step 1; TEST_TIMEOUT and BENCH_TIMEOUT bound steps 2 and 3 in seconds.
set -u
out="${OUT:-gpu_results}"
py="${PYTHON:-python3}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

if [ "${BUILD:-1}" = 1 ]; then
    if ! "$py" setup.py build_ext --inplace > "$out/build.log" 2>&1; then
        stamp "build failed"; tail -30 "$out/build.log"; exit 1
    fi
    stamp "built: $(grep -c 'compiled in' "$out/build.log") modules"
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    "$py" -c "import sys, torch, numpy, fastrnn
print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| cuDNN', torch.backends.cudnn.version(), '| numpy', numpy.__version__)
print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA',
      '| fastrnn.cuda_available():', fastrnn.cuda_available())
from fastrnn import _isa
print('fastrnn hot module:', _isa.hot_module().__name__)"
} 2>&1 | tee "$out/device.txt"

timeout "${TEST_TIMEOUT:-300}" "$py" -m pytest -q -rfEs --tb=short -p no:cacheprovider -k cuda \
    --continue-on-collection-errors tests > "$out/cuda_tests.txt" 2>&1
stamp "cuda tests: exit $? ($(tail -1 "$out/cuda_tests.txt"))"
grep -E "^(FAILED|ERROR)" "$out/cuda_tests.txt" | head -40

timeout "${BENCH_TIMEOUT:-240}" "$py" bench/gpu_rnn.py --device cuda --out "$out/gpu_rnn.md" \
    > "$out/gpu_rnn.log" 2>&1
stamp "speed: exit $?"
cat "$out/gpu_rnn.md" 2>/dev/null || tail -20 "$out/gpu_rnn.log"
