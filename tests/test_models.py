"""Stacked rnn/lstm/gru models through the public API: names, state shapes, the trainer's
carried state and dropout masks, checkpoints (format 2 and 1) and exact resume, the CLI."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn._layout import ModelSpec
from fastrnn.checkpoint import read_npz, write_npz_atomic

MODELS = [("rnn", "tanh", 2), ("rnn", "relu", 1), ("lstm", "tanh", 2), ("gru", "tanh", 3)]


def make(cell, nonlinearity="tanh", layers=2, V=7, H=6, backend="numpy", **kw):
    return fastrnn.CharRNN(V, H, cell=cell, num_layers=layers, nonlinearity=nonlinearity,
                           backend=backend, dtype="float64", **kw)


@pytest.mark.parametrize("cell,nonlinearity,layers", MODELS)
def test_names_shapes_and_state(cell, nonlinearity, layers):
    V, H, G = 7, 6, {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    m = make(cell, nonlinearity, layers, V, H)
    p = m.get_params()
    want = {}
    for k in range(layers):
        want |= {f"weight_ih_l{k}": (G * H, V if k == 0 else H), f"weight_hh_l{k}": (G * H, H),
                 f"bias_ih_l{k}": (G * H,), f"bias_hh_l{k}": (G * H,)}
    want |= {"Why": (V, H), "by": (V,)}
    assert {k: v.shape for k, v in p.items()} == want
    assert list(p) == list(want)  # layout order
    x = np.array([[1, 2, 3, 4], [0, 6, 5, 1]])
    loss, grads, state = m.loss_and_grads(x, x, return_dh0=True)
    parts = state if cell == "lstm" else (state,)
    dparts = grads["h0"] if cell == "lstm" else (grads["h0"],)
    assert isinstance(state, tuple) == (cell == "lstm")
    assert all(a.shape == (layers, 2, H) for a in parts + dparts)
    # one sequence: (L,H); the state carries: two half chunks equal one whole
    _, s1 = m.loss(x[0, :2], x[0, :2])
    l2, s2 = m.loss(x[0, 2:], x[0, 2:], h0=s1)
    lw, sw = m.loss(x[0], x[0])
    l1, _ = m.loss(x[0, :2], x[0, :2])
    assert l1 + l2 == pytest.approx(lw, rel=1e-12)
    for a, b in zip(s2 if cell == "lstm" else (s2,), sw if cell == "lstm" else (sw,)):
        assert a.shape == (layers, H)
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_min_char_rnn_model_keeps_its_names_and_state():
    m = fastrnn.CharRNN(5, 4, backend="numpy")
    assert m.spec.legacy and list(m.get_params()) == ["Wxh", "Whh", "Why", "bh", "by"]
    _, state = m.loss([1, 2], [2, 3])
    assert state.shape == (4,)
    assert m.zero_state().shape == (4,) and m.zero_state(3).shape == (3, 4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(cell="foo"), "cell must be one of"),
    (dict(cell="lstm", num_layers=0), "num_layers must be a positive integer"),
    (dict(cell="lstm", dropout=1.0), r"dropout must be a number in \[0, 1\)"),
    (dict(cell="gru", dropout=float("nan")), r"dropout must be a number in \[0, 1\)"),
    (dict(cell="lstm", nonlinearity="relu"), "is for cell='rnn' only"),
    (dict(cell="rnn", nonlinearity="sigmoid"), "nonlinearity must be"),
    (dict(cell="gru", init="identity"), "init='identity' is for cell='rnn'"),
    (dict(cell="rnn", forget_bias=1.0), "forget_bias is for cell='lstm'"),
])
def test_bad_model_arguments_get_one_clear_error(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fastrnn.CharRNN(5, 4, backend="numpy", **kwargs)


def test_bad_states_get_one_clear_error():
    lstm, gru = make("lstm", layers=2), make("gru", layers=2)
    x = np.array([1, 2, 3])
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        lstm.loss(x, x, h0=np.zeros((2, 6)))
    with pytest.raises(TypeError, match="not a tuple"):
        gru.loss(x, x, h0=(np.zeros((2, 6)),))
    with pytest.raises(ValueError, match=r"h0 has shape \(6,\); expected \(2, 6\)"):
        gru.loss(x, x, h0=np.zeros(6))
    with pytest.raises(ValueError, match="c0 holds NaN"):
        lstm.loss(x, x, h0=(np.zeros((2, 6)), np.full((2, 6), np.nan)))


def test_inits_forget_bias_orthogonal_identity():
    H = 8
    m = fastrnn.CharRNN(5, H, cell="lstm", init="orthogonal", forget_bias=1.0, seed=3,
                        backend="numpy", dtype="float64")
    p = m.get_params()
    for g in range(4):
        block = p["weight_hh_l0"][g * H:(g + 1) * H]
        np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-12)
    np.testing.assert_array_equal(p["bias_ih_l0"][H:2 * H] + p["bias_hh_l0"][H:2 * H], 1.0)
    irnn = fastrnn.CharRNN(5, H, nonlinearity="relu", init="identity", backend="numpy")
    np.testing.assert_array_equal(irnn.get_params()["weight_hh_l0"], np.eye(H))
    u = fastrnn.CharRNN(5, H, cell="gru", seed=3, backend="numpy").get_params()
    assert all(np.abs(a).max() <= H ** -0.5 for a in u.values())
    assert all(np.abs(a).max() > 0 for a in u.values())  # PyTorch's U(+-1/sqrt(H)), biases too


def test_dropout_masks_are_inverted_drawn_and_only_while_training():
    ids = np.arange(4000) % 7
    m = make("lstm", layers=3, dropout=0.25)
    tr = fastrnn.Trainer(m, ids, seq_length=10, batch_size=4, seed=5)
    masks = tr.dropout_masks(4, 10)
    assert masks.shape == (2, 4, 10, 6) and masks.dtype == m.dtype
    assert set(np.unique(masks)) == {0.0, 1 / 0.75}
    big = tr.dropout_masks(64, 128)
    assert abs((big == 0).mean() - 0.25) < 0.01
    assert fastrnn.Trainer(make("lstm", layers=3), ids, seq_length=10).dropout_masks(1, 10) \
        is None
    # evaluation and loss() use no masks: the same value twice
    x = ids[:30]
    assert m.loss(x, x)[0] == m.loss(x, x)[0]


def test_masks_change_the_loss_as_the_reference_says():
    """A training step's loss is the numpy reference's loss with the trainer's masks."""
    ids = np.arange(500) % 7
    m = make("gru", layers=2, dropout=0.5, seed=2)
    ref = make("gru", layers=2, dropout=0.5, seed=2)
    tr = fastrnn.Trainer(m, ids, seq_length=8, batch_size=2, seed=9,
                         optimizer=fastrnn.SGD(m, lr=1e-9))
    probe = fastrnn.Trainer(ref, ids, seq_length=8, batch_size=2, seed=9)
    x, y = probe.next_chunk()
    masks = probe.dropout_masks(*x.shape)
    want, _, _ = ref._backend.loss_and_grads(x, y, ref._initial_state(None, 2, False),
                                             masks=masks)
    plain, _, _ = ref._backend.loss_and_grads(x, y, ref._initial_state(None, 2, False))
    assert tr.step() == pytest.approx(want, rel=1e-12)
    assert want != pytest.approx(plain, rel=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_exact_resume_of_an_lstm_with_dropout(tmp_path, backend):
    ids = np.arange(3000) * 7 % 11
    kw = dict(seq_length=12, batch_size=3, seed=4)

    def trainer():
        m = fastrnn.CharRNN(11, 6, cell="lstm", num_layers=2, dropout=0.3, backend=backend,
                            dtype="float32", seed=1)
        return fastrnn.Trainer(m, ids, optimizer=fastrnn.Adam(m, lr=3e-3), **kw)

    straight = trainer()
    straight.fit(14)
    first = trainer()
    first.fit(6)
    first.save(tmp_path / "ck.npz")
    resumed = fastrnn.Trainer.load(tmp_path / "ck.npz", ids, backend=backend)
    resumed.fit(8)
    a, b = straight.model.get_params(), resumed.model.get_params()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(np.array_equal(x, y) for x, y in zip(straight.h, resumed.h))
    assert np.array_equal(straight.optimizer.state["v"], resumed.optimizer.state["v"])


def test_checkpoint_format_2_and_format_1(tmp_path):
    m = make("gru", layers=2, dropout=0.2, vocab=None)
    m.save(tmp_path / "g.npz")
    arrays = read_npz(tmp_path / "g.npz")
    assert int(arrays["format_version"]) == 2 and str(arrays["cell"]) == "gru"
    back = fastrnn.CharRNN.load(tmp_path / "g.npz", backend="numpy")
    assert back.spec == m.spec
    assert all(np.array_equal(back.get_params()[k], v) for k, v in m.get_params().items())
    # a version 1 training checkpoint (min-char-rnn's model, flat optimizer state) still resumes
    ids = np.arange(400) % 5
    v = fastrnn.CharRNN(5, 4, backend="numpy", dtype="float64")
    tr = fastrnn.Trainer(v, ids, seq_length=5)
    tr.fit(3)
    tr.save(tmp_path / "v2.npz")
    new = read_npz(tmp_path / "v2.npz")
    old = {k: a for k, a in new.items() if k not in ("cell", "num_layers", "nonlinearity",
                                                     "dropout", "trainer/dropout_rng_state")
           and not k.startswith("optimizer/state/")}
    old["format_version"] = np.array(1)
    old["optimizer/mem"] = tr.optimizer.state["mem"]
    write_npz_atomic(tmp_path / "v1.npz", old)
    a = fastrnn.Trainer.load(tmp_path / "v1.npz", ids, backend="numpy")
    b = fastrnn.Trainer.load(tmp_path / "v2.npz", ids, backend="numpy")
    assert np.array_equal(a.optimizer.state["mem"], b.optimizer.state["mem"])
    a.fit(2)
    b.fit(2)
    assert all(np.array_equal(a.model.get_params()[k], b.model.get_params()[k])
               for k in ("Wxh", "Whh", "by"))


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastrnn", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_trains_an_lstm_then_resumes_samples_and_evaluates(tmp_path):
    (tmp_path / "d.txt").write_text("the quick brown fox jumps over the lazy dog. " * 60)
    common = ["--data", "d.txt", "--model", "lstm", "--num-layers", "2", "--dropout", "0.5",
              "--hidden-size", "16", "--batch-size", "4", "--seq-length", "16",
              "--print-every", "10", "--sample-length", "0", "--checkpoint-dir", "ck"]
    r = cli("train", *common, "--iterations", "10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "cell='lstm', num_layers=2" in r.stdout
    spec = fastrnn.checkpoint.spec_from_arrays(read_npz(tmp_path / "ck/latest.npz"))
    assert spec == ModelSpec("lstm", spec.vocab_size, 16, 2, "tanh", 0.5)
    r = cli("train", "--resume", "ck/latest.npz", "--iterations", "15", "--print-every", "5",
            "--sample-length", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "iter 15" in r.stdout
    r = cli("sample", "ck/latest.npz", "--length", "40", "--seed", "1", cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout) >= 40, r.stderr
    r = cli("eval", "ck/latest.npz", "d.txt", cwd=tmp_path)
    assert r.returncode == 0 and "nats/char" in r.stdout, r.stderr


@pytest.mark.parametrize("args,match", [
    (["--model", "foo"], "invalid choice: 'foo'"),
    (["--num-layers", "0"], "--num-layers must be at least 1"),
    (["--dropout", "1"], r"--dropout must be in \[0, 1\)"),
    (["--dropout", "nan"], r"--dropout must be in \[0, 1\)"),
    (["--model", "lstm", "--nonlinearity", "relu"], "is for cell='rnn' only"),
])
def test_cli_bad_model_options(tmp_path, args, match):
    (tmp_path / "d.txt").write_text("abcdefgh" * 100)
    r = cli("train", "--data", "d.txt", "--iterations", "1", *args, cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert re.search(match, r.stderr.strip().splitlines()[-1]), r.stderr


@pytest.mark.parametrize("cell,layers", [("lstm", 2), ("gru", 3), ("rnn", 2)])
def test_training_trajectory_matches_numpy(cell, layers):
    """100 iterations of a stacked model with dropout (lr small enough not to be chaotic): the
    compiled fused step and the torch backend follow the numpy reference's trajectory."""
    ids = (np.arange(6000) * 7919 % 13) % 11
    runs = {}
    for backend in [b for b in ("numpy", "cython", "torch")
                    if b in fastrnn.available_backends()]:
        m = fastrnn.CharRNN(11, 9, cell=cell, num_layers=layers, dropout=0.2, backend=backend,
                            dtype="float64", seed=3)
        tr = fastrnn.Trainer(m, ids, seq_length=12, batch_size=4, seed=8,
                             optimizer=fastrnn.Adam(m, lr=1e-3))
        losses = tr.fit(100).losses
        runs[backend] = (losses, m.get_params())
    ref_losses, ref = runs.pop("numpy")
    for backend, (losses, p) in runs.items():
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-9, err_msg=backend)
        for k in ref:
            np.testing.assert_allclose(p[k], ref[k], rtol=1e-7, atol=1e-10,
                                       err_msg=f"{backend} {k}")


def test_the_15_minute_lstm_preset_builds_what_it_says(tmp_path):
    """--preset lstm-15min: the measured 2-layer LSTM 384 (dropout 0.25, Adam 4e-3, T=128,
    B=64, lr held for half the run); checked on the checkpoint of a 2-iteration run."""
    (tmp_path / "d.txt").write_text("to be or not to be, that is the question. " * 400)
    r = cli("train", "--data", "d.txt", "--preset", "lstm-15min", "--iterations", "2",
            "--batch-size", "4", "--threads", "1", "--sample-length", "0", "--checkpoint-dir",
            "ck", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    arrays = read_npz(tmp_path / "ck/latest.npz")
    spec = fastrnn.checkpoint.spec_from_arrays(arrays)
    assert (spec.cell, spec.num_layers, spec.hidden_size, spec.dropout) == ("lstm", 2, 384, 0.25)
    schedule = json.loads(str(arrays["trainer/lr_schedule"]))  # the lr, held for half the run
    assert schedule["base_lr"] == 4e-3 and str(arrays["optimizer/name"]) == "adam"
    assert int(arrays["trainer/seq_length"]) == 128
