"""Data-parallel training: 2 ranks (gloo on the CPU) equal one process over both ranks' streams.

The ranks are forked from the test process (torch is already imported, so this takes about a
second) and run the same entry point as `torchrun -m fastrnn.distributed`; torchrun only adds the
environment that rank_main sets here.
"""
import multiprocessing as mp
import os
import queue
import socket

import numpy as np
import pytest

import fastrnn
from conftest import rel_err
from torch_helpers import torch

dist = torch.distributed
pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()
         and "fork" in mp.get_all_start_methods()),
    reason="needs torch.distributed with gloo, and fork")

ARGS = dict(hidden_size=16, seq_length=8, batch_size=3, seed=2)
# (optimizer settings, reduction): the gist's Adagrad on summed losses, and Adam with both clips
# on the mean over all ranks' tokens
RUNS = [(dict(optimizer="adagrad", lr=0.05, clip=0.5), "sum"),
        (dict(optimizer="adam", lr=0.01, clip=0.05, clip_norm=0.5), "mean")]


def rank_main(rank, port, argv, results):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from fastrnn import distributed
    saves, save = [], fastrnn.CharRNN.save

    def recording_save(model, path):
        saves.append(model.get_params())
        save(model, path)

    fastrnn.CharRNN.save = recording_save
    results.put((rank, distributed.main(argv), saves))


def run_two_ranks(argv):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, port, argv, results)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        out = {}
        for _ in procs:
            rank, code, saves = results.get(timeout=120)
            out[rank] = (code, saves)
        return out
    except queue.Empty:
        pytest.fail(f"the ranks did not finish; exit codes {[p.exitcode for p in procs]}")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


@pytest.mark.parametrize("opt_args,reduction", RUNS)
def test_two_ranks_equal_one_process_over_both_ranks_streams(tmp_path, capfd, opt_args,
                                                             reduction):
    text = "".join(f"{i * 7919 % 1000:03d} is {'odd' if i % 2 else 'even'}; " for i in range(200))
    (tmp_path / "corpus.txt").write_text(text)
    ckpt = tmp_path / "model.npz"
    argv = ["--data", str(tmp_path / "corpus.txt"), "--device", "cpu", "--dtype", "float64",
            "--iterations", "3", "--print-every", "1", "--checkpoint", str(ckpt),
            "--checkpoint-every", "1", "--reduction", reduction]
    for k, v in {**ARGS, **opt_args}.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    out = run_two_ranks(argv)
    printed = capfd.readouterr().out

    # the single-process reference: the numpy backend over all 2 x 3 streams
    vocab = fastrnn.Vocab.from_text(text)
    ref = fastrnn.CharRNN(vocab, ARGS["hidden_size"], backend="numpy", dtype="float64",
                          seed=ARGS["seed"])
    name, hyper = opt_args["optimizer"], {k: v for k, v in opt_args.items() if k != "optimizer"}
    trainer = fastrnn.Trainer(ref, vocab.encode(text), seq_length=ARGS["seq_length"],
                              batch_size=2 * ARGS["batch_size"], reduction=reduction,
                              optimizer=fastrnn.make_optimizer(name, ref, **hyper))
    expected = []
    for _ in range(3):
        trainer.step()
        expected.append(ref.get_params())

    assert out[0][0] == 0 and out[1][0] == 0
    assert out[1][1] == []                       # rank 1 writes no checkpoint ...
    saves = out[0][1]
    assert len(saves) == 4                       # ... rank 0 one per iteration and a final one
    assert rel_err(expected[2]["Whh"], expected[0]["Whh"]) > 1e-3  # the steps do move things
    for got, want in zip(saves, expected + expected[-1:]):
        for k in want:
            assert rel_err(got[k], want[k]) <= 1e-12, k
    final = fastrnn.CharRNN.load(ckpt, backend="numpy").get_params()
    for k in final:
        np.testing.assert_array_equal(final[k], saves[-1][k])
    for i in (1, 2, 3):                          # rank 0 alone logs, the loss over all ranks
        assert printed.count(f"iter {i}, loss:") == 1
    assert f"iter 3, loss: {trainer.smooth_loss:f}" in printed


def test_misuse_is_reported_clearly(capsys):
    from fastrnn import distributed
    m = fastrnn.CharRNN(5, 4, backend="numpy")
    with pytest.raises(ValueError, match="backend='torch'"):
        distributed.DistributedTrainer(m, np.arange(50) % 5, seq_length=5)
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="torchrun"):
            distributed.DistributedTrainer(fastrnn.CharRNN(5, 4, backend="torch"),
                                           np.arange(50) % 5, seq_length=5)
    if "RANK" not in os.environ:
        assert distributed.main(["--iterations", "1"]) == 2
        assert "torchrun" in capsys.readouterr().err


# -- every model: this rank's rows of stacked states and dropout masks ---------------------------

STACKS = {"lstm-2": dict(cell="lstm", num_layers=2, dropout=0.25),
          "gru-3": dict(cell="gru", num_layers=3, dropout=0.4),
          "relu-2": dict(cell="rnn", nonlinearity="relu", num_layers=2, dropout=0.25),
          "min-char": dict()}
V, H, B, T = 7, 6, 3, 5


def stacked_inputs(model, iterations=2):
    """The same random carried state (backend form, 2B rows), chunks and dropout masks on every
    rank and in the reference."""
    rng = np.random.default_rng(4)
    state = model._initial_state(None, 2 * B, False)
    state = (rng.normal(0, 0.5, state.shape) if isinstance(state, np.ndarray)
             else tuple(rng.normal(0, 0.5, a.shape) for a in state))
    chunks = [(rng.integers(0, V, (2 * B, T)).astype(np.int32),
               rng.integers(0, V, (2 * B, T)).astype(np.int32),
               (rng.random((model.num_layers - 1, 2 * B, T, H)) >= 0.3) / 0.7)
              for _ in range(iterations)]
    return state, chunks


def stacked_rank_main(rank, port, kwargs, results):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from fastrnn import distributed
    distributed.setup("cpu")
    try:
        m = fastrnn.CharRNN(V, H, backend="torch", dtype="float64", seed=rank, **kwargs)
        opt = fastrnn.make_optimizer("adam", m, lr=0.01, clip_norm=0.5)
        trainer = distributed.DistributedTrainer(m, np.arange(300) % V, seq_length=T,
                                                 batch_size=B, optimizer=opt)
        trainer.h, chunks = stacked_inputs(m)
        losses = [trainer._train_chunk(x, y, 0.5, masks) for x, y, masks in chunks]
        results.put((rank, m.get_params(), trainer.h, losses))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", list(STACKS))
def test_every_model_trains_its_rows_like_one_process(name):
    """Each rank trains its rows of the carried state (a tuple of (L,B,H) arrays for a stacked
    model) and of the dropout masks; both ranks end equal to one process over all rows."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=stacked_rank_main, args=(r, port, STACKS[name], results))
             for r in range(2)]
    for p in procs:
        p.start()
    try:
        out = dict((r, rest) for r, *rest in (results.get(timeout=120) for _ in procs))
    except queue.Empty:
        pytest.fail(f"the ranks did not finish; exit codes {[p.exitcode for p in procs]}")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()

    ref = fastrnn.CharRNN(V, H, backend="numpy", dtype="float64", seed=0, **STACKS[name])
    opt = fastrnn.make_optimizer("adam", ref, lr=0.01, clip_norm=0.5)
    state, chunks = stacked_inputs(ref)
    losses = [ref._backend.train_step(x, y, state, opt, 0.5, masks) for x, y, masks in chunks]
    parts = (state,) if isinstance(state, np.ndarray) else state
    for rank, (params, h, got_losses) in out.items():
        assert [lo for lo, _ in got_losses] == pytest.approx(losses, rel=1e-12)
        for k, v in ref.get_params().items():
            assert rel_err(params[k], v) <= 1e-12, (rank, k)
        rows = slice(rank * B, (rank + 1) * B)
        for a, b in zip((h,) if isinstance(h, np.ndarray) else h, parts):
            if a.ndim == 2:
                assert rel_err(a[rows], b[rows]) <= 1e-12
            else:
                assert rel_err(a[:, rows], b[:, rows]) <= 1e-12
    if ref.num_layers > 1:  # the masks matter: without them the first step differs
        ref2 = fastrnn.CharRNN(V, H, backend="numpy", dtype="float64", seed=0, **STACKS[name])
        s2, chunks = stacked_inputs(ref2)
        x, y, _ = chunks[0]
        assert abs(ref2._backend.train_step(x, y, s2, fastrnn.make_optimizer(
            "adam", ref2, lr=0.01, clip_norm=0.5), 0.5) - losses[0]) > 1e-6 * abs(losses[0])


def _trainer_carries_stacked_states():
    m = fastrnn.CharRNN(5, 4, cell="lstm", num_layers=2, dropout=0.5, backend="numpy")
    try:
        fastrnn.Trainer(m, np.arange(60) % 5, seq_length=5, batch_size=2).step()
    except (IndexError, TypeError, ValueError):
        return False
    return True


def test_cli_trains_a_two_layer_lstm_with_dropout_like_one_process(tmp_path):
    if not _trainer_carries_stacked_states():
        pytest.skip("this Trainer does not carry stacked (L,B,H) states yet")
    text = "".join(f"{i * 7919 % 1000:03d} is {'odd' if i % 2 else 'even'}; " for i in range(200))
    (tmp_path / "corpus.txt").write_text(text)
    ckpt = tmp_path / "model.npz"
    argv = ["--data", str(tmp_path / "corpus.txt"), "--device", "cpu", "--dtype", "float64",
            "--iterations", "3", "--print-every", "0", "--checkpoint", str(ckpt),
            "--model", "lstm", "--num-layers", "2", "--dropout", "0.3", "--optimizer", "adam",
            "--lr", "0.01", "--hidden-size", "8", "--seq-length", "6", "--batch-size", "2",
            "--seed", "1"]
    out = run_two_ranks(argv)
    assert out[0][0] == 0 and out[1][0] == 0
    vocab = fastrnn.Vocab.from_text(text)
    ref = fastrnn.CharRNN(vocab, 8, cell="lstm", num_layers=2, dropout=0.3, backend="numpy",
                          dtype="float64", seed=1)
    trainer = fastrnn.Trainer(ref, vocab.encode(text), seq_length=6, batch_size=4,
                              optimizer=fastrnn.make_optimizer("adam", ref, lr=0.01))
    for _ in range(3):
        trainer.step()
    final = fastrnn.CharRNN.load(ckpt, backend="numpy")
    assert (final.cell, final.num_layers, final.dropout) == ("lstm", 2, 0.3)
    for k, v in ref.get_params().items():
        assert rel_err(final.get_params()[k], v) <= 1e-12, k
