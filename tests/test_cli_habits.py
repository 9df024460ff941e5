"""Issue 18, "CLI and API habits": char-rnn/torch-rnn option names, the lr schedules' names,
options that contradict each other, 80-column output, the plot, and API arguments people pass."""
import io
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import cli as fcli
from fastrnn._progress import BAR_FORMAT, postfix, train_line, val_line
from fastrnn.checkpoint import read_npz

TEXT = "to be or not to be, that is the question. whether 'tis nobler in the mind\n" * 30


def run(*args, cwd, ok=True):
    out = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], capture_output=True,
                         text=True, timeout=180, cwd=cwd)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:]
    else:
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    return out


def parse(*argv):
    return vars(fcli.build_parser().parse_args(list(argv)))


@pytest.fixture
def refused(capsys, monkeypatch, tmp_path):
    """stderr of a command line argparse refuses (exit status 2); run in a scratch directory,
    so that one accepted by mistake leaves no files behind."""
    monkeypatch.chdir(tmp_path)
    return lambda *argv: _refused(capsys, *argv)


def _refused(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        fcli.main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


# -- char-rnn / torch-rnn option names ------------------------------------------------------

@pytest.mark.parametrize("theirs,ours,value", [
    ("--rnn_size", "--hidden-size", "128"), ("-rnn_size", "--hidden-size", "128"),
    ("--rnn-size", "--hidden-size", "128"),
    ("--seq_length", "--seq-length", "50"), ("-seq_length", "--seq-length", "50"),
    ("--batch_size", "--batch-size", "50"), ("-batch_size", "--batch-size", "50"),
    ("--num_layers", "--num-layers", "2"), ("-num_layers", "--num-layers", "2"),
    ("--grad-clip", "--clip", "5"), ("--grad_clip", "--clip", "5"), ("-grad_clip", "--clip", "5"),
    ("--learning_rate", "--lr", "0.002"), ("--learning-rate", "--lr", "0.002"),
    ("-learning_rate", "--lr", "0.002"),
    ("--max_epochs", "--epochs", "50"), ("-max_epochs", "--epochs", "50"),
    ("-dropout", "--dropout", "0.5"), ("-model", "--model", "lstm"),
    ("-model_type", "--model", "gru"), ("--init_from", "--init-from", "cv/x.npz"),
    ("-init_from", "--init-from", "cv/x.npz"), ("-seed", "--seed", "123"),
    ("-val_frac", "--val-frac", "0.1"), ("-print_every", "--print-every", "10"),
    ("-eval_val_every", "--eval-every", "1000"), ("-checkpoint_dir", "--checkpoint-dir", "cv"),
    ("-checkpoint_every", "--checkpoint-every", "1000"),
    ("-lr_decay_every", "--lr-decay-every", "5"), ("-lr_decay_factor", "--lr-decay-factor", "0.5"),
])
def test_char_rnn_names_with_the_same_meaning_are_aliases(theirs, ours, value):
    assert parse("train", theirs, value) == parse("train", ours, value)
    assert parse("train", ours, value) != parse("train")  # the option did set something


@pytest.mark.parametrize("theirs,ours,value", [
    ("-primetext", "--prime", "ROMEO"), ("-start_text", "--prime", "ROMEO"),
    ("-length", "--length", "20"), ("-temperature", "--temperature", "0.5"),
    ("-seed", "--seed", "4"),
])
def test_sample_lua_names_are_aliases(theirs, ours, value):
    assert parse("sample", "m.npz", theirs, value) == parse("sample", "m.npz", ours, value)


@pytest.mark.parametrize("argv,hint", [
    (["train", "--learning-rate-decay", "0.97"], "did you mean --lr-decay-factor?"),
    (["train", "-learning_rate_decay", "0.97"], "did you mean --lr-decay-factor?"),
    (["train", "-learning_rate_decay_after", "10"], "--lr-decay-every"),
    (["train", "-gpuid", "0"], "did you mean --backend torch --device cuda:N"),
    (["train", "--gpu", "0"], "did you mean --backend torch --device cuda:N"),
    (["train", "-data_dir", "data/tinyshakespeare"], "did you mean --data DIR/input.txt?"),
    (["train", "-input_h5", "x.h5"], "did you mean --data FILE?"),
    (["train", "-wordvec_size", "64"], "did you mean --hidden-size?"),
    (["train", "-train_frac", "0.9"], "did you mean --val-frac?"),
    (["train", "-savefile", "lstm"], "did you mean --checkpoint-dir?"),
    (["train", "-decay_rate", "0.9"], "did you mean --optimizer rmsprop?"),
    (["sample", "m.npz", "-gpuid", "-1"], "did you mean --backend torch"),
    (["sample", "m.npz", "-sample", "0"], "did you mean --greedy"),
    # names fastrnn has no alias for: the nearest of its own options
    (["train", "--hidden_size", "8"], "did you mean --hidden-size?"),
    (["train", "--rnn_sizes", "8"], "did you mean --hidden-size?"),
    (["train", "--seq_lenght", "8"], "--seq-length"),
    (["sample", "m.npz", "--lenght", "8"], "did you mean --length?"),
])
def test_other_names_get_the_subcommands_usage_and_a_hint(refused, argv, hint):
    err = refused(*argv)
    assert err.startswith(f"usage: fastrnn {argv[0]} "), err  # not the top-level usage
    assert "{train,sample" not in err
    assert err.strip().splitlines()[-1].startswith(f"fastrnn {argv[0]}: error: ")
    assert hint in err, err


# -- learning-rate schedules -----------------------------------------------------------------

def test_lr_decay_is_refused_naming_both_meanings(refused):
    err = refused("train", "--lr-decay", "0.97")
    last = err.strip().splitlines()[-1]
    assert "--lr-decay 0.97 is ambiguous" in last
    assert "--lr-decay-factor 0.97" in last and "--lr-hold 0.97" in last
    assert err.startswith("usage: fastrnn train ")


@pytest.mark.parametrize("argv,match", [
    (["--epochs", "0.5", "--iterations", "10"], "--epochs 0.5 and --iterations 10 both set"),
    (["--max_epochs", "2", "--iterations", "10"], "--epochs 2 and --iterations 10 both set"),
    (["--lr-hold", "0.5", "--lr-decay-factor", "0.9"], "two schedules: give one"),
    (["--lr-decay-every", "2"], "--lr-decay-every E needs --lr-decay-factor F"),
    (["--preset", "min-char-rnn", "--lr-decay-to", "0.1"], "give --lr-hold F too"),
])
def test_contradicting_options_are_refused_before_any_work(tmp_path, argv, match):
    (tmp_path / "x.txt").write_text(TEXT)
    out = run("train", "--data", "x.txt", "--hidden-size", "8", *argv, cwd=tmp_path, ok=False)
    assert match in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_step_decay_multiplies_the_lr_every_n_iterations():
    s = fastrnn.StepDecay(3, 0.5)
    assert [s.factor(i) for i in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    for bad in ((0, 0.5), (2.0, 0.5), (True, 0.5), (2, 0), (2, 1.5), (2, float("nan"))):
        with pytest.raises(ValueError, match="StepDecay"):
            fastrnn.StepDecay(*bad)


def _ids():
    vocab = fastrnn.Vocab.from_text(TEXT)
    return vocab, vocab.encode(TEXT)


def test_step_decay_resumes_exactly_and_old_linear_schedules_still_load(tmp_path):
    vocab, ids = _ids()

    def trainer(schedule):
        model = fastrnn.CharRNN(vocab, 8, backend="numpy", seed=1)
        return fastrnn.Trainer(model, ids, seq_length=10, batch_size=2,
                               optimizer=fastrnn.SGD(model, lr=0.2), lr_schedule=schedule)
    one = trainer(fastrnn.StepDecay(4, 0.5))
    one.fit(10)
    assert one.optimizer.lr == pytest.approx(0.2 * 0.5 ** 2, rel=1e-12)  # update 10: i = 9
    half = trainer(fastrnn.StepDecay(4, 0.5))
    half.fit(5)
    half.save(tmp_path / "a.npz")
    again = fastrnn.Trainer.load(tmp_path / "a.npz", ids, backend="numpy")
    assert repr(again.lr_schedule) == "StepDecay(every=4, factor=0.5)" and again.base_lr == 0.2
    again.fit(5)
    for k, v in one.model.get_params().items():
        np.testing.assert_array_equal(again.model.get_params()[k], v)
    # a checkpoint whose schedule JSON has no "kind" (fastrnn 0.1) holds a LinearDecay
    lin = trainer(fastrnn.LinearDecay(2, 8, 0.1))
    lin.fit(3)
    lin.save(tmp_path / "b.npz")
    assert "kind" not in json.loads(str(read_npz(tmp_path / "b.npz")["trainer/lr_schedule"]))
    back = fastrnn.Trainer.load(tmp_path / "b.npz", ids, backend="numpy")
    assert repr(back.lr_schedule) == "LinearDecay(start=2, end=8, to=0.1)"


def test_lr_decay_factor_through_the_cli_and_resume(tmp_path):
    """--lr-decay-factor F --lr-decay-every E: the lr times F every E epochs of iterations;
    the checkpoint keeps the schedule, and the original command resumes (a differing
    schedule is named)."""
    (tmp_path / "x.txt").write_text(TEXT)
    common = ["train", "--data", "x.txt", "--hidden-size", "8", "--seq-length", "16",
              "--batch-size", "4", "--optimizer", "sgd", "--lr", "0.1", "--lr-decay-factor",
              "0.5", "--lr-decay-every", "0.5", "--sample-length", "0", "--threads", "1",
              "--val-frac", "0"]
    run(*common, "--iterations", "30", cwd=tmp_path)
    a = read_npz(tmp_path / "checkpoints/latest.npz")
    per_epoch = -(-((len(TEXT) - 1) // 4) // 16)  # the trainer's iterations_per_epoch
    every = round(0.5 * per_epoch)
    assert json.loads(str(a["trainer/lr_schedule"])) == {"kind": "step", "every": every,
                                                          "factor": 0.5, "base_lr": 0.1}
    assert float(a["optimizer/hyper/lr"]) == pytest.approx(0.1 * 0.5 ** (29 // every))
    run(*common, "--iterations", "40", "--resume", "checkpoints/latest.npz", cwd=tmp_path)
    b = read_npz(tmp_path / "checkpoints/latest.npz")
    assert int(b["trainer/iteration"]) == 40
    assert float(b["optimizer/hyper/lr"]) == pytest.approx(0.1 * 0.5 ** (39 // every))
    err = run("train", "--resume", "checkpoints/latest.npz", "--lr-hold", "0.5", "--iterations",
              "50", cwd=tmp_path, ok=False).stderr
    assert "--lr-hold 0.5 (the checkpoint's: (none))" in err
    # a hold-then-linear run (recorded under fastrnn 0.1's meta name) resumes with --lr-hold
    hold = ["train", "--data", "x.txt", "--hidden-size", "8", "--sample-length", "0",
            "--val-frac", "0", "--lr-hold", "0.5", "--checkpoint-dir", "h"]
    run(*hold, "--iterations", "10", cwd=tmp_path)
    run(*hold, "--iterations", "12", "--resume", "h/latest.npz", cwd=tmp_path)
    err = run(*hold, "--iterations", "14", "--resume", "h/latest.npz", "--lr-decay-factor",
              "0.5", cwd=tmp_path, ok=False).stderr
    assert "two schedules" in err


# -- 80 columns ---------------------------------------------------------------------------

def test_printed_lines_fit_80_columns():
    worst = train_line(1_000_000, 32768.123456, 4.1234, 12_345_678.0)
    assert len(worst) < 80, worst
    with_skips = train_line(1_000_000, 32768.123456, 4.1234, 123_456.0, skipped=100)
    assert len(with_skips) < 80 and with_skips.endswith("100 step(s) skipped)"), with_skips
    assert worst.startswith("iter 1000000, loss: 32768.123456 (4.1234 nats/char")
    m = {"nats_per_char": 1.2345, "bits_per_char": 1.781, "perplexity": 123.45,
         "bits_per_byte": 1.6}
    for line in (val_line(1_000_000, m, True), val_line(10, dict(m, bits_per_byte=1.781), True)):
        assert len(line) < 80 and "val loss 1.2345 nats/char" in line, line
    assert "1.6000 bits/byte" in val_line(1, m, False)
    assert "1.7810 bits/char" in val_line(1, dict(m, bits_per_byte=1.781), False)


def test_the_progress_bar_keeps_loss_and_speed_visible_at_80_columns():
    from tqdm import tqdm
    text = postfix(1.2345, 1.4567, 123_456.0)
    assert text == "1.234 nats/char (smooth 1.457), 123.5k chars/s"
    for total, n, elapsed in ((2000, 100, 5.0), (100_000, 5000, 600.0), (99_999, 3, 30.0)):
        line = tqdm.format_meter(n, total, elapsed, ncols=80, bar_format=BAR_FORMAT,
                                 postfix=text)
        assert len(line) <= 80 and line.endswith(text) and "|" in line, line


def test_fit_draws_its_bar_within_80_columns(monkeypatch):
    """A real run's bar on a pseudo-terminal 80 columns wide, which tqdm asks for its size."""
    import fcntl
    import struct
    import termios
    import threading
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    chunks = []

    def drain():  # a full pty buffer would block the writer
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    tty = os.fdopen(slave, "w", buffering=1)
    monkeypatch.setattr(sys, "stderr", tty)
    vocab, ids = _ids()
    tr = fastrnn.Trainer(fastrnn.CharRNN(vocab, 8, backend="numpy"), ids, seq_length=10,
                         batch_size=2)
    tr.fit(300, progress=True, file=io.StringIO())
    tty.close()
    reader.join(10)
    os.close(master)
    frames = [f for f in re.split(r"[\r\n]", b"".join(chunks).decode()) if f.strip()]
    assert frames and all(len(f.rstrip()) <= 80 for f in frames), frames
    assert max(len(f) for f in frames) >= 70, frames  # the width was the terminal's
    assert any(re.search(r"nats/char \(smooth \d\.\d{3}\), [\d,.]+k? chars/s", f)
               for f in frames), frames


# -- the plot -------------------------------------------------------------------------------

def test_the_smoothed_curve_is_a_moving_mean_without_a_start_bias():
    from fastrnn.plot import moving_mean
    x = list(np.random.default_rng(0).random(40) + 1.0)
    want = [np.mean(x[max(0, i - 4):i + 1]) for i in range(len(x))]
    np.testing.assert_allclose(moving_mean(x, 5), want, rtol=1e-12)
    assert moving_mean([2.0, 2.0, 2.0], 10) == [2.0, 2.0, 2.0]  # no pull towards any start


def test_plot_draws_the_moving_mean_not_the_gists_average(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes
    drawn = []
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, *a, **k: drawn.append((a, k)) or real(self, *a, **k))
    # the gist's EMA (third column) far above the real losses, as at the start of a run
    train = [(i * 10, 2.0, 4.0) for i in range(1, 101)]
    fastrnn.plot_history({"train": train, "val": []}, tmp_path / "p.png")
    (smooth,) = [a for a, k in drawn if k.get("label", "").startswith("train (mean")]
    assert list(smooth[1]) == [2.0] * 100


def test_plot_history_of_none_is_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="plot_history takes a Trainer"):
        fastrnn.plot_history(None, tmp_path / "x.png")


@pytest.mark.parametrize("where,match", [("nodir/x.png", "does not exist"),
                                         ("out", "is a directory"),
                                         ("x.notaformat", "matplotlib writes")])
def test_a_bad_plot_path_fails_before_training(tmp_path, where, match):
    pytest.importorskip("matplotlib")
    (tmp_path / "x.txt").write_text(TEXT)
    (tmp_path / "out").mkdir()
    out = run("train", "--data", "x.txt", "--hidden-size", "8", "--iterations", "5",
              "--plot", where, cwd=tmp_path, ok=False)
    assert match in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "iterations (" not in out.stdout and not (tmp_path / "checkpoints").exists()


# -- the API ------------------------------------------------------------------------------

def test_trainer_takes_an_optimizer_name():
    vocab, ids = _ids()
    model = fastrnn.CharRNN(vocab, 8, backend="numpy")
    for name, kind in (("adam", fastrnn.Adam), ("sgd", fastrnn.SGD),
                       ("rmsprop", fastrnn.RMSprop), ("adagrad", fastrnn.Adagrad)):
        tr = fastrnn.Trainer(model, ids, optimizer=name)
        assert type(tr.optimizer) is kind and tr.optimizer.model is model
        assert tr.optimizer.hyperparameters() == kind(model).hyperparameters()
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        fastrnn.Trainer(model, ids, optimizer="adamw")
    with pytest.raises(TypeError, match="optimizer must be a fastrnn optimizer"):
        fastrnn.Trainer(model, ids, optimizer=0.1)


def test_top_k_zero_means_off_in_the_api_and_the_cli(tmp_path):
    vocab, _ = _ids()
    model = fastrnn.CharRNN(vocab, 16, backend="cython", seed=3)
    model.save(tmp_path / "m.npz")
    free = model.sample_text(60, seed=5)
    assert model.sample_text(60, top_k=0, seed=5) == free
    assert model.sample_text(60, top_k=2, seed=5) != free  # a cut that does change the draws
    out = run("sample", "m.npz", "--length", "60", "--seed", "5", "--top-k", "0", cwd=tmp_path)
    assert out.stdout == free
    err = run("sample", "m.npz", "--top-k", "-1", cwd=tmp_path, ok=False).stderr
    assert "--top-k must be at least 0" in err
    with pytest.raises(ValueError, match=r"top_k must be a non-negative integer \(0 or None"):
        model.sample_text(5, top_k=-1)


def test_the_missing_torch_message_quotes_whole_commands(monkeypatch):
    from fastrnn import _optional
    monkeypatch.setattr(_optional, "_torch", lambda: (None, ImportError("No module named x")))
    with pytest.raises(ImportError) as exc:
        _optional.require_torch("the torch backend")
    msg = str(exc.value)
    assert msg.endswith('Install it with `pip install torch` (or `pip install '
                        '"fastrnn[torch]"`).'), msg
    assert msg.count("`") % 2 == 0


def test_export_torch_loads_with_weights_only_and_decodes(tmp_path):
    torch = pytest.importorskip("torch")
    vocab = fastrnn.Vocab.from_text(TEXT + "é")
    model = fastrnn.CharRNN(vocab, 12, cell="lstm", num_layers=2, dropout=0.25, seed=2,
                            backend="numpy")
    model.save(tmp_path / "m.npz")
    run("export", "m.npz", "--format", "torch", "-o", "m.pt", cwd=tmp_path)
    d = torch.load(tmp_path / "m.pt", weights_only=True)
    assert d["format"] == "fastrnn-torch" and d["format_version"] == 1
    assert d["model"] == {"cell": "lstm", "vocab_size": len(vocab), "hidden_size": 12,
                          "num_layers": 2, "nonlinearity": "tanh", "dropout": 0.25,
                          "dtype": "float32"}
    assert "".join(d["vocab"]["chars"]) == vocab.chars and d["vocab"]["byte_level"] is False
    assert set(d["state_dict"]) == set(model.to_torch().state_dict())
    back = fastrnn.CharRNN.from_torch(d, backend="numpy")
    assert back.vocab == vocab and (back.cell, back.num_layers, back.dropout) == ("lstm", 2, 0.25)
    for k, v in model.get_params().items():
        np.testing.assert_array_equal(back.get_params()[k], v)
    ids = back.generate(40, seed=1)
    assert "".join(d["vocab"]["chars"][i] for i in ids) == model.sample_text(40, seed=1)
    # a PyTorch-only user: the module from the description, the weights, the logits
    m = d["model"]
    rnn = torch.nn.LSTM(m["vocab_size"], m["hidden_size"], m["num_layers"], batch_first=True)
    head = torch.nn.Linear(m["hidden_size"], m["vocab_size"])
    rnn.load_state_dict({k[4:]: v for k, v in d["state_dict"].items() if k.startswith("rnn.")})
    head.load_state_dict({k[5:]: v for k, v in d["state_dict"].items() if k.startswith("head.")})
    x = torch.tensor(vocab.encode("to be or not")[None].astype(np.int64))
    logits = head(rnn(torch.nn.functional.one_hot(x, m["vocab_size"]).float())[0])
    want = model.to_torch()(x)
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-6)
    assert math.isfinite(float(logits.detach().sum()))
