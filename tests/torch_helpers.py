"""Shared by the torch test modules (imported only by them, so other tests never load torch)."""
import pytest

import fastrnn

torch = pytest.importorskip("torch")

# parity needs full-precision float32 products on CUDA (TF32 would cost ~1e-3 relative)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(1)  # the tests compare numbers, not speed

needs_cuda = pytest.mark.skipif(not fastrnn.cuda_available(), reason="no usable CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
