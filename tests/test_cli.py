"""The `fastrnn` command: each subcommand run as a user would, outside the source tree."""
import json
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn.checkpoint import read_npz

TEXT = "to be or not to be, that is the question. whether 'tis nobler in the mind\n" * 30


def cli(*args, cwd, ok=True, stdin=None):
    out = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], capture_output=True,
                         timeout=180, cwd=cwd, input=stdin)
    out.stdout_text = out.stdout.decode("utf-8", "replace")
    out.stderr_text = out.stderr.decode("utf-8", "replace")
    if ok:
        assert out.returncode == 0, out.stderr_text[-3000:]
    else:
        assert out.returncode != 0 and "Traceback" not in out.stderr_text, out.stderr_text
        assert len(out.stderr_text.strip().splitlines()) == 1, out.stderr_text
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small training run through the CLI, shared by the tests below."""
    d = tmp_path_factory.mktemp("cli")
    (d / "data.txt").write_text(TEXT)
    out = cli("train", "--data", "data.txt", "--hidden-size", "24", "--seq-length", "16",
              "--batch-size", "4", "--iterations", "120", "--eval-every", "40",
              "--print-every", "40", "--sample-length", "30", "--log", "run.jsonl",
              "--plot", "run.png", "--threads", "1", cwd=d)
    return d, out


def test_train_reports_logs_and_checkpoints(trained):
    d, out = trained
    assert "iter 40, loss:" in out.stdout_text and "val loss" in out.stdout_text
    assert out.stdout_text.count("----") == 2
    records = [json.loads(x) for x in open(d / "run.jsonl")]
    assert {"train", "val"} <= {r["kind"] for r in records}
    assert (d / "run.png").read_bytes()[:4] == b"\x89PNG"
    ck = read_npz(d / "checkpoints" / "latest.npz")
    assert int(ck["trainer/iteration"]) == 120 and str(ck["optimizer/name"]) == "adam"
    assert int(ck["trainer/batch_size"]) == 4  # the default preset, lab, trains with Adam
    assert (d / "checkpoints" / "best.npz").exists()


def test_sample_streams_what_the_model_generates(trained):
    d, _ = trained
    model = fastrnn.CharRNN.load(d / "checkpoints" / "latest.npz")
    out = cli("sample", "checkpoints/latest.npz", "--length", "80", "--prime", "to be",
              "--greedy", cwd=d)
    assert out.stdout_text == "to be" + model.sample_text(80, prime="to be", greedy=True)
    top1 = cli("sample", "checkpoints/latest.npz", "--length", "80", "--prime", "to be",
               "--top-k", "1", "--seed", "4", cwd=d)
    assert top1.stdout_text == out.stdout_text
    seeded = cli("sample", "checkpoints/latest.npz", "--length", "60", "--seed", "7",
                 "--temperature", "0.8", "--top-p", "0.9", cwd=d)
    assert seeded.stdout_text == model.sample_text(60, seed=7, temperature=0.8, top_p=0.9)
    err = cli("sample", "checkpoints/latest.npz", "--prime", "ZEBRA", cwd=d, ok=False)
    assert "not in the vocabulary" in err.stderr_text
    skip = cli("sample", "checkpoints/latest.npz", "--prime", "ZtoZ", "--oov", "skip",
               "--length", "5", "--greedy", cwd=d)
    assert skip.stdout_text == "to" + model.sample_text(5, prime="to", greedy=True)


def test_eval_prints_the_metrics_of_the_model(trained):
    d, _ = trained
    model = fastrnn.CharRNN.load(d / "checkpoints" / "latest.npz")
    (d / "held.txt").write_text("whether to be or not")
    out = json.loads(cli("eval", "checkpoints/latest.npz", "held.txt", "--json",
                         cwd=d).stdout_text)
    bits = model.score("whether to be or not")
    assert out["bits_per_char"] == pytest.approx(bits, rel=1e-6)
    assert out["nats_per_char"] == pytest.approx(bits * np.log(2), rel=1e-6)
    assert out["perplexity"] == pytest.approx(2 ** bits, rel=1e-6)
    assert out["bits_per_byte"] == pytest.approx(bits, rel=1e-6) and out["chars"] == 19
    text = cli("eval", "checkpoints/latest.npz", "held.txt", cwd=d).stdout_text
    assert "bits/char" in text and "perplexity" in text


def test_resume_through_the_cli_is_exact(trained, tmp_path):
    d, _ = trained
    (tmp_path / "data.txt").write_text(TEXT)
    # min-char-rnn's constant lr: a schedule over the run's total (lab's) is planned anew when
    # --resume changes the total, so only a run of the same length could match it
    common = ["--data", "data.txt", "--preset", "min-char-rnn", "--hidden-size", "16",
              "--sample-length", "0", "--print-every", "1000", "--eval-every", "10"]
    cli("train", *common, "--iterations", "50", "--checkpoint-dir", "a", cwd=tmp_path)
    cli("train", *common, "--iterations", "20", "--checkpoint-dir", "b", cwd=tmp_path)
    cli("train", "--resume", "b/latest.npz", "--iterations", "50", "--print-every", "1000",
        "--sample-length", "0", cwd=tmp_path)
    a, b = read_npz(tmp_path / "a/latest.npz"), read_npz(tmp_path / "b/latest.npz")
    for k in ("Wxh", "Whh", "Why", "bh", "by", "trainer/h", "optimizer/state/mem/Whh",
              "trainer/smooth_loss", "trainer/iteration", "trainer/best_val_loss"):
        assert np.array_equal(a[k], b[k]), k


def test_fine_tune_keeps_the_vocabulary(trained, tmp_path):
    d, _ = trained
    (tmp_path / "new.txt").write_text("not to be! " * 40)
    err = cli("train", "--init-from", d / "checkpoints/latest.npz", "--data", "new.txt",
              cwd=tmp_path, ok=False)
    assert "not in the vocabulary" in err.stderr_text  # '!' is new
    cli("train", "--init-from", d / "checkpoints/latest.npz", "--data", "new.txt", "--oov",
        "skip", "--iterations", "5", "--sample-length", "0", cwd=tmp_path)
    tuned = fastrnn.CharRNN.load(tmp_path / "checkpoints/latest.npz")
    assert tuned.vocab == fastrnn.CharRNN.load(d / "checkpoints/latest.npz").vocab
    assert tuned.hidden_size == 24


def test_init_option_and_the_lab_preset_set_up_the_weights(tmp_path):
    """--init uniform (the lab preset's, the default) starts from PyTorch's U(+-1/sqrt(H));
    min-char-rnn's from N(0,1)*0.01: the weights after 0 iterations are the initial ones."""
    (tmp_path / "x.txt").write_text(TEXT)
    common = ("--data", "x.txt", "--hidden-size", "16", "--seq-length", "8", "--batch-size",
              "2", "--iterations", "0", "--sample-length", "0", "--threads", "1")
    seen = {}
    for name, extra in [("gist", ("--preset", "min-char-rnn")),
                        ("uniform", ("--preset", "min-char-rnn", "--init", "uniform")),
                        ("lab", ("--preset", "lab")), ("default", ())]:
        cli("train", *common, *extra, "--checkpoint-dir", name, cwd=tmp_path)
        seen[name] = fastrnn.CharRNN.load(tmp_path / name / "latest.npz").get_params()
    vocab = fastrnn.Vocab.from_text(TEXT)
    for name, init in [("gist", "gist"), ("uniform", "uniform"), ("lab", "uniform"),
                       ("default", "uniform")]:
        want = fastrnn.CharRNN(vocab, 16, init=init, seed=0).get_params()
        assert all(np.array_equal(seen[name][k], want[k]) for k in want), name
    assert np.abs(seen["uniform"]["Whh"]).max() > 0.2  # 1/sqrt(16) = 0.25; gist's: about 0.03


def test_lr_hold_schedule_through_the_cli(tmp_path):
    """--lr-hold F holds the lr for the first F of the run's iterations, then lowers it to
    --lr-decay-to of it (the lab preset: half, to 1% of 6e-3); the checkpoint keeps the plan."""
    (tmp_path / "x.txt").write_text(TEXT)
    common = ("--data", "x.txt", "--hidden-size", "8", "--seq-length", "8", "--batch-size", "2",
              "--iterations", "10", "--sample-length", "0", "--threads", "1")
    for name, extra, plan, lr in [
            ("lab", ("--preset", "lab"), {"start": 5, "end": 10, "to": 0.01, "base_lr": 6e-3},
             6e-5),
            ("mine", ("--optimizer", "sgd", "--lr", "0.1", "--lr-hold", "0.2", "--lr-decay-to",
                      "0.5"), {"start": 2, "end": 10, "to": 0.5, "base_lr": 0.1}, 0.05),
            ("gist", ("--preset", "min-char-rnn"), None, 0.1),  # a constant lr
            ("none", (), {"start": 5, "end": 10, "to": 0.01, "base_lr": 6e-3}, 6e-5)]:  # lab
        cli("train", *common, *extra, "--checkpoint-dir", name, cwd=tmp_path)
        a = read_npz(tmp_path / name / "latest.npz")
        got = str(a["trainer/lr_schedule"])
        assert (json.loads(got) if got else None) == plan, name
        assert float(a["optimizer/hyper/lr"]) == pytest.approx(lr, rel=1e-12), name


def test_bytes_mode_models_any_file(tmp_path):
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 8 + b"\xff\xfe\x00" * 100)
    cli("train", "--data", "blob.bin", "--bytes", "--hidden-size", "8", "--iterations", "20",
        "--sample-length", "0", cwd=tmp_path)
    model = fastrnn.CharRNN.load(tmp_path / "checkpoints/latest.npz")
    assert model.vocab.byte_level and len(model.vocab) == 256
    out = cli("sample", "checkpoints/latest.npz", "--length", "300", "--seed", "1",
              cwd=tmp_path)
    assert out.stdout == model.vocab.to_bytes(model.sample_text(300, seed=1))
    assert len(out.stdout) == 300  # one byte per generated id


def test_baseline_and_export(trained, tmp_path):
    d, _ = trained
    out = json.loads(cli("baseline", "data.txt", "--order", "3", "--json", cwd=d).stdout_text)
    text = TEXT
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    n_val = int(len(ids) * 0.05)
    total, count = fastrnn.KneserNey(3, len(vocab)).fit(ids[:-n_val]).nll(ids[-n_val:])
    assert out["nats_per_char"] == pytest.approx(total / count, rel=1e-12)
    assert out["chars"] == n_val - 1 and out["nats_per_char"] < 0.5  # the text repeats
    cli("export", "checkpoints/latest.npz", "--format", "npz", "-o", tmp_path / "m.npz", cwd=d)
    small = read_npz(tmp_path / "m.npz")
    assert not any(k.startswith(("trainer/", "optimizer/")) for k in small)
    full = read_npz(d / "checkpoints/latest.npz")
    assert all(np.array_equal(small[k], full[k]) for k in ("Wxh", "Whh", "Why", "bh", "by"))
    if not hasattr(fastrnn.CharRNN, "to_torch"):
        err = cli("export", "checkpoints/latest.npz", "--format", "torch", "-o", "m.pt",
                  cwd=d, ok=False)
        assert "to_torch" in err.stderr_text


@pytest.mark.parametrize("args,match", [
    (["sample", "missing.npz"], "does not exist"),
    (["eval", "missing.npz", "x.txt"], "does not exist"),
    (["train", "--data", "x.txt", "--val-frac", "1.5"], "val-frac"),
    (["train", "--data", "x.txt", "--optimizer", "sgd", "--lr", "-1"], "lr"),
    (["train", "--data", "x.txt", "--batch-size", "1000"], "needs at least"),
    (["baseline", "x.txt", "--order", "0"], "order"),
    (["train", "--data", "x.txt", "--hidden-size", "0"], "--hidden-size must be at least 1"),
    (["train", "--init-from", "x.npz", "--init", "uniform"], "leave out one"),
    (["train", "--data", "x.txt", "--lr-hold", "1"], "--lr-hold must be in [0, 1)"),
    (["train", "--data", "x.txt", "--lr-hold", ".5", "--lr-decay-to", "0"],
     "--lr-decay-to must be in (0, 1]"),
    (["train", "--data", "x.txt", "--lr-decay-factor", "0"], "--lr-decay-factor must be in"),
    (["train", "--data", "x.txt", "--lr-decay-factor", ".5", "--lr-decay-every", "0"],
     "--lr-decay-every must be a positive"),
])
def test_user_errors_are_one_line(tmp_path, args, match):
    (tmp_path / "x.txt").write_text(TEXT)
    assert match in cli(*args, cwd=tmp_path, ok=False).stderr_text


# -- resuming: the original command with --resume added (issue 17) ---------------------------

ORIGINAL = ["train", "--data", "data.txt", "--hidden-size", "16", "--seq-length", "20", "--lr",
            "0.05", "--clip", "3", "--eval-every", "10", "--sample-length", "0", "--checkpoint-dir",
            "ck", "--val-frac", "0.1", "--seed", "3", "--print-every", "1000", "--init", "gist"]


def test_resume_accepts_the_original_settings_and_names_each_that_differs(tmp_path):
    (tmp_path / "data.txt").write_text(TEXT)
    cli(*ORIGINAL, "--iterations", "20", cwd=tmp_path)
    cli(*ORIGINAL, "--iterations", "40", "--resume", "ck/latest.npz", cwd=tmp_path)
    ck = read_npz(tmp_path / "ck/latest.npz")
    assert int(ck["trainer/iteration"]) == 40
    err = cli(*ORIGINAL, "--resume", "ck/latest.npz", "--hidden-size", "17", "--lr", "0.1",
              "--val-frac", "0.2", "--clip", "0", "--seq-length", "20", cwd=tmp_path,
              ok=False).stderr_text
    for part in ("--hidden-size 17 (the checkpoint's: 16)", "--lr 0.1 (the checkpoint's: 0.05)",
                 "--val-frac 0.2 (the checkpoint's: 0.1)",
                 "--clip (none) (the checkpoint's: 3.0)"):
        assert part in err, err
    assert "--seq-length" not in err and "--seed" not in err
    # issue 17, item 6: --val-frac alone was silently ignored on --resume
    err = cli("train", "--resume", "ck/latest.npz", "--val-frac", "0.3", cwd=tmp_path,
              ok=False).stderr_text
    assert "--val-frac 0.3 (the checkpoint's: 0.1)" in err
    # settings a checkpoint written by the API does not record must be left out
    vocab = fastrnn.Vocab.from_text(TEXT)
    ids = vocab.encode(TEXT)
    tr = fastrnn.Trainer(fastrnn.CharRNN(vocab, 8, backend="numpy"), ids[:-int(len(ids) * 0.05)],
                         seq_length=10)
    tr.save(tmp_path / "api.npz")
    err = cli("train", "--resume", "api.npz", "--data", "data.txt", "--seed", "0", "--iterations",
              "2", cwd=tmp_path, ok=False).stderr_text
    assert "does not record --seed" in err
    cli("train", "--resume", "api.npz", "--data", "data.txt", "--hidden-size", "8",
        "--iterations", "2", "--sample-length", "0", cwd=tmp_path)


def test_resume_refuses_other_held_out_data(tmp_path):
    """Issue 17: a file whose held-out tail alone had changed was accepted on resume."""
    (tmp_path / "data.txt").write_text(TEXT)
    cli(*ORIGINAL, "--iterations", "10", cwd=tmp_path)
    held = TEXT[-int(len(TEXT) * 0.1):]
    (tmp_path / "data.txt").write_text(TEXT[:-len(held)] + held[::-1])
    err = cli("train", "--resume", "ck/latest.npz", "--iterations", "20", cwd=tmp_path,
              ok=False).stderr_text
    assert "held-out (validation) data differs" in err


def test_the_continue_hint_carries_where_the_run_ran():
    from argparse import Namespace
    from fastrnn._resume import hint
    assert hint(Namespace(backend="cython", device="cpu"), "ck/latest.npz") == \
        "fastrnn train --resume ck/latest.npz"
    assert hint(Namespace(backend="torch", device="cuda:1"), "ck/latest.npz") == \
        "fastrnn train --resume ck/latest.npz --backend torch --device cuda:1"


def test_train_and_eval_precision_bf16(tmp_path):
    (tmp_path / "data.txt").write_text(TEXT)
    small = ("--data", "data.txt", "--backend", "numpy", "--hidden-size", "16", "--seq-length",
             "8", "--batch-size", "2", "--iterations", "4", "--eval-every", "2",
             "--sample-length", "10", "--threads", "1")
    assert "bfloat16" in cli("train", "--help", cwd=tmp_path).stdout_text
    out = cli("train", *small, "--precision", "bf16", cwd=tmp_path)
    assert "precision='bf16'" in out.stdout_text
    assert str(read_npz(tmp_path / "checkpoints" / "latest.npz")["precision"]) == "bf16"
    bad = cli("train", "--resume", "checkpoints/latest.npz", "--backend", "numpy",
              "--precision", "fp32", cwd=tmp_path, ok=False)
    assert "--precision fp32 (the checkpoint's: bf16)" in bad.stderr_text
    bad = cli("train", *small, "--precision", "bf16", "--dtype", "float64", cwd=tmp_path,
              ok=False)
    assert "precision='bf16' needs dtype='float32'" in bad.stderr_text
    scores = {p: json.loads(cli("eval", "checkpoints/latest.npz", "data.txt", "--backend",
                                "numpy", "--json", *p, cwd=tmp_path).stdout_text)
              for p in ((), ("--precision", "fp32"), ("--precision", "bf16"))}
    model = fastrnn.CharRNN.load(tmp_path / "checkpoints" / "latest.npz", backend="numpy")
    ids = model.vocab.encode(TEXT)
    assert scores[()]["nats_per_char"] == pytest.approx(model.nll(ids)[0] / (len(ids) - 1))
    assert scores[()] == scores[("--precision", "bf16")]
    assert scores[()]["nats_per_char"] != scores[("--precision", "fp32")]["nats_per_char"]
