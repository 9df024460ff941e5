"""bf16 mode against float32: fastrnn's own step, and PyTorch with and without autocast.

    python bench/bf16.py [--seconds 2] [--repeats 3] [--threads 2] [--quick] [--json FILE]
    python bench/bf16.py --quality [--iterations 2000]    # validation, bf16 against fp32

The speed goals of issue 16, side by side in one run (B=64, T=128, V=65, Adam; see
bench/cells.py for how each side is built and timed): min-char-rnn's model H=256, fastrnn's
float32 step (its own kernels) against its bf16 step; a 2-layer LSTM H=512, fastrnn float32
and bf16 against PyTorch's nn.LSTM in float32 and under torch.autocast("cpu", bfloat16). The
header says what the CPU reports of its bfloat16 units (fastrnn._kernels.bf16_cpu) and how
fastrnn's bf16 mode runs here (bf16_path); the GFLOP/s column counts the products' useful
floating-point work per second.

--quality trains `fastrnn train --preset lab` and `--preset char-rnn` (a 2-layer LSTM) for
--iterations in float32 and in bf16 mode, on the 1 MB Shakespeare with its last 10% held out,
and prints each run's last validation loss and the bf16 - fp32 difference (issue 16: within
0.02 nats/char).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cells import B, T, V, fastrnn_train, header, init_params, torch_train  # noqa: E402

from fastrnn._layout import ModelSpec  # noqa: E402
from fastrnn._params import aligned_empty, zeros_like_params  # noqa: E402
from fastrnn.backends.cython_backend import load_kernels  # noqa: E402
from fastrnn.bench import timed_together  # noqa: E402


def product_flops(cell, L, H):
    """Useful flops of one step's matrix products: forward, BPTT's dL/dh and weight
    gradients, over B*T tokens (layer 0's input is a gather, not a product)."""
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    per_token = 2 * G * H * H * (3 * L + 3 * (L - 1)) + 2 * V * H * 3
    return per_token * B * T


def vanilla_fp32(H, threads, rng):
    """min-char-rnn's model on its own float32 kernels (train_step), Adam."""
    K = load_kernels()
    spec = ModelSpec("rnn", V, H, 1)
    params = init_params(spec, rng)
    grads, m1, m2 = (zeros_like_params(spec, np.float32) for _ in range(3))
    work = aligned_empty(K.work_size(B, T, H, V, threads), np.float32)
    x = rng.integers(0, V, (B, T)).astype(np.int32)
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    h = np.zeros((B, H), np.float32)
    step = [0]

    def fn():
        step[0] += 1
        K.train_step(params, grads, m1, x, y, h, work, H, V, 3, 2e-3, 1e-8, None, m2, 0.9,
                     0.999, step[0], None, 1.0, threads=threads)
    return fn


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "shakespeare_1mb.txt"


def quality(iterations, threads):
    """Last validation loss of each preset in fp32 and bf16 (fastrnn train in a subprocess)."""
    rows = []
    for preset in ("lab", "char-rnn"):
        got = {}
        for precision in ("fp32", "bf16"):
            with tempfile.TemporaryDirectory() as tmp:
                log = Path(tmp) / "log.jsonl"
                cmd = [sys.executable, "-m", "fastrnn", "train", "--preset", preset,
                       "--iterations", str(iterations), "--precision", precision,
                       "--val-frac", "0.1", "--eval-every", str(iterations),
                       "--sample-every", "0", "--threads", str(threads), "--log", str(log),
                       "--checkpoint-dir", tmp]
                if SHARED.exists():
                    cmd += ["--data", str(SHARED)]
                start = time.perf_counter()
                subprocess.run(cmd, check=True, cwd=tmp, stdout=subprocess.DEVNULL,
                               env=dict(os.environ))
                seconds = time.perf_counter() - start
                vals = [json.loads(line) for line in log.read_text().splitlines()]
                val = [v for v in vals if v["kind"] == "val"][-1]["nats_per_char"]
            got[precision] = val
            print(f"{preset:<9}{precision:<6}{iterations:>6} iterations  val {val:.4f} nats/char"
                  f"  ({seconds:.0f} s)", flush=True)
        diff = got["bf16"] - got["fp32"]
        print(f"{preset:<9}bf16 - fp32: {diff:+.4f} nats/char (goal: within 0.02)", flush=True)
        rows.append(dict(preset=preset, iterations=iterations, **got, diff=diff))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="least time per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="rounds (the median is kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one short round (a smoke test)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--quality", action="store_true",
                    help="train two presets in fp32 and bf16 instead of timing steps")
    ap.add_argument("--iterations", type=int, default=2000, help="with --quality")
    args = ap.parse_args(argv)
    if args.quality:
        head = header(args.threads)
        print(" | ".join(f"{k} {v}" for k, v in head.items()), flush=True)
        rows = quality(args.iterations, args.threads)
        if args.json:
            Path(args.json).write_text(json.dumps({"header": head, "quality": rows}, indent=1))
        return 0
    import torch
    if args.quick:
        args.seconds, args.repeats = 0.01, 1
    nt = args.threads
    K = load_kernels()
    rng = np.random.default_rng(0)
    head = header(nt)
    head["bf16_cpu"] = K.bf16_cpu()
    head["bf16_path"] = K.bf16_path()
    print(" | ".join(f"{k} {v}" for k, v in head.items()), flush=True)
    print(f"B={B} T={T} V={V}, Adam; median of {args.repeats} rounds, backends in turn; the "
          f"machine may be shared with other jobs", flush=True)

    def pin():
        torch.set_num_threads(nt)

    def autocast(fn):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                fn()
        return run

    plans = [
        ("rnn", 1, 256, {"fastrnn fp32": vanilla_fp32(256, nt, rng),
                         "fastrnn bf16": fastrnn_train("rnn", 1, 256, nt, rng, bf16=True)},
         ("fastrnn bf16", "fastrnn fp32", 2.5)),
        ("lstm", 2, 512, {"fastrnn fp32": fastrnn_train("lstm", 2, 512, nt, rng),
                          "fastrnn bf16": fastrnn_train("lstm", 2, 512, nt, rng, bf16=True),
                          "torch fp32": torch_train("lstm", 2, 512, nt, rng),
                          "torch bf16": autocast(torch_train("lstm", 2, 512, nt, rng))},
         ("fastrnn bf16", "torch bf16", 1.5)),
    ]
    rows = []
    for cell, L, H, fns, (ours, theirs, target) in plans:
        pin()
        t = timed_together({k: (pin, f) for k, f in fns.items()}, args.seconds, args.repeats,
                           warmup=1)
        flops = product_flops(cell, L, H)
        print(f"{cell} L={L} H={H}:", flush=True)
        for k, sec in t.items():
            print(f"  {k:<14}{B * T / sec:>10.0f} tok/s {1e3 * sec:>9.1f} ms/step "
                  f"{flops / sec / 1e9:>8.1f} GFLOP/s", flush=True)
        ratio = t[theirs] / t[ours]
        print(f"  {ours} / {theirs}: {ratio:.2f}x (target {target}x)", flush=True)
        rows.append(dict(model=f"{cell} L={L} H={H}", seconds=t, gflops={
            k: flops / s / 1e9 for k, s in t.items()}, ratio=ratio, target=target,
            compared=[ours, theirs]))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": head, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
