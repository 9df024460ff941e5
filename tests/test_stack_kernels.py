"""The compiled kernels of the stacked rnn / lstm / gru models (stack_* in fastrnn._kernels)
against PyTorch's own nn.RNN / nn.LSTM / nn.GRU with autograd (float64), and against
themselves: threads, forward-only, the fused train step, sampling, bad input."""
import numpy as np
import pytest

from conftest import rel_err
from fastrnn._layout import ModelSpec, unflatten
from fastrnn.backends.cython_backend import load_kernels

K = load_kernels()
CELLS = {"rnn": (0, 0), "relu": (0, 1), "lstm": (1, 0), "gru": (2, 0)}
SHAPES = [(1, 7, 5, 3), (3, 9, 17, 11), (4, 5, 33, 13)]   # (B, T, H, V)
OPT = {"adagrad": 0, "sgd": 1, "rmsprop": 2, "adam": 3}


def spec_of(kind, H, V, L):
    cell, relu = CELLS[kind]
    return ModelSpec(("rnn", "lstm", "gru")[cell], V, H, L, "relu" if relu else "tanh")


def cases():
    for kind in CELLS:
        for L in (1, 2, 3):
            if kind == "rnn" and L == 1:
                continue  # min-char-rnn's model: the vanilla kernels
            for shape in SHAPES:
                yield kind, L, shape


class Setup:
    """A random model and chunk (realistic scales: gates neither saturated nor linear)."""

    def __init__(self, kind, L, shape, dtype=np.float64, seed=0, dropout=False):
        B, T, H, V = shape
        rng = np.random.default_rng(seed)
        self.kind, self.L, self.B, self.T, self.H, self.V = kind, L, B, T, H, V
        self.cell, self.relu = CELLS[kind]
        self.spec = spec_of(kind, H, V, L)
        self.dtype = dtype
        n = self.spec.num_params
        p = np.zeros(n)
        for s in self.spec.layout():
            scale = 0.8 if s.name.startswith("weight_ih_l0") else 1.5 / np.sqrt(H)
            p[s.offset:s.offset + s.size] = rng.normal(0, scale, s.size)
        self.params = p.astype(dtype)
        self.offsets = self.spec.offsets()
        self.inputs = rng.integers(0, V, (B, T)).astype(np.int32)
        self.targets = rng.integers(0, V, (B, T)).astype(np.int32)
        self.h = rng.normal(0, 0.5, (L, B, H)).astype(dtype)
        self.c = rng.normal(0, 0.5, (L, B, H)).astype(dtype) if self.cell == 1 else None
        self.masks = None
        if dropout and L > 1:
            keep = rng.random((L - 1, B, T, H)) >= 0.3
            self.masks = (keep / 0.7).astype(dtype)

    def work(self, threads=1):
        n = K.stack_work_size(self.B, self.T, self.H, self.V, self.L, self.cell, threads)
        return np.empty(n, dtype=self.dtype)

    def args(self):
        return (self.offsets, self.cell, self.relu, self.H, self.V, self.L)

    def loss_and_grads(self, threads=1, want_d0=True):
        grads = np.full(self.spec.num_params, np.nan, dtype=self.dtype)
        h, c = self.h.copy(), None if self.c is None else self.c.copy()
        dh0 = np.empty_like(h) if want_d0 else None
        dc0 = np.empty_like(h) if want_d0 and c is not None else None
        loss = K.stack_loss_and_grads(self.params, grads, *self.args(), self.inputs,
                                      self.targets, h, c, self.masks, dh0, dc0,
                                      self.work(threads), threads)
        return dict(loss=loss, grads=grads, h=h, c=c, dh0=dh0, dc0=dc0)


def torch_reference(s):
    """Loss, flat gradients, dh0, dc0 and final state by PyTorch's modules and autograd, in
    float64. Without masks one nn.RNN/LSTM/GRU(num_layers=L); with masks a loop of one-layer
    modules with the masks multiplied in between."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    named = {k: torch.tensor(v, dtype=torch.float64)
             for k, v in unflatten(s.params.astype(np.float64), s.spec).items()}
    kw = dict(batch_first=True, dtype=torch.float64)
    if s.cell == 0:
        make = lambda I, n: nn.RNN(I, s.H, num_layers=n, nonlinearity="relu" if s.relu else
                                   "tanh", **kw)
    else:
        make = lambda I, n: (nn.LSTM if s.cell == 1 else nn.GRU)(I, s.H, num_layers=n, **kw)
    h0 = torch.tensor(s.h, dtype=torch.float64, requires_grad=True)
    c0 = torch.tensor(s.c, dtype=torch.float64, requires_grad=True) if s.c is not None else None
    x = nn.functional.one_hot(torch.tensor(s.inputs, dtype=torch.long), s.V).double()
    mods = []   # (module, {its param name: our name})
    if s.masks is None:
        m = make(s.V, s.L)
        mods.append((m, {f"{w}_l{k}": f"{w}_l{k}" for k in range(s.L)
                         for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}))
    else:
        for k in range(s.L):
            m = make(s.V if k == 0 else s.H, 1)
            mods.append((m, {f"{w}_l0": f"{w}_l{k}"
                             for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}))
    with torch.no_grad():
        for m, names in mods:
            for theirs, ours in names.items():
                getattr(m, theirs).copy_(named[ours])
    Why = named["Why"].clone().requires_grad_(True)
    by = named["by"].clone().requires_grad_(True)
    if s.masks is None:
        state = (h0, c0) if s.cell == 1 else h0
        out, last = mods[0][0](x, state)
        hT, cT = (last if s.cell == 1 else (last, None))
    else:
        masks = torch.tensor(s.masks, dtype=torch.float64)
        hs, cs = [], []
        inp = x
        for k, (m, _) in enumerate(mods):
            state = (h0[k:k + 1], c0[k:k + 1]) if s.cell == 1 else h0[k:k + 1]
            out, last = m(inp, state)
            hs.append(last[0] if s.cell == 1 else last)
            if s.cell == 1:
                cs.append(last[1])
            inp = out * masks[k] if k < s.L - 1 else out
        out = inp
        hT = torch.cat(hs)
        cT = torch.cat(cs) if s.cell == 1 else None
    logits = out @ Why.T + by
    loss = nn.functional.cross_entropy(logits.reshape(-1, s.V),
                                       torch.tensor(s.targets, dtype=torch.long).reshape(-1),
                                       reduction="sum")
    loss.backward()
    grads = np.zeros(s.spec.num_params)
    slot = {sl.name: sl for sl in s.spec.layout()}
    for m, names in mods:
        for theirs, ours in names.items():
            sl = slot[ours]
            grads[sl.offset:sl.offset + sl.size] = getattr(m, theirs).grad.numpy().ravel()
    for name, t in (("Why", Why), ("by", by)):
        grads[slot[name].offset:slot[name].offset + slot[name].size] = t.grad.numpy().ravel()
    return dict(loss=loss.item(), grads=grads, h=hT.detach().numpy(),
                c=None if cT is None else cT.detach().numpy(), dh0=h0.grad.numpy(),
                dc0=None if c0 is None else c0.grad.numpy())


def assert_close(got, ref, tol):
    assert rel_err(got["loss"], ref["loss"]) <= tol, (got["loss"], ref["loss"])
    for key in ("grads", "h", "c", "dh0", "dc0"):
        if ref[key] is None:
            assert got[key] is None
            continue
        err = rel_err(got[key], ref[key])
        assert err <= tol, f"{key}: relative error {err:.3g}"


@pytest.mark.parametrize("kind,L,shape", list(cases()))
def test_matches_torch_float64(kind, L, shape):
    s = Setup(kind, L, shape)
    assert_close(s.loss_and_grads(), torch_reference(s), 1e-10)


@pytest.mark.parametrize("kind,L,shape", [c for c in cases() if c[1] > 1])
def test_dropout_masks_match_torch(kind, L, shape):
    s = Setup(kind, L, shape, seed=1, dropout=True)
    assert_close(s.loss_and_grads(), torch_reference(s), 1e-10)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("L", [2, 3])
def test_matches_torch_float32(kind, L):
    s64 = Setup(kind, L, (4, 5, 33, 13), seed=2, dropout=True)
    s32 = Setup(kind, L, (4, 5, 33, 13), np.float32, seed=2, dropout=True)
    assert_close(s32.loss_and_grads(), torch_reference(s64), 1e-4)


def test_the_padding_of_the_gradients_is_zero_and_every_slot_is_set():
    s = Setup("lstm", 2, (3, 9, 17, 11))
    g = s.loss_and_grads()["grads"]
    used = np.zeros(len(g), bool)
    for sl in s.spec.layout():
        used[sl.offset:sl.offset + sl.size] = True
    assert np.all(g[~used] == 0) and np.all(np.isfinite(g))
    assert (~used).any()  # the layout does have padding here


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_two_threads_match_one(kind, dtype, tol):
    s = Setup(kind, 3, (5, 6, 21, 9), dtype, seed=3, dropout=True)
    one, two = s.loss_and_grads(1), s.loss_and_grads(2)
    for key in ("grads", "h", "c", "dh0", "dc0"):
        if one[key] is not None:
            assert rel_err(one[key], two[key]) <= tol, key
    assert rel_err(one["loss"], two["loss"]) <= tol


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("threads", [1, 2])
def test_forward_loss_equals_the_loss_of_loss_and_grads(kind, threads):
    s = Setup(kind, 2, (3, 9, 17, 11), seed=4)
    ref = s.loss_and_grads(threads)
    h, c = s.h.copy(), None if s.c is None else s.c.copy()
    loss = K.stack_forward_loss(s.params, *s.args(), s.inputs, s.targets, h, c,
                                s.work(threads), threads)
    assert loss == ref["loss"]
    assert np.array_equal(h, ref["h"])
    if c is not None:
        assert np.array_equal(c, ref["c"])
    h = s.h.copy()
    c = None if s.c is None else s.c.copy()
    assert K.stack_forward_loss(s.params, *s.args(), s.inputs, None, h, c,
                                s.work(threads), threads) == 0.0
    assert np.array_equal(h, ref["h"])


@pytest.mark.parametrize("kind", ["lstm", "gru", "relu"])
@pytest.mark.parametrize("opt", ["adagrad", "adam", "rmsprop"])
@pytest.mark.parametrize("threads", [1, 2])
def test_train_step_equals_loss_and_grads_then_optimizer_update(kind, opt, threads):
    s = Setup(kind, 2, (4, 5, 33, 13), seed=5, dropout=True)
    n = s.spec.num_params
    code = OPT[opt]
    rng = np.random.default_rng(6)
    mem0, mem20 = rng.random(n), rng.random(n)
    kw = dict(clip=0.5, beta1=0.8, beta2=0.95, step=3, clip_norm=2.0, grad_scale=0.1)
    ref = s.loss_and_grads(threads, want_d0=False)
    p_ref, m_ref, m2_ref = s.params.copy(), mem0.copy(), mem20.copy()
    K.optimizer_update(p_ref, ref["grads"], m_ref, m2_ref if opt == "adam" else None, code,
                       0.01, 1e-6, **kw)
    p, m, m2 = s.params.copy(), mem0.copy(), mem20.copy()
    grads = np.empty(n)
    h, c = s.h.copy(), None if s.c is None else s.c.copy()
    loss = K.stack_train_step(p, grads, m, *s.args(), s.inputs, s.targets, h, c, s.masks,
                              s.work(threads), threads, code, 0.01, 1e-6, kw["clip"],
                              m2 if opt == "adam" else None, kw["beta1"], kw["beta2"],
                              kw["step"], kw["clip_norm"], kw["grad_scale"])
    assert loss == ref["loss"]
    assert np.array_equal(p, p_ref) and np.array_equal(m, m_ref) and np.array_equal(m2, m2_ref)
    assert np.array_equal(h, ref["h"])
    # guarded: the same step, reported taken
    p, m, m2 = s.params.copy(), mem0.copy(), mem20.copy()
    h, c = s.h.copy(), None if s.c is None else s.c.copy()
    undo = np.empty(K.undo_size(n, code))
    out = K.stack_train_step(p, grads, m, *s.args(), s.inputs, s.targets, h, c, s.masks,
                             s.work(threads), threads, code, 0.01, 1e-6, kw["clip"],
                             m2 if opt == "adam" else None, kw["beta1"], kw["beta2"],
                             kw["step"], kw["clip_norm"], kw["grad_scale"], undo)
    assert out == (ref["loss"], True)
    assert np.array_equal(p, p_ref) and np.array_equal(m, m_ref)


@pytest.mark.parametrize("threads", [1, 2])
def test_guarded_train_step_is_undone_on_a_non_finite_value(threads):
    s = Setup("lstm", 2, (4, 5, 33, 13), seed=7)
    n = s.spec.num_params
    p0 = s.params.copy()
    mem0 = np.random.default_rng(8).random(n)
    for scale, case in ((1e300, "overflow"), (1.0, "nan loss")):
        p = p0.copy()
        if case == "nan loss":
            p[s.spec.layout()[-1].offset] = np.inf   # by: logits inf - inf
        p_before = p.copy()
        m, m2 = mem0.copy(), mem0.copy()
        h, c = s.h.copy(), s.c.copy()
        undo = np.empty(K.undo_size(n, 3))
        loss, taken = K.stack_train_step(p, np.empty(n), m, *s.args(), s.inputs, s.targets, h,
                                         c, None, s.work(threads), threads, 3, 0.01, 1e-8, None,
                                         m2, 0.9, 0.999, 1, None, scale, undo)
        assert not taken, case
        assert np.isfinite(loss) == (case == "overflow")
        assert np.array_equal(p, p_before, equal_nan=True) and np.array_equal(m, mem0)
        assert np.array_equal(m2, mem0)
        assert np.array_equal(h, s.h) and np.array_equal(c, s.c)


# -- sampling --------------------------------------------------------------------------------

def numpy_step(s, p, x, h, c):
    """One step of the stack on id x from h, c (L, H), in numpy (float64)."""
    named = unflatten(p, s.spec)
    sig = lambda a: 1 / (1 + np.exp(-a))
    inp = np.eye(s.V)[x]
    h, c = h.copy(), None if c is None else c.copy()
    H = s.H
    for k in range(s.L):
        gx = named[f"weight_ih_l{k}"] @ inp + named[f"bias_ih_l{k}"]
        gh = named[f"weight_hh_l{k}"] @ h[k] + named[f"bias_hh_l{k}"]
        if s.cell == 0:
            a = gx + gh
            h[k] = np.maximum(a, 0) if s.relu else np.tanh(a)
        elif s.cell == 1:
            a = gx + gh
            i, f, g, o = sig(a[:H]), sig(a[H:2 * H]), np.tanh(a[2 * H:3 * H]), sig(a[3 * H:])
            c[k] = f * c[k] + i * g
            h[k] = o * np.tanh(c[k])
        else:
            r, z = sig(gx[:H] + gh[:H]), sig(gx[H:2 * H] + gh[H:2 * H])
            nn_ = np.tanh(gx[2 * H:] + r * gh[2 * H:])
            h[k] = (1 - z) * nn_ + z * h[k]
        inp = h[k]
    return h, c


def numpy_sample(s, p, h, c, u, temperature, greedy, n):
    named = unflatten(p, s.spec)
    out = []
    for k in range(n):
        z = named["Why"] @ h[-1] + named["by"]
        if greedy:
            idx = int(np.argmax(z))
        else:
            e = np.exp((z - z.max()) / temperature)
            cum = np.cumsum(e)
            idx = min(int(np.searchsorted(cum, u[k] * cum[-1], side="right")), s.V - 1)
        out.append(idx)
        h, c = numpy_step(s, p, idx, h, c)
    return np.array(out), h, c


def run_sample(s, n, u, temperature=1.0, greedy=False, top_k=0, top_p=1.0, threads=1):
    h = s.h[:, 0].copy()
    c = None if s.c is None else s.c[:, 0].copy()
    out = np.empty(n, dtype=np.int32)
    work = np.empty(K.stack_sample_work_size(s.H, s.V, s.L, s.cell), dtype=s.dtype)
    K.stack_sample(s.params, *s.args(), h, c, u, temperature, greedy, out, work, top_k, top_p,
                   threads)
    return out, h, c


@pytest.mark.parametrize("kind", list(CELLS))
def test_sample_matches_a_numpy_loop(kind):
    s = Setup(kind, 2, (1, 1, 17, 11), seed=9)
    u = np.random.default_rng(10).random(40)
    for greedy in (False, True):
        out, h, c = run_sample(s, 40, u, 0.9, greedy)
        ref, h_ref, c_ref = numpy_sample(s, s.params, s.h[:, 0], None if s.c is None else
                                         s.c[:, 0], u, 0.9, greedy, 40)
        assert np.array_equal(out, ref)
        assert rel_err(h, h_ref) < 1e-12
        if c is not None:
            assert rel_err(c, c_ref) < 1e-12


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("H", [5, 40])
def test_sample_on_two_threads_is_the_same_as_on_one(kind, H):
    s = Setup(kind, 3, (1, 1, H, 11), np.float32, seed=15)
    u = np.random.default_rng(16).random(50)
    one, two = run_sample(s, 50, u, 0.8), run_sample(s, 50, u, 0.8, threads=2)
    for a, b in zip(one, two):
        assert (a is None and b is None) or np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_greedy_sample_is_the_argmax_of_a_torch_loop(kind):
    torch = pytest.importorskip("torch")
    s = Setup(kind, 2, (1, 1, 24, 13), seed=11)
    out, _, _ = run_sample(s, 30, np.zeros(30), greedy=True)
    named = {k: torch.tensor(v) for k, v in unflatten(s.params, s.spec).items()}
    mod = (torch.nn.LSTM if s.cell == 1 else torch.nn.GRU)(s.V, s.H, num_layers=2,
                                                           dtype=torch.float64)
    with torch.no_grad():
        for name, t in named.items():
            if name not in ("Why", "by"):
                getattr(mod, name).copy_(t)
        h = torch.tensor(s.h[:, 0:1])
        state = (h, torch.tensor(s.c[:, 0:1])) if s.cell == 1 else h
        top = h[-1, 0]
        ids = []
        for _ in range(30):
            idx = int(torch.argmax(named["Why"] @ top + named["by"]))
            ids.append(idx)
            x = torch.nn.functional.one_hot(torch.tensor([idx]), s.V).double()[None]
            o, state = mod(x, state)
            top = o[0, 0]
    assert out.tolist() == ids


def test_sample_top_k_one_is_greedy_and_float32_runs():
    s = Setup("lstm", 3, (1, 1, 20, 9), np.float32, seed=12)
    u = np.random.default_rng(13).random(25)
    a, _, _ = run_sample(s, 25, u, 1.0, False, top_k=1)
    b, _, _ = run_sample(s, 25, u, 1.0, True)
    assert np.array_equal(a, b)
    c, _, _ = run_sample(s, 25, u, 1.0, False, top_p=0.5)
    assert c.min() >= 0 and c.max() < s.V


# -- bad input ---------------------------------------------------------------------------------

def good_kwargs(fn, kind="lstm", dtype=np.float64):
    s = Setup(kind, 2, (3, 4, 6, 5), dtype, seed=14, dropout=True)
    n = s.spec.num_params
    f = lambda shape: np.zeros(shape, dtype=dtype)
    base = dict(params=s.params.copy(), offsets=s.offsets, cell=s.cell, relu=s.relu, H=s.H,
                V=s.V, L=s.L)
    if fn == "stack_sample":
        return dict(base, h=f((s.L, s.H)), c=f((s.L, s.H)) if s.cell == 1 else None,
                    uniforms=np.full(8, 0.5), temperature=1.0, greedy=False,
                    out=np.zeros(8, np.int32),
                    work=f(K.stack_sample_work_size(s.H, s.V, s.L, s.cell)), top_k=0, top_p=1.0)
    kw = dict(base, inputs=s.inputs, targets=s.targets, h=s.h.copy(),
              c=None if s.c is None else s.c.copy(), work=s.work(2), threads=2)
    if fn == "stack_forward_loss":
        return kw
    kw.update(grads=f(n), masks=s.masks)
    if fn == "stack_loss_and_grads":
        return dict(kw, dh0=f(s.h.shape), dc0=f(s.h.shape) if s.cell == 1 else None)
    return dict(kw, mem=f(n), mem2=f(n), optimizer=3, lr=0.01, eps=1e-8, clip=5.0,
                undo=f(2 * n))


BAD = [  # (functions, argument, bad value or a function of the good kwargs)
    ("all", "params", None), ("all", "params", lambda k: k["params"][:-1]),
    ("all", "params", lambda k: k["params"].astype(np.float16)),
    ("all", "params", lambda k: np.repeat(k["params"], 2)[::2]),
    ("all", "offsets", None), ("all", "offsets", lambda k: k["offsets"].astype(np.int32)),
    ("all", "offsets", lambda k: k["offsets"] + 16),
    ("all", "offsets", lambda k: k["offsets"][:-1]),
    ("all", "cell", 3), ("all", "cell", -1), ("all", "cell", "lstm"), ("all", "cell", 1.5),
    ("all", "cell", 2), ("all", "relu", 2), ("all", "relu", 1), ("all", "H", 0), ("all", "H", 7),
    ("all", "H", 2**40), ("all", "H", None), ("all", "V", 0), ("all", "V", 4), ("all", "L", 0),
    ("all", "L", 3), ("all", "L", -2),
    ("chunk", "inputs", None), ("chunk", "inputs", lambda k: k["inputs"][0]),
    ("chunk", "inputs", lambda k: k["inputs"].astype(np.float64)),
    ("chunk", "inputs", lambda k: k["inputs"] + k["V"]),
    ("chunk", "inputs", lambda k: -k["inputs"] - 1),
    ("chunk", "inputs", lambda k: k["inputs"][:0]),
    ("grads", "targets", None), ("chunk", "targets", lambda k: k["targets"][:, :-1]),
    ("chunk", "targets", lambda k: k["targets"] * 0 + 99),
    ("chunk", "h", None), ("chunk", "h", lambda k: k["h"][:, :-1].copy()),
    ("chunk", "h", lambda k: k["h"].astype(np.float32)), ("chunk", "h", lambda k: k["h"][..., ::2]),
    ("chunk", "c", None), ("chunk", "c", lambda k: k["c"][:1].copy()),
    ("chunk", "work", None), ("chunk", "work", lambda k: k["work"][:-1]),
    ("chunk", "threads", 0), ("chunk", "threads", 1.5), ("chunk", "threads", "2"),
    ("chunk", "threads", 2**40),
    ("grads", "grads", None), ("grads", "grads", lambda k: k["grads"][:-1]),
    ("grads", "grads", lambda k: k["params"]), ("grads", "work", lambda k: k["grads"]),
    ("grads", "masks", lambda k: k["masks"][:, :, :-1].copy()),
    ("grads", "masks", lambda k: k["masks"].astype(np.float32)),
    ("stack_loss_and_grads", "dh0", lambda k: k["dh0"][:1].copy()),
    ("stack_loss_and_grads", "dc0", lambda k: k["dc0"][:, :1].copy()),
    ("stack_loss_and_grads", "dh0", lambda k: k["h"]),
    ("stack_train_step", "optimizer", 9), ("stack_train_step", "lr", 0.0),
    ("stack_train_step", "lr", float("nan")), ("stack_train_step", "mem", None),
    ("stack_train_step", "mem2", lambda k: k["mem2"][:-1]),
    ("stack_train_step", "undo", lambda k: k["undo"][:-1]),
    ("stack_train_step", "mem", lambda k: k["grads"]), ("stack_train_step", "clip", -1.0),
    ("stack_sample", "h", lambda k: k["h"][:1].copy()), ("stack_sample", "c", None),
    ("stack_sample", "uniforms", lambda k: k["uniforms"][:3]),
    ("stack_sample", "temperature", 0.0), ("stack_sample", "top_k", -1),
    ("stack_sample", "top_p", 0.0), ("stack_sample", "out", None),
    ("stack_sample", "work", lambda k: k["work"][:-1]), ("stack_sample", "out", lambda k: k["h"]),
    ("stack_sample", "threads", 0), ("stack_sample", "threads", 1.5),
]
FUNCS = ["stack_forward_loss", "stack_loss_and_grads", "stack_train_step", "stack_sample"]
GROUPS = {"all": FUNCS, "chunk": FUNCS[:3], "grads": FUNCS[1:3]}


@pytest.mark.parametrize("fn,arg,bad", [(f, a, b) for g, a, b in BAD
                                        for f in GROUPS.get(g, [g])])
def test_bad_input_is_a_clear_error(fn, arg, bad):
    kw = good_kwargs(fn)
    getattr(K, fn)(**good_kwargs(fn))  # the good call runs
    kw[arg] = bad(kw) if callable(bad) else bad
    with pytest.raises((ValueError, TypeError)) as info:
        getattr(K, fn)(**kw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fn", FUNCS)
def test_c_is_for_lstm_only_and_the_legacy_model_is_refused(fn):
    kw = good_kwargs(fn, "gru")
    getattr(K, fn)(**kw)
    kw["c"] = kw["h"].copy()
    with pytest.raises(ValueError, match="lstm only"):
        getattr(K, fn)(**kw)
    kw = good_kwargs(fn, "relu")
    kw["relu"] = 0
    kw["L"] = 1
    with pytest.raises(ValueError, match="min-char"):
        getattr(K, fn)(**kw)
