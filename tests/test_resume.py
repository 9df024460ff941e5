"""Training checkpoints: exact resume in a fresh process, Ctrl-C, best/latest files, logs."""
import io
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn.checkpoint import CheckpointError, read_npz

SETUP = """
import sys, numpy as np, fastrnn
text = fastrnn.load_shakespeare()[:30000]
vocab = fastrnn.Vocab.from_text(text)
ids = vocab.encode(text)
train, val = ids[:-3000], ids[-3000:]

def make(name, B, decay=False):
    m = fastrnn.CharRNN(vocab, 24, backend="cython", dtype="float32", seed=5)
    opt = fastrnn.make_optimizer(name, m)
    return fastrnn.Trainer(m, train, seq_length=16, batch_size=B, optimizer=opt,
                           reduction="mean" if B > 1 else "sum", val_ids=val, seed=1,
                           lr_schedule=fastrnn.LinearDecay(20, 65, 0.05) if decay else None)

def fit(tr, n, ckdir):
    return tr.fit(n, eval_every=20, sample_every=15, sample_length=20, file=sys.stderr,
                  checkpoint_dir=ckdir, checkpoint_every=25)
"""

FIRST = SETUP + """
tr = make(sys.argv[1], int(sys.argv[2]), sys.argv[5] == "True")
fit(tr, int(sys.argv[3]), sys.argv[4])
"""

SECOND = SETUP + """
tr = fastrnn.Trainer.load(sys.argv[4] + "/latest.npz", train, val_ids=val)
fit(tr, int(sys.argv[3]), sys.argv[4])
"""

EXACT = ("Wxh", "Whh", "Why", "bh", "by", "trainer/h", "trainer/iteration",
         "trainer/smooth_loss", "trainer/position", "trainer/rng_state",
         "trainer/best_val_loss", "optimizer/steps")


def run(code, *args, cwd):
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                         text=True, timeout=300, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("name,B,decay", [("adagrad", 1, False), ("adam", 3, False),
                                          ("adam", 3, True)])
def test_resume_in_a_fresh_process_is_bit_exact(tmp_path, name, B, decay):
    """N+M iterations in one go equal N, save, load in a new process, M more: bit for bit
    (decay: with a learning-rate schedule that is part-way down at the save)."""
    N, M = 35, 30  # the pass has 56 (B=1) or fewer iterations: wraps happen within
    ns = {}
    exec(SETUP, ns)
    one_go = ns["make"](name, B, decay)
    ns["fit"](one_go, N + M, str(tmp_path / "one"))
    run(FIRST, name, B, N, tmp_path / "split", decay, cwd=tmp_path)
    run(SECOND, name, B, M, tmp_path / "split", cwd=tmp_path)
    a = read_npz(tmp_path / "one" / "latest.npz")
    b = read_npz(tmp_path / "split" / "latest.npz")
    for key in EXACT + tuple(k for k in a if k.startswith("optimizer/")) + (
            "trainer/lr_schedule",):
        assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), key
    assert (str(a["trainer/lr_schedule"]) != "") == decay
    if decay:  # the last update's lr: 5% of Adam's default 2e-3
        assert float(a["optimizer/hyper/lr"]) == pytest.approx(1e-4, rel=1e-12)
    assert int(a["trainer/iteration"]) == N + M
    assert os.path.exists(tmp_path / "split" / "best.npz")
    best = read_npz(tmp_path / "one" / "best.npz")
    assert float(best["trainer/best_val_loss"]) == float(a["trainer/best_val_loss"])


def test_resume_refuses_other_data_and_model_files(tmp_path):
    ns = {}
    exec(SETUP, ns)
    tr = ns["make"]("adam", 2)
    tr.fit(3)
    tr.save(tmp_path / "t.npz")
    with pytest.raises(ValueError, match="data differs"):
        fastrnn.Trainer.load(tmp_path / "t.npz", ns["train"][:-1])
    tr.model.save(tmp_path / "model.npz")
    with pytest.raises(CheckpointError, match="model only"):
        fastrnn.Trainer.load(tmp_path / "model.npz", ns["train"])
    back = fastrnn.Trainer.load(tmp_path / "t.npz", ns["train"], backend="numpy")
    assert back.iteration == 3 and back.optimizer.steps == 3 and back.batch_size == 2
    assert isinstance(back.optimizer, fastrnn.Adam) and back.optimizer.betas == (0.9, 0.999)
    assert back.model.backend == "numpy"


def test_fit_reports_logs_and_keeps_the_best(tmp_path):
    ns = {}
    exec(SETUP, ns)
    tr = ns["make"]("adam", 4)
    calls = []
    printed = io.StringIO()
    r = tr.fit(40, print_every=10, eval_every=10, file=printed, log=tmp_path / "log.jsonl",
               checkpoint_dir=tmp_path / "ck", callback=lambda t, loss: calls.append(loss))
    assert calls == list(r.losses) and len(calls) == 40
    assert "iter 10, loss:" in printed.getvalue() and "val loss" in printed.getvalue()
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    train = [x for x in records if x["kind"] == "train"]
    val = [x for x in records if x["kind"] == "val"]
    assert [x["iteration"] for x in train] == [10, 20, 30, 40]
    assert [x["iteration"] for x in val] == [10, 20, 30, 40]
    assert all(x["bits_per_char"] == pytest.approx(x["loss"] / np.log(2)) for x in train)
    best = min(x["loss"] for x in val)
    assert r.best_val_loss == best == tr.best_val_loss
    saved = read_npz(tmp_path / "ck" / "best.npz")
    assert float(saved["trainer/best_val_loss"]) == best
    assert tr.history["val"] == [(x["iteration"], x["loss"]) for x in val]
    fastrnn.plot_history(tmp_path / "log.jsonl", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ctrl_c_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    data = tmp_path / "tiny.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    cmd = [sys.executable, "-m", "fastrnn", "train", "--data", str(data), "--hidden-size", "16",
           "--iterations", "100000000", "--print-every", "50", "--eval-every", "1000000",
           "--checkpoint-dir", "ck", "--sample-length", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    killer = threading.Timer(120, proc.kill)
    killer.start()
    try:
        while "iter 100," not in proc.stdout.readline():
            assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate()
    finally:
        killer.cancel()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted at iteration" in err
    it = int(read_npz(tmp_path / "ck" / "latest.npz")["trainer/iteration"])
    assert f"interrupted at iteration {it:,}" in err and it >= 100
    done = subprocess.run([sys.executable, "-m", "fastrnn", "train", "--resume", "ck/latest.npz",
                           "--iterations", str(it + 20), "--print-every", "10",
                           "--sample-length", "0"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"resuming ck/latest.npz at iteration {it:,}" in done.stdout
    assert f"{it + 20} iterations" in done.stdout
    # a resumed run keeps writing beside the checkpoint it came from
    assert int(read_npz(tmp_path / "ck" / "latest.npz")["trainer/iteration"]) == it + 20


@pytest.mark.parametrize("name,kw", [("sgd", dict(lr=0.02, clip=None, clip_norm=3.0)),
                                     ("rmsprop", dict(decay=0.9, clip=2.0)),
                                     ("adagrad", dict(eps=1e-6)),
                                     ("adam", dict(betas=(0.8, 0.99), clip=1.0))])
def test_every_optimizer_comes_back_with_its_settings(tmp_path, name, kw):
    ids = np.arange(400) % 9
    m = fastrnn.CharRNN(9, 6, backend="cython", dtype="float64")
    tr = fastrnn.Trainer(m, ids, seq_length=8, batch_size=2, reset="never",
                         reduction="mean", optimizer=fastrnn.make_optimizer(name, m, **kw))
    tr.fit(7)
    tr.save(tmp_path / "c.npz")
    back = fastrnn.Trainer.load(tmp_path / "c.npz", ids)
    assert type(back.optimizer) is type(tr.optimizer)
    assert back.optimizer.hyperparameters() == tr.optimizer.hyperparameters()
    assert back.optimizer.steps == 7 and (back.reset, back.reduction) == ("never", "mean")
    for k in tr.optimizer.state:
        assert np.array_equal(back.optimizer.state[k], tr.optimizer.state[k])
    tr.fit(5)
    back.fit(5)
    for k, v in tr.model.get_params().items():
        assert np.array_equal(back.model.get_params()[k], v)


def _start(cmd, cwd, until):
    """A CLI run started in the background, once a stdout line holds `until`."""
    proc = subprocess.Popen([sys.executable, "-m", "fastrnn", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    killer = threading.Timer(120, proc.kill)
    killer.start()
    while until not in proc.stdout.readline():
        assert proc.poll() is None, proc.stderr.read()
    return proc, killer


def _interrupt(proc, killer):
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate()
    finally:
        killer.cancel()


def test_the_continue_hint_keeps_log_plot_samples_and_evaluations(tmp_path):
    """Issue 17: following the printed "continue with" hint lost --log, --plot, --sample-every
    and --eval-every. The run asks for 10**12 iterations (fit reserved 8 bytes each up front:
    "Unable to allocate 7.28 TiB")."""
    (tmp_path / "tiny.txt").write_text("the quick brown fox jumps over the lazy dog. " * 60)
    cmd = ["train", "--data", "tiny.txt", "--hidden-size", "16", "--iterations",
           "1000000000000", "--print-every", "10", "--eval-every", "30", "--sample-every", "40",
           "--sample-length", "0", "--checkpoint-dir", "ck", "--log", "run.jsonl",
           "--plot", "run.png"]
    proc, killer = _start(cmd, tmp_path, "iter 50,")
    _, err = _interrupt(proc, killer)
    assert proc.returncode == 130 and "Traceback" not in err, err
    it = int(read_npz(tmp_path / "ck" / "latest.npz")["trainer/iteration"])
    hint = err.strip().split("continue with: ")[1]
    assert hint == "fastrnn train --resume ck/latest.npz"
    (tmp_path / "run.png").unlink()
    n_records = len((tmp_path / "run.jsonl").read_text().splitlines())
    done = subprocess.run([sys.executable, "-m", "fastrnn", *hint.split()[1:], "--iterations",
                           str(it + 80)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(x) for x in (tmp_path / "run.jsonl").read_text().splitlines()]
    new = [r for r in records[n_records:]]
    assert {"train", "val", "sample"} <= {r["kind"] for r in new}, new
    assert {r["iteration"] for r in new if r["kind"] == "val"} >= {
        i for i in range(it + 1, it + 81) if i % 30 == 0}
    assert all(r["iteration"] % 40 == 0 for r in new if r["kind"] == "sample")
    assert "---- sample at iter" in done.stdout and "val loss" in done.stdout
    assert (tmp_path / "run.png").read_bytes()[:4] == b"\x89PNG"
    # given again on the command line, they take the new values
    done = subprocess.run([sys.executable, "-m", "fastrnn", "train", "--resume", "ck/latest.npz",
                           "--iterations", str(it + 90), "--log", "other.jsonl",
                           "--sample-every", "0"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "other.jsonl").exists() and "---- sample at iter" not in done.stdout


def test_two_runs_in_one_checkpoint_directory(tmp_path):
    """Issue 17: a second run in a directory another run writes to is refused in one line
    naming the first (pid and command); the first is not disturbed."""
    (tmp_path / "tiny.txt").write_text("the quick brown fox jumps over the lazy dog. " * 60)
    cmd = ["train", "--data", "tiny.txt", "--hidden-size", "16", "--iterations", "100000000",
           "--print-every", "10", "--checkpoint-every", "5", "--checkpoint-dir", "ck",
           "--sample-length", "0"]
    first, killer = _start(cmd, tmp_path, "iter 20,")
    try:
        second = subprocess.run([sys.executable, "-m", "fastrnn", *cmd], capture_output=True,
                                text=True, timeout=120, cwd=tmp_path)
        resumed = subprocess.run([sys.executable, "-m", "fastrnn", "train", "--resume",
                                  "ck/latest.npz"], capture_output=True, text=True,
                                 timeout=120, cwd=tmp_path)
        assert first.poll() is None
    finally:
        _, err = _interrupt(first, killer)
    for run in (second, resumed):
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert "ck is in use by another training run" in run.stderr, run.stderr
        assert f"(pid {first.pid}: " in run.stderr and "fastrnn train" in run.stderr
    assert first.returncode == 130 and "Traceback" not in err, err
    assert os.listdir(tmp_path / "ck") == ["latest.npz"]
