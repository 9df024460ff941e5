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
