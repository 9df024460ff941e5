"""Where the numpy and cython backends place their buffers: the kernels stream Whh with 64-byte
vector loads, which straddled two cache lines (and ran at 0.6 of the speed from L2) when numpy put
a large array 16 bytes past a page boundary."""
import numpy as np
import pytest

import fastrnn
from fastrnn._params import aligned_empty, aligned_zeros, pack, param_shapes, vanilla

pytestmark = pytest.mark.filterwarnings("error")


def line_offset(a, index=0):
    return (a.ctypes.data + index * a.itemsize) % 64


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n, at", [(1, 0), (7, 3), (1000, 0), (100_003, 6500), (5, 5)])
def test_aligned_empty_places_the_chosen_value_on_a_line(dtype, n, at):
    for _ in range(5):  # fresh allocations land at different offsets
        a = aligned_empty(n, dtype, at)
        assert a.shape == (n,) and a.dtype == np.dtype(dtype) and a.flags.c_contiguous
        assert a.flags.writeable and line_offset(a, at) == 0
        a[...] = 1.5  # the whole view is usable memory
        assert a.sum() == 1.5 * n
        z = aligned_zeros(n, dtype, at)
        assert line_offset(z, at) == 0 and not z.any()


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("V, H", [(65, 512), (65, 100), (13, 37)])
def test_whh_and_its_gradient_and_optimizer_state_start_a_line(backend, V, H):
    model = fastrnn.CharRNN(V, H, backend=backend, dtype="float32", seed=0)
    be = model._backend
    assert be.params["Whh"].ctypes.data % 64 == 0
    assert line_offset(be.zeros(), H * V) == 0
    opt = fastrnn.Adam(model)
    assert all(line_offset(opt.state[k], H * V) == 0 for k in opt.state_names)
    flat = pack({k: np.ones(s) for k, s in param_shapes(H, V).items()}, vanilla(H, V),
                np.float32)
    assert line_offset(flat, H * V) == 0
    # loading parameters writes into the placed buffer rather than replacing it
    before = be.flat.ctypes.data
    model.set_params({k: np.full(s, 0.5) for k, s in param_shapes(H, V).items()})
    assert be.flat.ctypes.data == before and be.params["Whh"].ctypes.data % 64 == 0


def test_the_cython_scratch_buffers_start_a_line():
    pytest.importorskip("fastrnn._kernels")
    model = fastrnn.CharRNN(65, 512, backend="cython", dtype="float32", seed=0)
    be = model._backend
    x = np.zeros((1, 25), dtype=np.int32)
    be.forward_loss(x, x, np.zeros((1, 512), dtype=np.float32))
    assert be._work and all(w.ctypes.data % 64 == 0 for w in be._work.values())
    # the kernels on the placed buffers still match the numpy reference
    ref = fastrnn.CharRNN(65, 512, backend="numpy", dtype="float64", seed=0)
    ref.set_params(model.get_params())
    ids = np.random.default_rng(0).integers(0, 65, (1, 26)).astype(np.int32)
    loss, grads, _ = model.loss_and_grads(ids[:, :-1], ids[:, 1:])
    want, want_grads, _ = ref.loss_and_grads(ids[:, :-1], ids[:, 1:])
    assert abs(loss - want) <= 1e-5 * abs(want)
    for k, g in want_grads.items():
        assert np.abs(grads[k] - g).max() <= 1e-4 * np.abs(g).max() + 1e-7, k
