"""Finite-difference checks of the analytic gradients (float64, clipping off)."""
import numpy as np
import pytest

import fastrnn
from conftest import CPU_BACKENDS, random_params, rel_err


def numeric_grad(f, x, eps=1e-6):
    """Central differences of scalar f() wrt every element of array x (perturbed in place)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("B", [1, 3])
def test_gradients_match_finite_differences(backend, B):
    rng = np.random.default_rng(10 + B)
    H, V, T = 6, 5, 7
    model = fastrnn.CharRNN(V, H, backend=backend, dtype="float64")
    params = random_params(H, V, rng)
    model.set_params(params)
    shape = (T,) if B == 1 else (B, T)
    x, y = rng.integers(0, V, shape), rng.integers(0, V, shape)
    h0 = rng.normal(0, 0.5, (H,) if B == 1 else (B, H))

    loss, grads, _ = model.loss_and_grads(x, y, h0, return_dh0=True)

    def f():
        model.set_params(params)
        return model.loss_and_grads(x, y, h0)[0]

    for name in fastrnn.CharRNN(V, H, backend="numpy").get_params():
        num = numeric_grad(f, params[name])
        assert rel_err(grads[name], num) <= 1e-6, name
        assert np.abs(grads[name]).max() > 0, name   # the check would be vacuous otherwise
    num_h0 = numeric_grad(f, h0)
    assert rel_err(grads["h0"], num_h0) <= 1e-6
    assert np.isclose(loss, f())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_loss_is_summed_cross_entropy(backend):
    """The loss is sum_t -ln softmax(Why h_t + by)[y_t], recomputed here independently."""
    rng = np.random.default_rng(3)
    H, V, T = 4, 6, 5
    model = fastrnn.CharRNN(V, H, backend=backend, dtype="float64")
    p = random_params(H, V, rng)
    model.set_params(p)
    x, y = rng.integers(0, V, T), rng.integers(0, V, T)
    h = np.zeros(H)
    expected = 0.0
    for t in range(T):
        h = np.tanh(p["Wxh"] @ np.eye(V)[x[t]] + p["Whh"] @ h + p["bh"])  # dense one-hot, on purpose
        z = p["Why"] @ h + p["by"]
        expected -= np.log(np.exp(z[y[t]]) / np.exp(z).sum())
    loss, _, h_last = model.loss_and_grads(x, y)
    assert loss == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(h_last, h, rtol=1e-12)
