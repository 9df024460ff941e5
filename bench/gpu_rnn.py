"""Training speed of fastrnn's torch backend against PyTorch's own cuDNN nn.LSTM / nn.GRU / nn.RNN
on the same models (one-hot input, Linear head, summed cross-entropy, Adam), side by side:

    python bench/gpu_rnn.py [--device cuda] [--iterations 20] [--quick] [--out results.md]

fastrnn's backend always runs with TF32 off (so CUDA matches the CPU); PyTorch's rows run with
TF32 off and on. Tokens/s count B*T characters per training iteration, each iteration ending
with the loss on the host (fastrnn's one synchronisation; .item() for PyTorch's).
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


def time_it(step, iterations, device):
    for _ in range(2):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync(device)
    return B * T * iterations / (time.perf_counter() - start)


def fastrnn_row(cell, L, H, x, y, device, iterations):
    m = fastrnn.CharRNN(V, H, cell=cell, num_layers=L, backend="torch", device=device)
    opt = fastrnn.make_optimizer("adam", m, lr=2e-3)
    h = m._initial_state(None, B, False)
    return time_it(lambda: m._backend.train_step(x, y, h, opt), iterations, device)


def pytorch_row(cell, L, H, x, y, device, iterations, tf32):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    rnn = kind(V, H, num_layers=L, batch_first=True).to(device)
    head = torch.nn.Linear(H, V).to(device)
    opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=2e-3)
    xt = torch.as_tensor(x, dtype=torch.long, device=device)
    yt = torch.as_tensor(y, dtype=torch.long, device=device).reshape(-1)

    def step():
        opt.zero_grad()
        out, _ = rnn(torch.nn.functional.one_hot(xt, V).float())
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), yt, reduction="sum")
        loss.backward()
        opt.step()
        return loss.item()

    try:
        return time_it(step, iterations, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the first model, 2 iterations")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    models = MODELS[:1] if args.quick else MODELS
    iterations = 2 if args.quick else args.iterations
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, T)).astype(np.int32)
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
            else f"cpu, {torch.get_num_threads()} threads")
    lines = [f"float32, B={B}, T={T}, V={V}, Adam; {name}; torch {torch.__version__}", "",
             "| model | fastrnn torch (TF32 off) | nn (TF32 off) | nn (TF32 on) | ratio (off) |",
             "|---|---|---|---|---|"]
    print(lines[0], flush=True)
    for cell, L, H in models:
        ours = fastrnn_row(cell, L, H, x, y, args.device, iterations)
        off = pytorch_row(cell, L, H, x, y, args.device, iterations, False)
        on = pytorch_row(cell, L, H, x, y, args.device, iterations, True)
        lines.append(f"| {cell} L={L} H={H} | {ours:,.0f} | {off:,.0f} | {on:,.0f} | "
                     f"{ours / off:.2f}x |")
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
