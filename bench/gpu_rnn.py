"""Training speed of fastrnn's torch backend against PyTorch's own cuDNN nn.LSTM / nn.GRU / nn.RNN
on the same models (Linear head, summed cross-entropy, Adam, the state carried from one batch to
the next), side by side:

    python bench/gpu_rnn.py [--device cuda] [--seconds 0.1] [--repeats 9] [--quick] [--out F]

PyTorch's model reads its characters through nn.Embedding(V, V), as in bench/cells.py, so its
layer 0 has fastrnn's input width. fastrnn's backend always runs with TF32 off (so CUDA matches
the CPU); PyTorch runs with TF32 off and on. Tokens/s count B*T characters per training
iteration, each iteration ending with the loss on the host (fastrnn's one synchronisation;
.item() for PyTorch's). After two warm-up iterations each, the three contenders are timed in
turn (fastrnn.bench.timed_together), each for at least --seconds per round, for --repeats
rounds; a row is the median of its rounds. A contender that raises is recorded as its error and
the others still run.
"""
import argparse
import sys

import numpy as np
import torch

import fastrnn
from fastrnn.bench import timed_together

MODELS = [("lstm", 1, 256), ("lstm", 2, 512), ("gru", 2, 256), ("rnn", 3, 256)]
V, B, T = 96, 64, 128


def set_tf32(on):
    """PyTorch's TF32 switches (fastrnn's backend turns TF32 off around its own calls)."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on


def fastrnn_model(cell, L, H, device):
    """fastrnn's model on the torch backend, its Adam and its state (B rows, zeros)."""
    m = fastrnn.CharRNN(V, H, cell=cell, num_layers=L, backend="torch", device=device)
    return m, fastrnn.make_optimizer("adam", m, lr=2e-3), m._initial_state(None, B, False)


def pytorch_model(cell, L, H, device):
    """The same model in PyTorch's modules: nn.Embedding(V, V), nn.RNN/LSTM/GRU, nn.Linear, and
    Adam over all three."""
    nn = torch.nn
    torch.manual_seed(0)
    rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](V, H, num_layers=L,
                                                              batch_first=True).to(device)
    emb, head = nn.Embedding(V, V).to(device), nn.Linear(H, V).to(device)
    opt = torch.optim.Adam([*emb.parameters(), *rnn.parameters(), *head.parameters()], lr=2e-3)
    return emb, rnn, head, opt


def fastrnn_step(cell, L, H, x, y, device):
    m, opt, h = fastrnn_model(cell, L, H, device)
    return lambda: m._backend.train_step(x, y, h, opt)   # carries the state in h, in place


def pytorch_step(cell, L, H, x, y, device):
    nn = torch.nn
    emb, rnn, head, opt = pytorch_model(cell, L, H, device)
    xt = torch.as_tensor(x, dtype=torch.long, device=device)
    yt = torch.as_tensor(y, dtype=torch.long, device=device).reshape(-1)
    state = [None]

    def step():
        opt.zero_grad(set_to_none=True)
        out, st = rnn(emb(xt), state[0])
        loss = nn.functional.cross_entropy(head(out).reshape(-1, V), yt, reduction="sum")
        loss.backward()
        opt.step()
        state[0] = tuple(s.detach() for s in st) if cell == "lstm" else st.detach()
        return loss.item()
    return step


def contenders(cell, L, H, x, y, device):
    """name -> (set its TF32 setting, step), or name -> the error (one line) of one that failed
    to build or to take its first steps. A step ends with the loss on the host, so it has
    waited for the device."""
    out = {}
    for name, make, tf32 in (("fastrnn", fastrnn_step, False), ("nn", pytorch_step, False),
                             ("nn-tf32", pytorch_step, True)):
        try:
            set_tf32(tf32)
            step = make(cell, L, H, x, y, device)
            for _ in range(2):   # warm-up: allocations, cuDNN plans
                step()
            out[name] = ((lambda on: lambda: set_tf32(on))(tf32), step)
        except Exception as e:   # noqa: BLE001 - a benchmark row reports, it does not stop the run
            print(f"{name} {cell} L={L} H={H}: {type(e).__name__}: {e}", file=sys.stderr,
                  flush=True)
            out[name] = type(e).__name__
    return out


def measure(runs, seconds, repeats):
    """Tokens/s per contender (the error of one that failed): the median of `repeats` rounds,
    every contender timed in turn in each (so a change in the machine's speed reaches all)."""
    ok = {name: r for name, r in runs.items() if isinstance(r, tuple)}
    t = timed_together(ok, seconds, repeats, warmup=0)   # contenders() warmed them up
    return {name: B * T / t[name] if name in t else runs[name] for name in runs}


def cell_text(v):
    return f"{v:,.0f}" if isinstance(v, float) else v


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=0.1,
                        help="each contender's least time per round")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true",
                        help="the first model, one short round")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    models = MODELS[:1] if args.quick else MODELS
    seconds, repeats = (0.01, 1) if args.quick else (args.seconds, args.repeats)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, T)).astype(np.int32)
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
            else f"cpu, {torch.get_num_threads()} threads")
    lines = [f"float32, B={B}, T={T}, V={V}, Adam; {name}; torch {torch.__version__}; "
             f"median of {repeats} rounds of at least {seconds} s, contenders in turn", "",
             "| model | fastrnn torch (TF32 off) | nn (TF32 off) | nn (TF32 on) | ratio (off) |",
             "|---|---|---|---|---|"]
    print(lines[0], flush=True)
    for cell, L, H in models:
        got = measure(contenders(cell, L, H, x, y, args.device), seconds, repeats)
        ours, off, on = got["fastrnn"], got["nn"], got["nn-tf32"]
        ratio = (f"{ours / off:.2f}x" if isinstance(ours, float) and isinstance(off, float)
                 else "-")
        lines.append(f"| {cell} L={L} H={H} | {cell_text(ours)} | {cell_text(off)} | "
                     f"{cell_text(on)} | {ratio} |")
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
