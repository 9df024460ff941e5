"""Issue 6's catalogue of hostile inputs, at the API (a clear exception) and at the command line
(one line on stderr, a non-zero exit, never a traceback). Kernel-level damage (bad ids, dtypes,
strides, aliasing) is in test_errors.py and test_fuzz.py; checkpoint files (missing, truncated,
not an npz, pickles, wrong shapes, killed writers, full disk, unwritable directory) in
test_checkpoint_faults.py; two models in two threads in test_threads.py; divergence in
test_divergence.py; large inputs in test_large_input.py."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastrnn
import fastrnn.cli
from fastrnn.checkpoint import TMP_TAG, read_npz
from fastrnn.vocab import read_ids, read_text
from test_cli import TEXT, cli


def run_main(capsys, *args):
    """fastrnn.cli.main in this process: (exit code, stdout, stderr)."""
    code = fastrnn.cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, match):
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("fastrnn: error: ") and match in err, err


# -- (1) empty, too short, one distinct character -----------------------------------------------

def test_empty_corpus(tmp_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_ids(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="at least one character"):
        fastrnn.Vocab.from_text("")
    with pytest.raises(ValueError, match="ids is empty"):
        fastrnn.Trainer(fastrnn.CharRNN(3, 4), [])
    for extra in ([], ["--bytes"]):
        code, _, err = run_main(capsys, "train", "--data", tmp_path / "empty.txt", *extra)
        assert_one_line_error(code, err, "is empty: there is no text")


def test_corpus_shorter_than_one_chunk(tmp_path, capsys):
    model = fastrnn.CharRNN(3, 4)
    with pytest.raises(ValueError, match="needs at least 26"):
        fastrnn.Trainer(model, [0, 1, 2] * 8, seq_length=25)
    fastrnn.Trainer(model, [0, 1, 2] * 8 + [0, 1], seq_length=25)  # 26 ids: one chunk
    (tmp_path / "short.txt").write_text("abc")
    code, _, err = run_main(capsys, "train", "--data", tmp_path / "short.txt")
    # the default preset's T=128, its 64 streams cut to the one a short text fits
    assert_one_line_error(code, err, "gives 3 characters to train on; --seq-length 128 x "
                                     "--batch-size 1 needs at least 129")
    code, _, err = run_main(capsys, "train", "--data", tmp_path / "short.txt", "--preset",
                            "min-char-rnn")
    assert_one_line_error(code, err, "gives 3 characters to train on; --seq-length 25 x "
                                     "--batch-size 1 needs at least 26")
    (tmp_path / "thirty.txt").write_text("abcde" * 6)  # 30 = 29 to train on + none held out
    code, _, err = run_main(capsys, "train", "--data", tmp_path / "thirty.txt", "--val-frac",
                            "0.5")
    assert_one_line_error(code, err, "(15 more are held out by --val-frac)")
    code, out, _ = run_main(capsys, "train", "--data", tmp_path / "thirty.txt", "--val-frac", "0",
                            "--iterations", "3", "--hidden-size", "4", "--sample-length", "0",
                            "--checkpoint-dir", "", "--seq-length", "25")
    assert code == 0 and "3 iterations" in out and "T=25, B=1 (the preset's 64 do not" in out


def test_one_distinct_character_trains_to_zero_loss(tmp_path):
    """A text of one repeated character has one possible next character: the loss is exactly
    0 from the start, and training, sampling and scoring all work (trivially)."""
    vocab = fastrnn.Vocab.from_text("z" * 100)
    assert len(vocab) == 1
    for backend in ("numpy", "cython"):
        model = fastrnn.CharRNN(vocab, 8, backend=backend)
        tr = fastrnn.Trainer(model, vocab.encode("z" * 100), seq_length=10, batch_size=2,
                             val_ids=vocab.encode("zzz"))
        result = tr.fit(12, eval_every=6)
        assert np.all(result.losses == 0) and tr.best_val_loss == 0
        assert model.sample_text(20) == "z" * 20 and model.score("zzzz") == 0
    (tmp_path / "z.txt").write_text("z" * 500)
    cli("train", "--data", "z.txt", "--hidden-size", "8", "--iterations", "10",
        "--sample-length", "5", cwd=tmp_path)
    out = cli("sample", "checkpoints/latest.npz", "--length", "7", cwd=tmp_path).stdout_text
    assert out.strip() == "zzzzzzz"
    out = cli("eval", "checkpoints/latest.npz", "z.txt", "--json", cwd=tmp_path).stdout_text
    assert '"bits_per_char": 0.0' in out and '"perplexity": 1.0' in out


# -- (2) binary / non-UTF-8 files ------------------------------------------------------------

def test_binary_file_without_bytes_names_the_option(tmp_path, capsys):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"plain ascii first " * 10 + bytes(range(256)))
    with pytest.raises(ValueError, match=r"not UTF-8 text \(invalid start byte at byte 308\); "
                                         r"use --bytes \(byte_level=True\)"):
        read_ids(blob)
    for command in (["train", "--data", blob], ["baseline", blob]):
        code, _, err = run_main(capsys, *command)
        assert_one_line_error(code, err, "use --bytes")
    vocab, ids = read_ids(blob, byte_level=True)  # with it, any file works
    assert vocab.byte_level and len(vocab) == 256 and len(ids) == blob.stat().st_size
    assert ids.dtype == np.uint8 and bytes(ids.tolist()) == blob.read_bytes()
    # the whole CLI round trip with --bytes: test_cli.py::test_bytes_mode_models_any_file


def test_chunked_reading_matches_reading_the_whole_file(tmp_path, monkeypatch):
    """Multi-byte characters split across read chunks, CRLF newlines (read as "\\n", as
    open() does), an undecodable byte found wherever it is."""
    import fastrnn.vocab
    text = "héllo wörld, 漢字 and emoji 🎉\r\n" * 50 + "tail\r"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    monkeypatch.setattr(fastrnn.vocab, "CHUNK", 7)
    vocab, ids = read_ids(path)
    whole = read_text(path)
    assert "\r" not in whole and vocab == fastrnn.Vocab.from_text(whole)
    assert np.array_equal(ids, vocab.encode(whole)) and vocab.decode(ids) == whole
    path.write_bytes(text.encode("utf-8") + b"\xff" + b"tail")
    bad_at = len(text.encode("utf-8"))
    with pytest.raises(ValueError, match=f"invalid start byte at byte {bad_at}"):
        read_ids(path)
    path.write_bytes("abc漢".encode("utf-8")[:-1])  # a character cut off at the end
    with pytest.raises(ValueError, match="unexpected end of data at byte 3"):
        read_ids(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_data_from_a_fifo_or_a_pipe_is_read_once(tmp_path):
    """Issue 17: a FIFO as --data hung for ever (opened twice), /dev/stdin from a pipe held "no
    text" (its size is 0)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    text = TEXT + "ünïcödé 漢字\n"

    def feed():
        with open(fifo, "w", encoding="utf-8") as f:  # blocks until the reader opens it
            f.write(text)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = cli("train", "--data", "fifo", "--hidden-size", "8", "--iterations", "3",
              "--sample-length", "0", "--val-frac", "0", cwd=tmp_path)
    writer.join(5)
    assert not writer.is_alive()
    assert f"training on fifo: {len(text):,} chars" in out.stdout_text, out.stdout_text
    vocab = fastrnn.Vocab.from_text(text)
    ck = read_npz(tmp_path / "checkpoints" / "latest.npz")
    assert int(ck["vocab_size"]) == len(vocab) and int(ck["trainer/data_length"]) == len(text)
    out = cli("train", "--data", "/dev/stdin", "--hidden-size", "8", "--iterations", "3",
              "--sample-length", "0", "--checkpoint-dir", "", cwd=tmp_path,
              stdin=text.encode("utf-8"))
    assert f"{int(len(text) * 0.95) + 1:,} chars + {int(len(text) * 0.05):,} held out" in \
        out.stdout_text, out.stdout_text
    for byte_level in (False, True):  # the API too, through a pipe
        r, w = os.pipe()
        threading.Thread(target=lambda: (os.write(w, text.encode("utf-8")), os.close(w)),
                         daemon=True).start()
        got_vocab, ids = read_ids(f"/dev/fd/{r}", byte_level=byte_level)
        os.close(r)
        expected = text.encode("utf-8").decode("latin-1") if byte_level else text
        assert got_vocab.decode(ids) == expected and len(got_vocab) == len(set(expected))


def test_a_file_being_appended_to_reads_consistently(tmp_path, monkeypatch):
    """Issue 17: a file growing while it was read failed with a numpy broadcast error (its size
    was taken before reading it twice). Now the read is one pass: what it returns is a prefix
    of the file, with the vocabulary of that prefix."""
    import fastrnn.vocab
    monkeypatch.setattr(fastrnn.vocab, "CHUNK", 512)
    path = tmp_path / "growing.txt"
    path.write_text("abc\n" * 20000)
    stop, appended = threading.Event(), threading.Event()

    def append():
        n = 0
        while not stop.is_set():
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"line {n} with ünïcödé {chr(0x4e00 + n % 500)}\n")
            n += 1
            appended.set()

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    try:
        # On a loaded machine the writer may not be scheduled before three reads finish.
        assert appended.wait(10)
        results = [read_ids(path) for _ in range(3)]
        with_vocab = read_ids(path, vocab=results[0][0], oov="skip")
    finally:
        stop.set()
        writer.join(5)
    whole = path.read_text(encoding="utf-8")
    for vocab, ids in results:
        prefix = vocab.decode(ids)
        assert whole.startswith(prefix) and vocab == fastrnn.Vocab.from_text(prefix)
    grown = [len(ids) for _, ids in results]
    assert grown[-1] > 80000, grown  # the appends were seen
    assert with_vocab[1].dtype == results[0][0].dtype


# -- (3) prime text outside the vocabulary -----------------------------------------------------

def test_prime_outside_the_vocabulary_follows_oov(tmp_path, capsys):
    vocab = fastrnn.Vocab.from_text("abc ?")
    model = fastrnn.CharRNN(vocab, 6)
    with pytest.raises(ValueError, match="not in the vocabulary, among them 'Z'"):
        model.sample_text(5, prime="aZb")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        next(model.stream(5, prime="aZb"))
    skip = model.sample_text(8, prime="aZb", oov="skip", seed=1)
    assert skip == model.sample_text(8, prime="ab", seed=1)
    replace = model.sample_text(8, prime="aZb", oov="replace", seed=1)
    assert replace == model.sample_text(8, prime="a?b", seed=1)
    with pytest.raises(ValueError, match="oov must be one of"):
        model.sample_text(5, prime="a", oov="ignore")
    model.save(tmp_path / "m.npz")
    code, out, _ = run_main(capsys, "sample", tmp_path / "m.npz", "--prime", "aZb", "--oov",
                            "replace", "--length", "8", "--seed", "1")
    assert code == 0 and out == "a?b" + replace
    code, _, err = run_main(capsys, "sample", tmp_path / "m.npz", "--prime", "aZb")
    assert_one_line_error(code, err, "not in the vocabulary")
    # train checks --prime before training, not after it
    (tmp_path / "d.txt").write_text(TEXT)
    code, out, err = run_main(capsys, "train", "--data", tmp_path / "d.txt", "--prime", "Zebra",
                              "--checkpoint-dir", tmp_path / "ck")
    assert_one_line_error(code, err, "--prime: text holds 1 character(s) not in the vocabulary")
    assert not (tmp_path / "ck").exists()


# -- (5) absurd hyperparameters --------------------------------------------------------------

BAD_OPTIONS = [
    (["train", "--hidden-size", "0"], "--hidden-size must be at least 1, got 0"),
    (["train", "--hidden-size", "-5"], "--hidden-size must be at least 1"),
    (["train", "--seq-length", "0"], "--seq-length must be at least 1"),
    (["train", "--seq-length", "-3"], "--seq-length must be at least 1"),
    (["train", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["train", "--batch-size", "-2"], "--batch-size must be at least 1"),
    (["train", "--lr", "0"], "--lr must be a positive finite number, got 0.0"),
    (["train", "--lr", "-0.1"], "--lr must be a positive finite number"),
    (["train", "--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["train", "--lr", "inf"], "--lr must be a positive finite number, got inf"),
    (["train", "--clip", "-1"], "--clip must be positive (0 turns it off"),
    (["train", "--clip", "nan"], "--clip must be positive"),
    (["train", "--clip-norm", "-5"], "--clip-norm must be positive"),
    (["train", "--clip-norm", "nan"], "--clip-norm must be positive"),
    (["train", "--temperature", "-1"], "--temperature must be a finite number >= 0"),
    (["train", "--temperature", "nan"], "--temperature must be a finite number >= 0"),
    (["train", "--temperature", "inf"], "--temperature must be a finite number >= 0"),
    (["train", "--iterations", "-1"], "--iterations must be at least 0"),
    (["train", "--epochs", "0"], "--epochs must be a positive finite number"),
    (["train", "--epochs", "inf"], "--epochs must be a positive finite number"),
    (["train", "--epochs", "nan"], "--epochs must be a positive finite number"),
    (["train", "--val-frac", "nan"], "--val-frac must lie in [0, 1)"),
    (["train", "--eval-every", "-1"], "--eval-every must be at least 0"),
    (["train", "--sample-length", "-1"], "--sample-length must be at least 0"),
    (["train", "--seed", "-1"], "--seed must be at least 0"),
    (["train", "--threads", "0"], "--threads must be at least 1, got 0"),
    (["train", "--lr", "1e300", "--iterations", "2"], "lr=1e+300 is inf as a float32"),
    (["train", "--hidden-size", "3000000000"], ""),  # too big to allocate: still one line
    (["sample", "m.npz", "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
    (["sample", "m.npz", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["sample", "m.npz", "--top-p", "nan"], "--top-p must be in (0, 1]"),
    # --top-k 0 is no cut, as top_k=0 in the API (issue 18): tests/test_cli_habits.py
    (["sample", "m.npz", "--top-k", "-3"], "--top-k must be at least 0, got -3"),
    (["sample", "m.npz", "--temperature", "nan"], "--temperature must be a finite number"),
    (["sample", "m.npz", "--temperature", "-0.5"], "--temperature must be a finite number"),
    (["sample", "m.npz", "--length", "-1"], "--length must be at least 0"),
    (["eval", "m.npz", "d.txt", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["baseline", "d.txt", "--val-frac", "inf"], "--val-frac must lie in [0, 1)"),
]


@pytest.mark.parametrize("args,match", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_absurd_options_are_one_clear_line(tmp_path, capsys, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.txt").write_text(TEXT)
    fastrnn.CharRNN(fastrnn.Vocab.from_text(TEXT), 4).save(tmp_path / "m.npz")
    if args[0] == "train":
        args = ["train", "--data", "d.txt", "--sample-length", "0", "--checkpoint-dir", "",
                *args[1:]]  # the options under test come last and win
    code, _, err = run_main(capsys, *args)
    assert_one_line_error(code, err, match)


def test_api_sampling_arguments_are_checked():
    model = fastrnn.CharRNN(5, 4)
    for kw in (dict(temperature=float("nan")), dict(temperature=-1), dict(top_p=0),
               dict(top_p=1.5), dict(top_p=float("nan")), dict(top_k=-1)):
        with pytest.raises(ValueError):
            model.generate(3, **kw)


# -- (6) a vocabulary that does not fit the --init-from data --------------------------------

def test_init_from_with_data_or_mode_the_vocabulary_does_not_fit(tmp_path, capsys):
    vocab = fastrnn.Vocab.from_text("to be or not")
    fastrnn.CharRNN(vocab, 6).save(tmp_path / "m.npz")
    (tmp_path / "new.txt").write_text("to be! or not? " * 10)
    with pytest.raises(ValueError, match=r"not in the vocabulary, among them '!\?'"):
        read_ids(tmp_path / "new.txt", vocab=vocab)
    _, skipped = read_ids(tmp_path / "new.txt", vocab=vocab, oov="skip")
    assert vocab.decode(skipped) == "to be or not " * 10
    _, replaced = read_ids(tmp_path / "new.txt", vocab=vocab, oov="replace")
    assert vocab.decode(replaced) == "to be  or not  " * 10  # no '?' in it: a space
    common = ["train", "--init-from", tmp_path / "m.npz", "--data", tmp_path / "new.txt",
              "--checkpoint-dir", "", "--sample-length", "0"]
    code, _, err = run_main(capsys, *common)
    assert_one_line_error(code, err, "20 character(s) not in the vocabulary, among them '!?' "
                                     "(see the oov option, --oov on the command line")
    code, _, err = run_main(capsys, *common, "--bytes")
    assert_one_line_error(code, err, "models characters, not bytes; leave out --bytes")
    code, _, err = run_main(capsys, *common, "--hidden-size", "7")
    assert_one_line_error(code, err, "--hidden-size 7 differs from the --init-from model's 6")
    code, _, _ = run_main(capsys, *common, "--oov", "replace", "--iterations", "3")
    assert code == 0
    # the whole round trip (error, then --oov skip): test_cli.py::test_fine_tune_keeps_...;
    # other data under --resume: test_resume.py::test_resume_refuses_other_data_and_model_files


# -- (7) a checkpoint saved from a CUDA model, on a machine without CUDA ---------------------

def as_if_saved_on_cuda(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["device"], arrays["backend"] = np.array("cuda:0"), np.array("torch")
    np.savez(path, **arrays)


def test_a_cuda_saved_checkpoint_loads_on_the_cpu(tmp_path, capsys):
    vocab = fastrnn.Vocab.from_text(TEXT)
    model = fastrnn.CharRNN(vocab, 8)
    tr = fastrnn.Trainer(model, vocab.encode(TEXT), seq_length=10)
    tr.fit(5)
    tr.save(tmp_path / "run.npz")
    as_if_saved_on_cuda(tmp_path / "run.npz")
    assert str(read_npz(tmp_path / "run.npz")["device"]) == "cuda:0"
    for backend in ("numpy", "cython"):
        back = fastrnn.CharRNN.load(tmp_path / "run.npz", backend=backend)
        assert back.device == "cpu" and back.backend == backend
        for k, v in model.get_params().items():
            assert np.array_equal(back.get_params()[k], v)
    resumed = fastrnn.Trainer.load(tmp_path / "run.npz", vocab.encode(TEXT))
    assert resumed.iteration == 5 and resumed.model.device == "cpu"
    resumed.fit(2)
    (tmp_path / "d.txt").write_text(TEXT)
    code, out, _ = run_main(capsys, "sample", tmp_path / "run.npz", "--length", "10", "--seed",
                            "3")
    assert code == 0 and out == model.sample_text(10, seed=3)
    code, _, err = run_main(capsys, "train", "--resume", tmp_path / "run.npz", "--data",
                            tmp_path / "d.txt", "--iterations", "8", "--sample-length", "0",
                            "--val-frac", "0")
    assert code == 0, err  # a resumed run writes beside the checkpoint it came from
    assert int(read_npz(tmp_path / "latest.npz")["trainer/iteration"]) == 8


# -- (9) SIGINT while a checkpoint is being written ----------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="signals and flock")
def test_sigint_during_a_checkpoint_write_leaves_a_complete_file(tmp_path):
    """The CLI writes a checkpoint every iteration; Ctrl-C (twice: the first lets the iteration
    finish and asks for the final checkpoint, the second interrupts whatever is running, a
    write very likely) is sent when a write is seen in flight. latest.npz is always a complete
    checkpoint, the previous or the new one. (Kills and SIGINTs of a bare writer at random
    moments: test_checkpoint_faults.py::test_killed_or_interrupted_writer_never_leaves_...)"""
    (tmp_path / "d.txt").write_text(TEXT)
    cmd = [sys.executable, "-m", "fastrnn", "train", "--data", "d.txt", "--hidden-size", "384",
           "--iterations", "100000", "--checkpoint-every", "1", "--checkpoint-dir", "ck",
           "--print-every", "1000000", "--eval-every", "1000000", "--sample-length", "0"]
    ck = tmp_path / "ck"

    def in_flight():
        try:
            return [n for n in os.listdir(ck) if TMP_TAG in n]
        except FileNotFoundError:
            return []

    for signals in (1, 2):
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        killer = threading.Timer(120, proc.kill)
        killer.start()
        try:
            while not (ck / "latest.npz").exists():  # a first checkpoint is complete
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.01)
            for _ in range(signals):
                deadline = time.monotonic() + 20
                while not in_flight() and proc.poll() is None and time.monotonic() < deadline:
                    pass
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            _, err = proc.communicate()
        finally:
            killer.cancel()
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert in_flight() == [], "a temporary file was left behind"
        saved = read_npz(ck / "latest.npz")  # complete and loadable
        restored = fastrnn.Trainer.load(ck / "latest.npz", fastrnn.Vocab.from_text(
            TEXT).encode(TEXT)[:-int(len(TEXT) * 0.05)])
        assert restored.iteration == int(saved["trainer/iteration"]) >= 1


# -- (11) threads -----------------------------------------------------------------------------

def test_threads_beyond_the_cores_warn_and_zero_is_an_error(tmp_path):
    (tmp_path / "d.txt").write_text(TEXT)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = cli("train", "--data", "d.txt", "--hidden-size", "8", "--iterations", "3",
              "--sample-length", "0", "--threads", cores + 3, cwd=tmp_path)
    lines = out.stderr_text.strip().splitlines()  # (then a warning: 3 iterations don't learn)
    assert lines[0] == (f"fastrnn: warning: threads={cores + 3} is more than the "
                        f"{cores} available cores")
    assert all("worse than a unigram guess" in line for line in lines[1:])
    assert "3 iterations" in out.stdout_text
    err = cli("train", "--data", "d.txt", "--threads", "0", cwd=tmp_path, ok=False)
    assert "--threads must be at least 1, got 0" in err.stderr_text
    # the API (set_num_threads): test_errors.py::test_threads...


# -- issue 17: a useless model is said so, and the sample comes from the best checkpoint -------

def test_a_run_that_ends_worse_than_unigram_warns_and_samples_the_best(tmp_path, capsys,
                                                                       monkeypatch):
    """The model is ruined (all mass on one character) after iteration 150 of 200: the
    evaluations after it warn on stderr, one line each, and the end-of-run sample is drawn from
    best.npz (iteration 150), not from the ruined final model. Without validation, the last
    training characters are scored at the end instead."""
    from test_trainer import _ruin
    (tmp_path / "d.txt").write_text(TEXT)
    original = fastrnn.Trainer._train_chunk

    def ruining(self, *args):
        out = original(self, *args)
        if self.iteration >= 150:
            _ruin(self)
        return out

    monkeypatch.setattr(fastrnn.Trainer, "_train_chunk", ruining)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(capsys, "train", "--data", "d.txt", "--hidden-size", "16",
                              "--iterations", "200", "--eval-every", "50", "--print-every",
                              "1000", "--sample-length", "60", "--backend", "numpy",
                              "--preset", "min-char-rnn")
    assert code == 0, err
    warned = err.strip().splitlines()
    assert len(warned) == 1 and warned[0].startswith("fastrnn: warning: the model's validation "
                                                     "loss") and "iteration 200" in warned[0]
    best = read_npz(tmp_path / "checkpoints" / "best.npz")
    assert int(best["trainer/iteration"]) == 150
    assert "sample from the best checkpoint, checkpoints/best.npz (iteration 150" in out
    sample = out.split("):\n----\n", 1)[1].rsplit("\n----\n", 1)[0]
    model = fastrnn.CharRNN.load(tmp_path / "checkpoints" / "best.npz", backend="numpy")
    assert sample == model.sample_text(60, seed=0)
    code, out, err = run_main(capsys, "train", "--data", "d.txt", "--hidden-size", "16",
                              "--iterations", "160", "--val-frac", "0", "--sample-length", "0",
                              "--checkpoint-dir", "nv", "--backend", "numpy", "--seq-length",
                              "25")  # the default preset, lab, with its streams fitted
    assert code == 0 and err.startswith("fastrnn: warning: the model's training-text (last ")
