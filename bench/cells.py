"""Stacked rnn / lstm / gru: fastrnn's compiled kernels against PyTorch, side by side in one run.

    python bench/cells.py [--seconds 2] [--repeats 3] [--threads 2] [--quick] [--json FILE]

float32, B=64, T=128, V=65. Training rows: one whole step (forward, BPTT, Adam update) in
tokens/s, fastrnn's stack_train_step against torch's nn.LSTM / nn.GRU / nn.RNN (batch_first,
its oneDNN path) under an nn.Embedding input (V -> V, so its layer 0 has our input width) and
an nn.Linear head, summed cross-entropy, torch.optim.Adam. Generation row: a 2-layer LSTM H=512
drawing one character at a time, fastrnn's stack_sample against a PyTorch loop over nn.LSTM
(embedding, one step, head, softmax, torch.multinomial), in chars/s. Every row runs both
sides on --threads threads (torch.set_num_threads, and the kernels' `threads`), set again
before each timed call, and torch on one thread too: on a machine shared with other jobs, a
torch op whose threads wait for one another at every step can run far slower on two threads
than on one, so the speedup is taken against the faster torch. fastrnn's generation splits
each character's products over its threads as `CharRNN.generate` does for a model this large
(the cython backend's sample_threads); --gen-threads 1 times it on one thread. The backends
are timed in turn each round (fastrnn.bench.timed_together), so a slow phase of the machine
falls on all alike, and the median of the rounds is kept.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from fastrnn._layout import ModelSpec
from fastrnn._params import aligned_empty, pack, zeros_like_params
from fastrnn.backends.cython_backend import bf16_description, load_kernels
from fastrnn.bench import timed_together
from fastrnn.model import init_params as model_init

B, T, V = 64, 128, 65
TRAIN_ROWS = [("lstm", 1, 256, 1.3), ("lstm", 2, 512, 1.3), ("gru", 2, 256, 2.0),
              ("rnn", 3, 256, 2.0)]   # cell, layers, hidden, target speedup over torch
GEN = ("lstm", 2, 512, 5.0)
CELL_CODE = {"rnn": 0, "lstm": 1, "gru": 2}


def header(threads):
    import torch
    K = load_kernels()
    cpu = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                   if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "numpy": np.__version__, "commit": commit or "?",
            "kernels": K.BUILD_ISA + (" + OpenMP" if K.BUILD_OPENMP else ""),
            "bf16": bf16_description(K)}


def init_params(spec, rng, dtype=np.float32):
    """CharRNN's init="uniform" (PyTorch's default, U(+-1/sqrt(H))), in the aligned flat buffer
    the cython backend uses."""
    return pack(model_init(spec, "uniform", rng), spec, dtype)


def fastrnn_train(cell, L, H, threads, rng, bf16=False):
    K = load_kernels()
    spec = ModelSpec(cell, V, H, L)
    params = init_params(spec, rng)
    # every buffer placed as the cython backend places them: on 64-byte lines (numpy's own
    # placement, 16 bytes past one, split every vector load of the products in two)
    grads, m1, m2 = (zeros_like_params(spec, np.float32) for _ in range(3))
    work = aligned_empty(K.stack_work_size(B, T, H, V, L, CELL_CODE[cell], threads, bf16),
                         np.float32)
    x = rng.integers(0, V, (B, T)).astype(np.int32)
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    h = np.zeros((L, B, H), np.float32)
    c = np.zeros((L, B, H), np.float32) if cell == "lstm" else None
    offsets = spec.offsets()
    step = [0]

    def fn():
        step[0] += 1
        K.stack_train_step(params, grads, m1, offsets, CELL_CODE[cell], 0, H, V, L, x, y, h, c,
                           None, work, threads, 3, 2e-3, 1e-8, None, m2, 0.9, 0.999, step[0],
                           bf16=bf16)
    return fn


def torch_train(cell, L, H, threads, rng):
    import torch
    nn = torch.nn
    torch.manual_seed(0)
    rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](V, H, num_layers=L,
                                                              batch_first=True)
    emb, head = nn.Embedding(V, V), nn.Linear(H, V)
    opt = torch.optim.Adam([*emb.parameters(), *rnn.parameters(), *head.parameters()], lr=2e-3)
    x = torch.tensor(rng.integers(0, V, (B, T)))
    y = torch.tensor(rng.integers(0, V, (B, T))).reshape(-1)
    state = [None]

    def fn():
        opt.zero_grad(set_to_none=True)
        out, st = rnn(emb(x), state[0])
        loss = nn.functional.cross_entropy(head(out).reshape(-1, V), y, reduction="sum")
        loss.backward()
        opt.step()
        state[0] = tuple(s.detach() for s in st) if cell == "lstm" else st.detach()
    return fn


def fastrnn_gen(n, threads, rng):
    K = load_kernels()
    cell, L, H, _ = GEN
    spec = ModelSpec(cell, V, H, L)
    params = init_params(spec, rng)
    h, c = np.zeros((L, H), np.float32), np.zeros((L, H), np.float32)
    out = np.empty(n, np.int32)
    work = aligned_empty(K.stack_sample_work_size(H, V, L, 1), np.float32)
    offsets = spec.offsets()

    def fn():
        u = rng.random(n)
        K.stack_sample(params, offsets, 1, 0, H, V, L, h, c, u, 1.0, False, out, work, 0, 1.0,
                       threads)
    return fn


def torch_gen(n, threads, rng):
    import torch
    nn = torch.nn
    cell, L, H, _ = GEN
    torch.manual_seed(0)
    rnn, emb, head = nn.LSTM(V, H, num_layers=L, batch_first=True), nn.Embedding(V, V), \
        nn.Linear(H, V)
    state = [(torch.zeros(L, 1, H), torch.zeros(L, 1, H))]

    def fn():
        with torch.no_grad():
            idx = torch.zeros(1, 1, dtype=torch.long)
            st = state[0]
            for _ in range(n):
                out, st = rnn(emb(idx), st)
                p = torch.softmax(head(out[0, -1]), dim=-1)
                idx = torch.multinomial(p, 1).view(1, 1)
            state[0] = st
    return fn


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="least time per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="rounds (the median is kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-chars", type=int, default=200, help="characters per generation call")
    ap.add_argument("--gen-threads", type=int, help="fastrnn's threads for generation "
                    "(default: --threads)")
    ap.add_argument("--quick", action="store_true", help="one short round (a smoke test)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    import torch
    if args.quick:
        args.seconds, args.repeats = 0.01, 1
    nt = args.threads

    def pinned(n):
        return lambda: torch.set_num_threads(n)

    rng = np.random.default_rng(0)
    head = header(nt)
    print(" | ".join(f"{k} {v}" for k, v in head.items()), flush=True)
    print(f"float32, B={B} T={T} V={V}; median of {args.repeats} rounds, backends in turn; "
          f"the machine may be shared with other jobs", flush=True)
    print(f"{'model':<24}{'fastrnn':>10}{f'torch/{nt}t':>10}{'torch/1t':>10}{'speedup':>9}"
          f"{'target':>8}", flush=True)
    rows = []
    plans = [(f"train {cell} L={L} H={H}", B * T, tgt, nt,
              lambda cell=cell, L=L, H=H: fastrnn_train(cell, L, H, nt, rng),
              lambda n, cell=cell, L=L, H=H: torch_train(cell, L, H, n, rng))
             for cell, L, H, tgt in TRAIN_ROWS]
    gen_threads = args.gen_threads or nt
    plans.append((f"generate lstm L={GEN[1]} H={GEN[2]}", args.gen_chars, GEN[3], nt,
                  lambda: fastrnn_gen(args.gen_chars, gen_threads, rng),
                  lambda n: torch_gen(args.gen_chars, n, rng)))
    for name, units, target, threads, ours, theirs in plans:
        pinned(threads)()
        calls = {"fastrnn": (pinned(threads), ours())}
        if threads > 1:
            calls[f"torch/{threads}t"] = (pinned(threads), theirs(threads))
        calls["torch/1t"] = (pinned(1), theirs(1))
        t = timed_together(calls, args.seconds, args.repeats, warmup=1)
        rate = {k: units / v for k, v in t.items()}
        best = max(v for k, v in rate.items() if k.startswith("torch"))
        unit = "tok/s" if name.startswith("train") else "chars/s"
        many = f"{rate[f'torch/{threads}t']:>10.0f}" if threads > 1 else f"{'-':>10}"
        print(f"{name:<24}{rate['fastrnn']:>10.0f}{many}{rate['torch/1t']:>10.0f}"
              f"{rate['fastrnn'] / best:>8.2f}x{target:>7.1f}x  ({unit})", flush=True)
        rows.append(dict(name=name, unit=unit, rates=rate, speedup=rate["fastrnn"] / best,
                         target=target))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": head, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
