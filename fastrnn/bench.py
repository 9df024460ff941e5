"""Speed benchmarks: fastrnn's backends against the numpy reference and PyTorch, side by side.

    python bench/bench.py [--quick] [--json FILE] [--plot FILE.png] [--threads N]
    fastrnn bench ...                      (the same)

Every configuration is timed for every backend in the same run (the machine may be shared and
noisy, so only ratios measured together mean much): warm-up first, then repeated rounds, each
timing every backend's calls of the configuration in turn for at least --seconds apiece (so a
slow phase of the machine falls on all of them alike), and the median. Thread counts are pinned
per row (fastrnn's kernels and BLAS pools through fastrnn.set_num_threads,
torch.set_num_threads) and printed. Rows:

  numpy          the reference backend (one Python step per time step), 1 thread
  cython/1t      compiled kernels, 1 thread; forward, backward and update timed separately too
  cython/Nt      compiled kernels on N threads (OpenMP): the batch split into groups of rows, or
                 one sequence (B=1, H >= 256) into slices of its hidden units
  torch          fastrnn's own PyTorch backend (torch/cuda: on the GPU, when one is present)
  torch-eager    the same model as plain PyTorch code: a Python loop over time steps, autograd,
                 the gist's Adagrad with torch ops
  torch-nn.RNN   PyTorch's fused torch.nn.RNN (oneDNN on CPU, cuDNN on CUDA) over one-hot inputs
                 + nn.Linear, autograd, the same Adagrad
  torch-nn.RNN/cuda  torch-nn.RNN on the GPU (only when one is present)

Useful FLOPs per token are 6H^2 + 6VH (forward, backward through the state, weight gradients of
Whh and Why); GFLOP/s is reported against the sgemm peak measured here with the same threads
(numpy's float32 matmul of 1024x1024 matrices, i.e. its OpenBLAS; the higher of a measurement
before the rows and one after them).
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from datetime import datetime, timezone

import numpy as np

import fastrnn
from fastrnn._threads import set_num_threads

V_DEFAULT = 77  # the vocabulary of the built-in corpus

# The four goal configurations of the speed issue, then the sweep.
GOALS = [
    dict(name="min-char", B=1, T=25, H=100, threads=1),
    dict(name="H512", B=1, T=25, H=512, threads=1),
    dict(name="batched", B=64, T=128, H=256, threads=2),
]
SWEEP = [dict(name="sweep", B=B, T=T, H=H, threads=1)
         for H in (64, 128, 256, 512, 1024) for T in (25, 100) for B in (1, 16, 64)]
QUICK_SWEEP = [dict(name="sweep", B=B, T=25, H=H, threads=1) for H in (64, 256) for B in (1, 16)]


# -- timing -----------------------------------------------------------------------------------

def timed_together(calls, seconds, repeats, warmup=2):
    """Median seconds per call of each fn of `calls` ({key: (prepare, fn)}) over `repeats`
    rounds; each round runs every fn in turn for at least `seconds`, after its prepare() (which
    pins its threads). Taken in turn, a slow phase of a shared machine falls on every fn alike,
    where timing one after the other it fell on whichever ran then (a 15:30 run had the
    compiled min-char step at 18x numpy on one thread and 25x on two, the same code)."""
    counts = {}
    for key, (prepare, fn) in calls.items():
        prepare()
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        fn()
        counts[key] = max(1, int(seconds / max(time.perf_counter() - t0, 1e-7)))
    runs = {key: [] for key in calls}
    for _ in range(repeats):
        for key, (prepare, fn) in calls.items():
            prepare()
            n = counts[key]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            runs[key].append((time.perf_counter() - t0) / n)
    return {key: statistics.median(v) for key, v in runs.items()}


def timed(fn, seconds, repeats, warmup=2):
    """Median seconds per call of fn() over `repeats` runs of at least `seconds` each."""
    return timed_together({0: (lambda: None, fn)}, seconds, repeats, warmup)[0]


def sgemm_peak(threads, seconds=0.3):
    """Measured float32 GEMM GFLOP/s with `threads` BLAS threads (the roofline for the % column)."""
    set_num_threads(threads)
    n = 1024
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    t = timed(lambda: a @ b, seconds, 5)
    return 2 * n ** 3 / t / 1e9


def useful_flops(B, T, H, V):
    return B * T * (6 * H * H + 6 * V * H)


# -- backends under test ------------------------------------------------------------------------

def _data(B, T, V, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (B, T)).astype(np.int32)
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    return x, y


def fastrnn_calls(backend, B, T, H, V, threads, device="cpu", phases=True):
    """What to time of one fastrnn backend: the fused iteration ("total") and, with phases,
    forward, forward+backward and the update apart; and the call that pins its threads."""
    set_num_threads(threads)
    model = fastrnn.CharRNN(V, H, backend=backend, dtype="float32", device=device)
    opt = fastrnn.Adagrad(model)
    be = model._backend
    x, y = _data(B, T, V)
    h = np.zeros((B, H), dtype=np.float32)
    grads = be.zeros()
    calls = {"total": lambda: be.train_step(x, y, h, opt)}
    if phases:
        calls.update(forward=lambda: be.forward_loss(x, y, h),
                     fwd_bwd=lambda: be.loss_and_grads(x, y, h),
                     update=lambda: be.update(opt, grads))
    return lambda: set_num_threads(threads), calls


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_calls(kind, B, T, H, V, threads, device="cpu", phases=True):
    """The same model written as ordinary PyTorch code ("eager": a loop over time steps;
    "fused": torch.nn.RNN over one-hot inputs), trained with the gist's Adagrad: what to time,
    as fastrnn_calls."""
    torch = _torch()

    def pin():
        torch.set_num_threads(threads)
        set_num_threads(threads)

    pin()
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x_np, y_np = _data(B, T, V)
    x = torch.as_tensor(x_np, dtype=torch.long, device=dev)
    y = torch.as_tensor(y_np, dtype=torch.long, device=dev)
    h0 = torch.zeros(B, H, device=dev)
    if kind == "eager":
        params = [torch.randn(s, generator=g).mul_(0.01).to(dev).requires_grad_()
                  for s in [(H, V), (H, H), (V, H)]]
        params += [torch.zeros(H, device=dev, requires_grad=True),
                   torch.zeros(V, device=dev, requires_grad=True)]
        Wxh, Whh, Why, bh, by = params

        def loss_fn():
            h, loss = h0, 0.0
            for t in range(T):
                h = torch.tanh(Wxh[:, x[:, t]].T + h @ Whh.T + bh)
                loss = loss + torch.nn.functional.cross_entropy(
                    h @ Why.T + by, y[:, t], reduction="sum")
            return loss
    else:
        rnn = torch.nn.RNN(V, H, nonlinearity="tanh", batch_first=True).to(dev)
        head = torch.nn.Linear(H, V).to(dev)
        params = list(rnn.parameters()) + list(head.parameters())
        onehot = torch.nn.functional.one_hot(x, V).float()

        def loss_fn():
            out, _ = rnn(onehot, h0[None])
            return torch.nn.functional.cross_entropy(head(out).reshape(-1, V), y.reshape(-1),
                                                     reduction="sum")
    mem = [torch.zeros_like(p) for p in params]

    def update():
        with torch.no_grad():
            for p, m in zip(params, mem):
                gr = p.grad.clamp(-5.0, 5.0)
                m.addcmul_(gr, gr)
                p.addcdiv_(gr, (m + 1e-8).sqrt_(), value=-0.1)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step():
        for p in params:
            p.grad = None
        loss = loss_fn()
        loss.backward()
        update()
        sync()

    def fwd():
        with torch.no_grad():
            loss_fn()
        sync()

    def fwd_bwd():
        for p in params:
            p.grad = None
        loss_fn().backward()
        sync()

    def upd():
        update()
        sync()

    calls = {"total": step}
    if phases:
        calls.update(forward=fwd, fwd_bwd=fwd_bwd, update=upd)
    return pin, calls


def generation_rows(H, V, n, seconds, repeats):
    """Characters per second of model.generate, greedy and sampled, per backend (1 thread)."""
    set_num_threads(1)
    rows = []
    for backend in ("numpy", "cython"):
        model = fastrnn.CharRNN(V, H, backend=backend, dtype="float32")
        count = n if backend == "cython" else max(n // 100, 200)
        for greedy in (True, False):
            t = timed(lambda: model.generate(count, greedy=greedy, seed=0), seconds, repeats, 1)
            rows.append(dict(backend=backend, mode="greedy" if greedy else "sampled",
                             chars_per_sec=count / t))
    return rows


def memory_row(B, T, H, V):
    """Bytes held by a cython training step (parameters, gradients, Adagrad state, scratch) and
    allocated during a step after the first, against the analytic minimum
    4 * (3 * n_params + B*T*(H+V)) bytes (float32)."""
    set_num_threads(1)
    model = fastrnn.CharRNN(V, H, backend="cython", dtype="float32")
    opt = fastrnn.Adagrad(model)
    x, y = _data(B, T, V)
    h = np.zeros((B, H), dtype=np.float32)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    model._backend.train_step(x, y, h, opt)   # allocates the scratch and gradient buffers
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    model._backend.train_step(x, y, h, opt)
    per_step = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    n_params = model._backend.flat.size
    state = 4 * 2 * n_params + held            # parameters + Adagrad state + what the step holds
    minimum = 4 * (3 * n_params + B * T * (H + V))
    return dict(B=B, T=T, H=H, V=V, bytes=state, per_step_alloc=per_step, minimum=minimum,
                ratio=state / minimum)


# -- the run ------------------------------------------------------------------------------------

def machine_header(threads):
    from threadpoolctl import threadpool_info
    from fastrnn.backends.cython_backend import _kernels, bf16_description
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = sorted({f"{i['internal_api']} {i['version']} ({i.get('architecture')})"
                   for i in threadpool_info() if i["user_api"] == "blas"})
    torch = _torch()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
        "python": platform.python_version(), "numpy": np.__version__,
        "torch": torch.__version__ if torch else None,
        "cuda": bool(torch and torch.cuda.is_available()),
        "fastrnn": fastrnn.__version__,
        "kernels": _kernels.BUILD_ISA + (" + OpenMP" if _kernels.BUILD_OPENMP else ""),
        "bf16": bf16_description(_kernels),
        "blas": blas,
    }


def run(configs, *, seconds, repeats, max_threads, with_torch=True, progress=None):
    results = []
    torch = _torch() if with_torch else None
    for cfg in configs:
        B, T, H, V = cfg["B"], cfg["T"], cfg["H"], cfg.get("V", V_DEFAULT)
        threads = min(cfg["threads"], max_threads)
        plan = [("numpy", 1), ("cython", 1)]
        if max_threads > 1:
            plan.append(("cython", max_threads))
        if torch is not None:
            plan += [("torch", threads), ("torch-eager", threads), ("torch-nn.RNN", threads)]
            if torch.cuda.is_available():
                plan += [("torch/cuda", 1), ("torch-nn.RNN/cuda", 1)]
        phases = cfg["name"] != "sweep"  # the sweep times whole iterations only
        calls, labels = {}, []
        for name, nt in plan:
            if name in ("numpy", "cython", "torch", "torch/cuda"):
                backend, _, device = name.partition("/")
                pin, fns = fastrnn_calls(backend, B, T, H, V, nt, device or "cpu", phases)
            elif name == "torch-nn.RNN/cuda":
                pin, fns = torch_calls("fused", B, T, H, V, nt, "cuda", phases)
            else:
                pin, fns = torch_calls("eager" if name == "torch-eager" else "fused", B, T, H,
                                       V, nt, "cpu", phases)
            label = f"{name}/{nt}t" if name in ("numpy", "cython") else name
            labels.append((label, nt))
            calls.update({(label, phase): (pin, fn) for phase, fn in fns.items()})
        if progress:
            progress(f"{cfg['name']} B={B} T={T} H={H}: " + ", ".join(l for l, _ in labels))
        times = timed_together(calls, seconds, repeats)
        rows = []
        for label, nt in labels:
            t = {phase: times.get((label, phase), math.nan)
                 for phase in ("total", "forward", "fwd_bwd", "update")}
            rows.append(dict(backend=label, threads=nt, total=t["total"], forward=t["forward"],
                             backward=max(t["fwd_bwd"] - t["forward"], 0.0)
                             if phases else math.nan, update=t["update"]))
        base = next(r["total"] for r in rows if r["backend"] == "numpy/1t")
        flops = useful_flops(B, T, H, V)
        for r in rows:
            r["chars_per_sec"] = B * T / r["total"]
            r["iters_per_sec"] = 1 / r["total"]
            r["speedup_vs_numpy"] = base / r["total"]
            r["gflops"] = flops / r["total"] / 1e9
        results.append(dict(config=cfg["name"], B=B, T=T, H=H, V=V, threads=threads, rows=rows))
    return results


def _ms(seconds):
    return "-" if math.isnan(seconds) else f"{seconds * 1e3:.3f}"


def markdown(header, results, peaks, generation, memory):
    out = [f"fastrnn {header['fastrnn']} benchmark, {header['date']}",
           f"CPU: {header['cpu']}, {header['cores']} cores; kernels: {header['kernels']}; "
           f"bf16: {header.get('bf16', '?')}; "
           f"BLAS: {'; '.join(header['blas'])}",
           f"python {header['python']}, numpy {header['numpy']}, "
           f"torch {header['torch']}, CUDA {'yes' if header['cuda'] else 'no'}; "
           f"sgemm peak: " + ", ".join(f"{k} thread(s) {v:.0f} GFLOP/s" for k, v in peaks.items()),
           "", "| config | B | T | H | backend | threads | ms/iter | fwd | bwd | update | "
               "chars/s | x numpy | GFLOP/s | % sgemm peak |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            peak = peaks.get(r["threads"]) or peaks[max(peaks)]
            out.append(
                f"| {res['config']} | {res['B']} | {res['T']} | {res['H']} | {r['backend']} | "
                f"{r['threads']} | {r['total'] * 1e3:.3f} | {_ms(r['forward'])} | "
                f"{_ms(r['backward'])} | {_ms(r['update'])} | "
                f"{r['chars_per_sec']:,.0f} | {r['speedup_vs_numpy']:.1f} | {r['gflops']:.1f} | "
                f"{100 * r['gflops'] / peak:.0f}% |")
    if generation:
        out += ["", "| generation H=100 | mode | chars/s |", "|---|---|---|"]
        out += [f"| {g['backend']} | {g['mode']} | {g['chars_per_sec']:,.0f} |" for g in generation]
    if memory:
        out += ["", "| memory (cython, float32) | held bytes | allocated per step | analytic "
                    "minimum | ratio |", "|---|---|---|---|---|"]
        out += [f"| B={m['B']} T={m['T']} H={m['H']} | {m['bytes']:,} | {m['per_step_alloc']:,} "
                f"| {m['minimum']:,} | {m['ratio']:.2f} |" for m in memory]
    return "\n".join(out)


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("fastrnn bench: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return
    series = {}
    for res in results:
        if res["config"] != "sweep" or res["T"] != 25 or res["B"] != 1:
            continue
        for r in res["rows"]:
            series.setdefault(r["backend"], []).append((res["H"], r["chars_per_sec"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="hidden size H", ylabel="training chars/s",
           title="fastrnn training speed, B=1, T=25")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def fit_exponents(results):
    """Fitted exponents of time per iteration in T, B and H (cython/1t, the sweep)."""
    pts = [(r["B"], r["T"], r["H"], row["total"]) for r in results if r["config"] == "sweep"
           for row in r["rows"] if row["backend"] == "cython/1t"]
    dims = [k for k, i in (("B", 0), ("T", 1), ("H", 2)) if len({p[i] for p in pts}) > 1]
    if not dims:
        return None
    index = {"B": 0, "T": 1, "H": 2}
    A = np.array([[1.0] + [math.log(p[index[k]]) for k in dims] for p in pts])
    y = np.array([math.log(p[3]) for p in pts])
    coef = np.linalg.lstsq(A, y, rcond=None)[0]
    return {k: float(c) for k, c in zip(dims, coef[1:])}


def main(argv=None):
    p = argparse.ArgumentParser(prog="fastrnn bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--plot", help="write a PNG of chars/s against H (needs matplotlib)")
    p.add_argument("--threads", type=int, default=None,
                   help="most threads for the multi-threaded rows (default: all cores)")
    p.add_argument("--seconds", type=float, default=None, help="minimum seconds per timed run")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    p.add_argument("--only", choices=["goals", "sweep"], help="run only one part")
    args = p.parse_args(argv)
    max_threads = args.threads or len(os.sched_getaffinity(0))
    seconds = args.seconds or (0.05 if args.quick else 0.5)
    repeats = args.repeats or (3 if args.quick else 5)
    configs = [] if args.only == "sweep" else list(GOALS)
    if args.only != "goals":
        configs += QUICK_SWEEP if args.quick else SWEEP
    if args.quick:  # smaller batched config keeps the quick run short
        configs = [dict(c, T=32) if c["name"] == "batched" else c for c in configs]

    def progress(msg):
        print(f"  {msg}", file=sys.stderr, flush=True)

    header = machine_header(max_threads)
    counts = sorted({1, max_threads})
    peaks = {t: sgemm_peak(t) for t in counts}
    results = run(configs, seconds=seconds, repeats=repeats, max_threads=max_threads,
                  with_torch=not args.no_torch, progress=progress)
    # measured again after the rows, keeping the higher: on a shared machine one measurement
    # can fall in a slow phase, which would flatter every row's fraction of the peak
    peaks = {t: max(peaks[t], sgemm_peak(t)) for t in counts}
    generation = generation_rows(100, V_DEFAULT, 20000 if args.quick else 200000, seconds,
                                 repeats)
    memory = [memory_row(c["B"], c["T"], c["H"], V_DEFAULT) for c in GOALS]
    print(markdown(header, results, peaks, generation, memory))
    exps = fit_exponents(results)
    if exps:
        print("\nfitted time per iteration ~ " + " ".join(f"{k}^{v:.2f}" for k, v in exps.items())
              + " (cython, 1 thread, sweep)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(header=header, sgemm_peak_gflops=peaks, results=results,
                           generation=generation, memory=memory, exponents=exps), f, indent=1)
    if args.plot:
        plot(results, args.plot)
    set_num_threads()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
