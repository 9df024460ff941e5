"""model.to_torch() / CharRNN.from_torch() against PyTorch's own nn.RNN, and checkpoints that move
between backends and devices."""
import numpy as np
import pytest

import fastrnn
from conftest import random_params, rel_err
from torch_helpers import DEVICES, needs_cuda, torch

F = torch.nn.functional
ALL_BACKENDS = ["numpy", "cython", "torch"]


def make(backend="cython", dtype="float64", H=6, seed=0, device="cpu"):
    vocab = fastrnn.Vocab.from_text("hello, wörld\n")
    m = fastrnn.CharRNN(vocab, H, backend=backend, dtype=dtype, device=device)
    m.set_params(random_params(H, len(vocab), np.random.default_rng(seed)))
    return m


def numpy_logits(p, x, h0):
    """Logits (B,T,V) from the model's equations, written out."""
    h, out = h0, []
    for t in range(x.shape[1]):
        h = np.tanh(p["Wxh"][:, x[:, t]].T + h @ p["Whh"].T + p["bh"])
        out.append(h @ p["Why"].T + p["by"])
    return np.stack(out, axis=1)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_exported_module_is_a_plain_rnn_with_fastrnns_logits(backend):
    m = make(backend)
    module = m.to_torch()
    V, H, p = m.vocab_size, m.hidden_size, m.get_params()
    rnn = module.rnn
    assert isinstance(rnn, torch.nn.RNN) and isinstance(module.head, torch.nn.Linear)
    assert (rnn.input_size, rnn.hidden_size, rnn.nonlinearity, rnn.num_layers) == (V, H, "tanh", 1)
    assert rnn.weight_ih_l0.dtype == torch.float64 and module.vocab == m.vocab
    np.testing.assert_array_equal(rnn.weight_ih_l0.detach().numpy(), p["Wxh"])
    np.testing.assert_array_equal(rnn.weight_hh_l0.detach().numpy(), p["Whh"])
    np.testing.assert_array_equal((rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().numpy(), p["bh"])
    np.testing.assert_array_equal(module.head.weight.detach().numpy(), p["Why"])
    np.testing.assert_array_equal(module.head.bias.detach().numpy(), p["by"])

    rng = np.random.default_rng(1)
    x, y = rng.integers(0, V, (3, 9)), rng.integers(0, V, (3, 9))
    h0 = rng.normal(0, 0.5, (3, H))
    with torch.no_grad():
        logits = module(torch.from_numpy(x), torch.from_numpy(h0))
        one = module(torch.from_numpy(x[1]))  # unbatched ids (T,) from a zero state
    assert logits.shape == (3, 9, V) and one.shape == (9, V)
    expected = numpy_logits(p, x, h0)
    assert rel_err(logits.numpy(), expected) <= 1e-12
    assert rel_err(one.numpy(), numpy_logits(p, x[1:2], np.zeros((1, H)))[0]) <= 1e-12
    torch_loss = F.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).reshape(-1),
                                 reduction="sum").item()
    assert m.loss(x, y, h0)[0] == pytest.approx(torch_loss, rel=1e-12)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_imported_rnn_matches_pytorch_forward_and_autograd(backend):
    """A PyTorch-initialised nn.RNN (both biases non-zero): fastrnn's loss and gradients equal
    PyTorch's own forward and autograd on nn.RNN + nn.Linear."""
    torch.manual_seed(0)
    V, H = 11, 7
    rnn = torch.nn.RNN(V, H, nonlinearity="tanh", batch_first=True, dtype=torch.float64)
    head = torch.nn.Linear(H, V, dtype=torch.float64)
    m = fastrnn.CharRNN.from_torch((rnn, head), backend=backend)
    assert (m.vocab_size, m.hidden_size, m.dtype, m.backend) == (V, H, np.float64, backend)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, V, (4, 12)), rng.integers(0, V, (4, 12))
    h0 = rng.normal(0, 0.5, (4, H))
    out, hT = rnn(F.one_hot(torch.from_numpy(x), V).double(), torch.from_numpy(h0)[None])
    loss = F.cross_entropy(head(out).reshape(-1, V), torch.from_numpy(y).reshape(-1),
                           reduction="sum")
    loss.backward()
    got_loss, grads, h = m.loss_and_grads(x, y, h0)
    assert got_loss == pytest.approx(loss.item(), rel=1e-12)
    assert rel_err(h, hT[0].detach().numpy()) <= 1e-12
    expected = {"Wxh": rnn.weight_ih_l0.grad, "Whh": rnn.weight_hh_l0.grad,
                "bh": rnn.bias_ih_l0.grad, "Why": head.weight.grad, "by": head.bias.grad}
    assert rel_err(rnn.bias_ih_l0.grad, rnn.bias_hh_l0.grad) <= 1e-12  # both are dL/dbh
    for k, g in expected.items():
        assert rel_err(grads[k], g.numpy()) <= 1e-10, k


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("src,dst", [("cython", "torch"), ("torch", "numpy"), ("numpy", "cython")])
def test_round_trip_is_exact_in_every_form(src, dst, dtype):
    m = make(src, dtype)
    module = m.to_torch()
    forms = [module, module.state_dict(), (module.rnn, module.head),
             (module.rnn.state_dict(), module.head.state_dict())]
    for form in forms:
        m2 = fastrnn.CharRNN.from_torch(form, backend=dst)
        assert m2.dtype == m.dtype and m2.backend == dst
        for k, v in m.get_params().items():
            np.testing.assert_array_equal(m2.get_params()[k], v)
    assert fastrnn.CharRNN.from_torch(module, backend=dst).vocab == m.vocab
    assert fastrnn.CharRNN.from_torch(module.state_dict(), backend=dst).vocab is None
    assert fastrnn.CharRNN.from_torch(module, dtype="float32").dtype == np.float32
    module.vocab = {"not": "a fastrnn Vocab"}
    assert fastrnn.CharRNN.from_torch(module).vocab is None


def test_biases_are_summed_and_a_missing_bias_is_zero():
    torch.manual_seed(1)
    rnn = torch.nn.RNN(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    p = fastrnn.CharRNN.from_torch((rnn, head), backend="numpy").get_params()
    np.testing.assert_allclose(p["bh"], (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().numpy(),
                               rtol=1e-7)
    assert not np.any(p["by"]) and p["bh"].dtype == np.float32
    p = fastrnn.CharRNN.from_torch((torch.nn.RNN(5, 3, bias=False), head)).get_params()
    assert not np.any(p["bh"])


def test_bad_modules_are_refused_clearly():
    V, H = 5, 3
    head = torch.nn.Linear(H, V)
    sd2 = torch.nn.LSTM(V, H, num_layers=2).state_dict()
    gap = {f"rnn.{k}": v for k, v in sd2.items() if k != "weight_hh_l1"}
    gap.update({"head.weight": torch.zeros(V, H)})
    cases = [
        ((torch.nn.RNN(V, H, bidirectional=True), head), ValueError, "bidirectional=True"),
        ((torch.nn.LSTM(V, H, proj_size=2), head), ValueError, "proj_size=2"),
        ((torch.nn.Linear(V, H), head), TypeError, "nn.RNN, nn.LSTM or nn.GRU"),
        ((torch.nn.RNN(V, H), torch.nn.Linear(H, V + 1)), ValueError, r"weight has shape"),
        ((torch.nn.RNN(V, H), torch.nn.Linear(H + 1, V)), ValueError, r"weight has shape"),
        ((torch.nn.RNN(V, H).state_dict(), "head"), TypeError, "nn.Linear"),
        (("rnn", head), TypeError, "nn.RNN, nn.LSTM or nn.GRU or its state dict"),
        ((torch.nn.RNN(V, H),), ValueError, "pair"),
        (torch.nn.Linear(V, H), TypeError, "`rnn`"),
        ({"rnn.weight_ih_l0": torch.zeros(H, V)}, ValueError, "weight_hh_l0"),
        (gap, ValueError, "lacks 'weight_hh_l1'"),
        ({"rnn.weight_ih_l0": torch.zeros(2 * H, V), "rnn.weight_hh_l0": torch.zeros(2 * H, H),
          "head.weight": torch.zeros(V, H)}, ValueError, r"G = 1 \(rnn\), 3 \(gru\) or 4"),
        ({"rnn.weight_ih_l0": torch.zeros(4 * H, V), "rnn.weight_hh_l0": torch.zeros(3 * H, H),
          "head.weight": torch.zeros(V, H)}, ValueError, "weight_ih_l0 must be"),
        ({"rnn.weight_ih_l0": torch.zeros(H, V), "rnn.weight_hh_l0": torch.zeros(H, H),
          "rnn.weight_ih_l0_reverse": torch.zeros(H, V), "head.weight": torch.zeros(V, H)},
         ValueError, "weight_ih_l0_reverse"),
        ({"rnn.weight_ih_l0": torch.zeros(H, V), "rnn.weight_hh_l0": torch.zeros(H, H),
          "head.weight": torch.zeros(V, H), "embed.weight": torch.zeros(2)}, ValueError,
         "embed.weight"),
        ({"rnn.weight_ih_l0": torch.zeros(H, V, dtype=torch.int64),
          "rnn.weight_hh_l0": torch.zeros(H, H), "head.weight": torch.zeros(V, H)}, TypeError,
         "floating"),
        ({"rnn.weight_ih_l0": torch.full((H, V), float("nan")),
          "rnn.weight_hh_l0": torch.zeros(H, H), "head.weight": torch.zeros(V, H)}, ValueError,
         "NaN"),
        ([1, 2, 3], ValueError, "pair"),
        ("model.pt", TypeError, "state dict"),
    ]
    for obj, exc, match in cases:
        with pytest.raises(exc, match=match) as info:
            fastrnn.CharRNN.from_torch(obj)
        assert "\n" not in str(info.value)
    module = make().to_torch()
    with pytest.raises(ValueError, match="vocab has"):
        fastrnn.CharRNN.from_torch(module, vocab=fastrnn.Vocab.from_text("ab"))
    lstm = (torch.nn.LSTM(V, H, num_layers=2, dropout=0.5), head)
    for kw, match in ((dict(nonlinearity="relu"), "nonlinearity='relu' disagrees"),
                      (dict(dropout=0.1), "dropout=0.1 disagrees")):
        with pytest.raises(ValueError, match=match):
            fastrnn.CharRNN.from_torch(lstm, **kw)
    with pytest.raises(ValueError, match="for cell='rnn' only"):
        fastrnn.CharRNN.from_torch((lstm[0].state_dict(), head.state_dict()), nonlinearity="relu")
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        fastrnn.CharRNN.from_torch((lstm[0].state_dict(), head.state_dict()), dropout=1.0)


# -- checkpoints -------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_checkpoints_move_between_torch_and_the_cpu_backends(tmp_path, device, dtype):
    m = make("torch", dtype, device=device)
    m.save(tmp_path / "t.npz")
    for backend in ALL_BACKENDS:
        m2 = fastrnn.CharRNN.load(tmp_path / "t.npz", backend=backend)
        assert m2.vocab == m.vocab and m2.dtype == m.dtype and m2.device == "cpu"
        for k, v in m.get_params().items():
            np.testing.assert_array_equal(m2.get_params()[k], v)
    make("cython", dtype, seed=3).save(tmp_path / "c.npz")
    m3 = fastrnn.CharRNN.load(tmp_path / "c.npz", backend="torch", device=device)
    assert m3.backend == "torch" and m3.device.split(":")[0] == device
    for k, v in make("cython", dtype, seed=3).get_params().items():
        np.testing.assert_array_equal(m3.get_params()[k], v)


def test_a_cuda_saved_file_loads_on_the_cpu(tmp_path):
    """The entries say where a file came from; they never decide where it loads."""
    m = make("torch")
    m.save(tmp_path / "m.npz")
    arrays = dict(np.load(tmp_path / "m.npz", allow_pickle=False))
    arrays["device"] = np.array("cuda:3")
    from fastrnn.checkpoint import write_npz_atomic
    write_npz_atomic(tmp_path / "cuda.npz", arrays)
    for backend in ALL_BACKENDS:
        m2 = fastrnn.CharRNN.load(tmp_path / "cuda.npz", backend=backend)
        assert m2.device == "cpu"
        np.testing.assert_array_equal(m2.get_params()["Whh"], m.get_params()["Whh"])
    auto = fastrnn.CharRNN.load(tmp_path / "cuda.npz", backend="torch", device="auto")
    assert auto.device == ("cuda:0" if fastrnn.cuda_available() else "cpu")


@needs_cuda
def test_cuda_module_export_and_training_continue_on_cpu(tmp_path):
    text = "abcabcabd" * 40
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    gpu = fastrnn.CharRNN(vocab, 16, backend="torch", device="cuda", dtype="float64")
    cpu = fastrnn.CharRNN(vocab, 16, backend="cython", dtype="float64")
    for m in (gpu, cpu):
        fastrnn.Trainer(m, ids, seq_length=8, optimizer=fastrnn.Adagrad(m, lr=0.01)).fit(20)
    for k, v in cpu.get_params().items():
        assert rel_err(gpu.get_params()[k], v) <= 1e-10, k
    assert gpu.to_torch().rnn.weight_hh_l0.is_cuda
    gpu.save(tmp_path / "g.npz")
    back = fastrnn.CharRNN.load(tmp_path / "g.npz", backend="cython")
    np.testing.assert_array_equal(back.get_params()["Why"], gpu.get_params()["Why"])


# -- every cell and depth ----------------------------------------------------------------------

CELLS = {"rnn-tanh": ("rnn", "tanh"), "rnn-relu": ("rnn", "relu"), "lstm": ("lstm", "tanh"),
         "gru": ("gru", "tanh")}
MODULE_TYPES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def make_stack(cell, L, backend="numpy", dtype="float64", seed=0, device="cpu"):
    kind, nonlinearity = CELLS[cell]
    vocab = fastrnn.Vocab.from_text("hello, wörld\n")
    m = fastrnn.CharRNN(vocab, 5, cell=kind, num_layers=L, nonlinearity=nonlinearity,
                        dropout=0.25 if L > 1 else 0.0, backend=backend, dtype=dtype,
                        device=device, seed=seed, init="uniform")
    rng = np.random.default_rng(seed)
    m.set_params({k: v + rng.normal(0, 0.2, v.shape) for k, v in m.get_params().items()})
    return m


def torch_state(m, rng, B):
    """A random initial state in PyTorch's convention, and the same for fastrnn."""
    L, H = m.num_layers, m.hidden_size
    parts = [torch.from_numpy(rng.normal(0, 0.5, (L, B, H))) for _ in range(1 + (m.cell == "lstm"))]
    ours = tuple(p.numpy() for p in parts)
    ours = ours if m.cell == "lstm" else ours[0]
    if m.spec.legacy:
        ours = ours[0]
    return (tuple(parts) if m.cell == "lstm" else parts[0]), ours


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_exact_for_every_cell_and_depth(cell, L, dtype):
    m = make_stack(cell, L, dtype=dtype, seed=L)
    module = m.to_torch()
    kind, nonlinearity = CELLS[cell]
    rnn = module.rnn
    assert type(rnn) is MODULE_TYPES[kind] and isinstance(module.head, torch.nn.Linear)
    assert (rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.dropout, rnn.batch_first) == \
        (m.vocab_size, 5, L, m.dropout, True)
    assert getattr(rnn, "nonlinearity", "tanh") == nonlinearity and not module.training
    sd = {k: v for k, v in module.state_dict().items()}
    forms = [(module, {}), ((rnn, module.head), {}),
             (sd, dict(nonlinearity=nonlinearity, dropout=m.dropout)),
             ((rnn.state_dict(), module.head.state_dict()),
              dict(nonlinearity=nonlinearity, dropout=m.dropout))]
    for form, kw in forms:
        for backend in ("numpy", "torch"):
            m2 = fastrnn.CharRNN.from_torch(form, backend=backend, **kw)
            assert m2.spec == m.spec and m2.dtype == m.dtype
            got = m2.get_params()
            for k, v in m.get_params().items():
                np.testing.assert_array_equal(got[k], v, err_msg=k)
    # a bare state dict cannot say its dropout or nonlinearity: the defaults are taken
    m3 = fastrnn.CharRNN.from_torch(sd)
    assert (m3.cell, m3.num_layers, m3.nonlinearity, m3.dropout) == (kind, L, "tanh", 0.0)


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_exported_module_gives_fastrnns_logits_loss_and_state(cell, L, backend):
    m = make_stack(cell, L, backend=backend, seed=10 + L)
    module = m.to_torch()
    rng = np.random.default_rng(L)
    V, B, T = m.vocab_size, 3, 8
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    h0, ours = torch_state(m, rng, B)
    with torch.no_grad():
        logits, hT = module(torch.from_numpy(x), h0, return_state=True)
        one = module(torch.from_numpy(x[1]))  # unbatched ids (T,) from a zero state
    assert logits.shape == (B, T, V) and one.shape == (T, V)
    # the numpy reference's own logits
    ref = fastrnn.CharRNN.from_torch(module, backend="numpy")
    nb = ref._backend
    out, _ = nb._forward(x, nb._stack(ref._initial_state(ours, B, False)))
    assert rel_err(logits.numpy(), nb._logits(out)) <= 1e-12
    out1, _ = nb._forward(x[1:2], nb._stack(ref._initial_state(None, 1, False)))
    assert rel_err(one.numpy(), nb._logits(out1)[0]) <= 1e-12
    torch_loss = F.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).reshape(-1),
                                 reduction="sum").item()
    loss, state = m.loss(x, y, ours)
    assert loss == pytest.approx(torch_loss, rel=1e-12)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    hT if isinstance(hT, tuple) else (hT,)):
        assert rel_err(a, b.numpy().reshape(a.shape)) <= 1e-12


FRESH = [("lstm", 2, {}), ("lstm", 1, {}), ("gru", 3, {}), ("rnn", 2, dict(nonlinearity="relu")),
         ("rnn", 3, dict(nonlinearity="tanh"))]


@pytest.mark.parametrize("kind,L,extra", FRESH, ids=[f"{k}{n}" for k, n, _ in FRESH])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_imported_stack_matches_pytorch_forward_and_autograd(kind, L, extra, backend):
    """A freshly initialised PyTorch module (dropout set, eval mode): fastrnn's loss, gradients,
    dL/d(initial state) and last state equal PyTorch's own forward and autograd."""
    torch.manual_seed(L)
    V, H, B, T = 11, 7, 4, 12
    p = 0.3 if L > 1 else 0.0  # PyTorch warns of dropout on one layer
    rnn = MODULE_TYPES[kind](V, H, num_layers=L, dropout=p, batch_first=True,
                             dtype=torch.float64, **extra).eval()
    head = torch.nn.Linear(H, V, dtype=torch.float64)
    m = fastrnn.CharRNN.from_torch((rnn, head), backend=backend)
    assert (m.cell, m.num_layers, m.dropout, m.dtype) == (kind, L, p, np.float64)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    parts = [torch.from_numpy(rng.normal(0, 0.5, (L, B, H))).requires_grad_()
             for _ in range(1 + (kind == "lstm"))]
    out, hT = rnn(F.one_hot(torch.from_numpy(x), V).double(),
                  tuple(parts) if kind == "lstm" else parts[0])
    loss = F.cross_entropy(head(out).reshape(-1, V), torch.from_numpy(y).reshape(-1),
                           reduction="sum")
    loss.backward()
    h0 = tuple(p.detach().numpy() for p in parts)
    got_loss, grads, h = m.loss_and_grads(x, y, h0 if kind == "lstm" else h0[0],
                                          return_dh0=True)
    assert got_loss == pytest.approx(loss.item(), rel=1e-12)
    hT = hT if kind == "lstm" else (hT,)
    h, dh0 = (h, grads.pop("h0")) if kind == "lstm" else ((h,), (grads.pop("h0"),))
    for a, b in zip(h, hT):
        assert rel_err(a, b.detach().numpy()) <= 1e-12
    for a, p in zip(dh0, parts):
        assert rel_err(a, p.grad.numpy()) <= 1e-10
    expected = {name: param.grad.numpy() for name, param in rnn.named_parameters()}
    expected.update(Why=head.weight.grad.numpy(), by=head.bias.grad.numpy())
    assert set(grads) == set(expected)
    for k, g in expected.items():
        assert rel_err(grads[k], g) <= 1e-10, k
