"""Training speed of fastrnn's torch backend against PyTorch's own cuDNN nn.LSTM / nn.GRU / nn.RNN
on the same models (Linear head, summed cross-entropy, Adam, the state carried from one batch to
the next), side by side:

    python bench/gpu_rnn.py [--device cuda] [--iterations 10] [--repeats 5] [--quick] [--out F]

PyTorch's model reads its characters through nn.Embedding(V, V), as in bench/cells.py, so its
layer 0 has fastrnn's input width. fastrnn's backend always runs with TF32 off (so CUDA matches the
CPU); PyTorch's rows run with TF32 off and on. Tokens/s count B*T characters per training
iteration, each iteration ending with the loss on the host (fastrnn's one synchronisation; .item()
for PyTorch's); a row is the median of --repeats timings of --iterations iterations, after two
warm-up iterations. A row that raises is recorded as its error and the others still run.
"""
import argparse
import sys
import time

import numpy as np
import torch

import fastrnn

MODELS = [("lstm", 1, 256), ("lstm", 2, 512), ("gru", 2, 256), ("rnn", 3, 256)]
V, B, T = 96, 64, 128


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_it(step, iterations, repeats, device):
    for _ in range(2):
        step()
    sync(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        sync(device)
        rates.append(B * T * iterations / (time.perf_counter() - start))
    return float(np.median(rates))


def fastrnn_row(cell, L, H, x, y, device, iterations, repeats):
    m = fastrnn.CharRNN(V, H, cell=cell, num_layers=L, backend="torch", device=device)
    opt = fastrnn.make_optimizer("adam", m, lr=2e-3)
    h = m._initial_state(None, B, False)   # train_step carries it in place
    return time_it(lambda: m._backend.train_step(x, y, h, opt), iterations, repeats, device)


def pytorch_row(cell, L, H, x, y, device, iterations, repeats, tf32):
    nn = torch.nn
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](V, H, num_layers=L,
                                                              batch_first=True).to(device)
    emb, head = nn.Embedding(V, V).to(device), nn.Linear(H, V).to(device)
    opt = torch.optim.Adam([*emb.parameters(), *rnn.parameters(), *head.parameters()], lr=2e-3)
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

    try:
        return time_it(step, iterations, repeats, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


def measured(row, *args):
    """The row's tokens/s, or its error as one line (the table still gets the other rows)."""
    try:
        return row(*args)
    except Exception as e:   # noqa: BLE001 - a benchmark row reports, it does not stop the run
        print(f"{row.__name__}{args[:3]}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return f"{type(e).__name__}"


def cell_text(v):
    return f"{v:,.0f}" if isinstance(v, float) else v


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the first model, 2 iterations once")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    models = MODELS[:1] if args.quick else MODELS
    iterations, repeats = (2, 1) if args.quick else (args.iterations, args.repeats)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, T)).astype(np.int32)
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
            else f"cpu, {torch.get_num_threads()} threads")
    lines = [f"float32, B={B}, T={T}, V={V}, Adam; {name}; torch {torch.__version__}; "
             f"median of {repeats} x {iterations} iterations", "",
             "| model | fastrnn torch (TF32 off) | nn (TF32 off) | nn (TF32 on) | ratio (off) |",
             "|---|---|---|---|---|"]
    print(lines[0], flush=True)
    for cell, L, H in models:
        run = (cell, L, H, x, y, args.device, iterations, repeats)
        ours = measured(fastrnn_row, *run)
        off = measured(pytorch_row, *run, False)
        on = measured(pytorch_row, *run, True)
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
