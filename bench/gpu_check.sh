#!/usr/bin/env bash
# The CUDA checks, for a machine with a GPU: the CUDA rows of the torch tests (conformance of every
# model against the numpy backend, the torch backend, interop), then the side-by-side training
# speed of fastrnn's torch backend and cuDNN's nn.LSTM/nn.GRU/nn.RNN (TF32 off and on).
# Results go to ${OUT:-gpu_results}/; run from the repository root after building the kernels.
set -u
out="${OUT:-gpu_results}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch, fastrnn; print(torch.__version__, torch.version.cuda,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" | tee "$out/device.txt"
timeout 900 python -m pytest -q -rs -k cuda tests/test_conformance.py tests/test_torch_backend.py \
    tests/test_torch_interop.py > "$out/cuda_tests.txt" 2>&1
echo "cuda tests: exit $? ($(tail -1 "$out/cuda_tests.txt"))"
timeout 900 python bench/gpu_rnn.py --device cuda --out "$out/gpu_rnn.md" \
    > "$out/gpu_rnn.log" 2>&1
echo "speed: exit $?"
cat "$out/gpu_rnn.md" 2>/dev/null || tail -20 "$out/gpu_rnn.log"
