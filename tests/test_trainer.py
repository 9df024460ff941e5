import math
import subprocess
import sys

import numpy as np
import pytest

import fastrnn


def record_chunks(trainer, n):
    seen = []
    be = trainer.model._backend
    orig = be.train_step

    def spy(x, y, h, opt):
        seen.append((x.copy(), y.copy(), h.copy()))
        return orig(x, y, h, opt)

    be.train_step = spy
    trainer.fit(n)
    be.train_step = orig
    return seen


def test_batch1_walks_the_data_like_the_gist():
    ids = np.arange(103) % 7
    model = fastrnn.CharRNN(7, 5, backend="cython", dtype="float64")
    seen = record_chunks(fastrnn.Trainer(model, ids, seq_length=25), 12)
    p, n = 0, 0
    for x, y, h in seen:  # min-char-rnn's loop, written out
        if p + 25 + 1 >= len(ids) or n == 0:
            p, reset = 0, True
        else:
            reset = False
        np.testing.assert_array_equal(x[0], ids[p:p + 25])
        np.testing.assert_array_equal(y[0], ids[p + 1:p + 26])
        assert (np.all(h == 0)) == reset
        p += 25
        n += 1


def test_batched_streams_carry_their_own_state():
    ids = np.arange(1000) % 13
    model = fastrnn.CharRNN(13, 6, backend="cython", dtype="float64")
    tr = fastrnn.Trainer(model, ids, seq_length=10, batch_size=4)
    seen = record_chunks(tr, 30)
    starts = [0, 249, 499, 749]
    for i in range(3):  # each stream continues where it stopped, state carried
        for b in range(4):
            np.testing.assert_array_equal(seen[i][0][b], ids[starts[b] + 10 * i:][:10])
            np.testing.assert_array_equal(seen[i][1][b], ids[starts[b] + 10 * i + 1:][:10])
    assert np.all(seen[0][2] == 0) and np.all(seen[1][2] != 0)
    # stream 0 holds 249 pairs: 24 chunks, then it wraps to its start with a zero state
    np.testing.assert_array_equal(seen[24][0][0], ids[:10])
    assert np.all(seen[24][2][0] == 0) and np.all(seen[24][2][1] != 0)


def test_smooth_loss_follows_the_gist():
    ids = np.arange(500) % 9
    model = fastrnn.CharRNN(9, 8, backend="numpy", dtype="float64")
    r = fastrnn.Trainer(model, ids, seq_length=10).fit(50)
    s = -math.log(1 / 9) * 10
    for loss in r.losses:
        s = 0.999 * s + 0.001 * loss
    assert r.smooth_loss == pytest.approx(s, rel=1e-12)
    assert r.iterations == 50 and r.chars_per_sec > 0


def test_model_learns_shakespeare(shakespeare):
    """Loss per chunk falls well below the uniform T ln V within a few thousand iterations."""
    vocab = fastrnn.Vocab.from_text(shakespeare)
    ids = vocab.encode(shakespeare)
    model = fastrnn.CharRNN(vocab, 100, backend="cython", seed=0)
    r = fastrnn.Trainer(model, ids, seq_length=25).fit(3000)
    uniform = 25 * math.log(len(vocab))
    assert r.losses[0] == pytest.approx(uniform, rel=0.01)  # the 0.01 init is near uniform
    assert r.losses[-300:].mean() < 0.6 * uniform   # about 2.4 nats/char or better
    text = model.sample_text(300, prime="ROMEO", seed=0)
    assert len(text) == 300 and " " in text


def test_cli_train_runs_and_samples(tmp_path):
    data = tmp_path / "tiny.txt"
    data.write_text("to be or not to be, that is the question.\n" * 40)
    out = subprocess.run([sys.executable, "-m", "fastrnn", "train", "--data", str(data),
                          "--iterations", "200", "--print-every", "100", "--hidden-size", "16",
                          "--sample-length", "50"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # not the source tree, whose fastrnn/ has no built kernels
    assert out.returncode == 0, out.stderr
    assert "iter 100, loss:" in out.stdout and "iter 200, loss:" in out.stdout
    assert out.stdout.count("----") == 2


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bin.dat"
    bad.write_bytes(b"\xff\xfe\x00\x81" * 10)
    out = subprocess.run([sys.executable, "-m", "fastrnn", "train", "--data", str(bad)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "not UTF-8" in out.stderr
    out = subprocess.run([sys.executable, "-m", "fastrnn", "train", "--data", str(tmp_path / "no")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr
