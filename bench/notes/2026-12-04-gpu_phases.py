"""Where fastrnn's torch training step spends its time on CUDA, phase by phase, next to the same
phases of PyTorch's nn.* step (bench/gpu_rnn.py's models). From the repository root, on a
machine with a GPU:

    PYTHONPATH=$PWD python3 bench/notes/2026-12-04-gpu_phases.py [cuda|cpu]

"host" rows take the time between phases without waiting for the device (what the host spends
issuing each phase; the fetch then waits for everything); "synced" rows wait for the device
after each phase. Each is the median of 10 iterations after 3 warm-ups. The fastrnn phases
repeat TorchBackend._stack_train_step's calls in its order: prep (the leaf views, the state and
id uploads), fwd (the layers, head and loss), bwd (autograd), grads (the copies into the flat
gradient), update (Adam), fetch (loss and states to the host). For nn: prep is zero_grad, grads
is empty, fetch is loss.item().
"""
import sys
import time

import numpy as np
import torch
sys.path.insert(0, "bench")
import gpu_rnn as g

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
F = torch.nn.functional
rng = np.random.default_rng(0)
x = rng.integers(0, g.V, (g.B, g.T)).astype(np.int32)
y = rng.integers(0, g.V, (g.B, g.T)).astype(np.int32)


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


def ours_phases(m, opt, h, synced):
    b = m._backend
    ts = [time.perf_counter()]
    mark = lambda: (sync() if synced else None, ts.append(time.perf_counter()))
    buf, scratch, gv = b._train_buffers()
    p = {n: v.detach().requires_grad_() for n, v in b.params.items()}
    states = b._states(h)
    xi, yi = b._ids(x), b._ids(y)
    mark()
    with torch.enable_grad(), b._exact():
        out, last = b._stack_run(p, xi, states, None, True)
        loss = b._head_loss(p, out, yi)
        mark()
        grads = torch.autograd.grad(loss, list(p.values()))
    mark()
    for n, gr in zip(p, grads):
        gv[n].copy_(gr)
    buf[-1] = loss.detach()
    mark()
    b._update(opt, buf[:-1], scratch, 1.0)
    mark()
    host = b._fetch(buf[-1:], *[a.detach() for a in last])
    b._put_state(h, host[1:])
    mark()
    return np.diff(ts)


def nn_phases(cell, L, H):
    emb, rnn, head, opt = g.pytorch_model(cell, L, H, dev)
    xt = torch.as_tensor(x, dtype=torch.long, device=dev)
    yt = torch.as_tensor(y, dtype=torch.long, device=dev).reshape(-1)
    st = [None]

    def step(synced):
        ts = [time.perf_counter()]
        mark = lambda: (sync() if synced else None, ts.append(time.perf_counter()))
        opt.zero_grad(set_to_none=True)
        mark()
        out, s = rnn(emb(xt), st[0])
        loss = F.cross_entropy(head(out).reshape(-1, g.V), yt, reduction="sum")
        mark()
        loss.backward()
        mark()
        mark()
        opt.step()
        mark()
        st[0] = tuple(a.detach() for a in s) if cell == "lstm" else s.detach()
        loss.item()
        mark()
        return np.diff(ts)
    return step


names = "prep fwd bwd grads update fetch".split()
for cell, L, H in [("rnn", 3, 256), ("lstm", 2, 512), ("gru", 2, 256), ("lstm", 1, 256)]:
    print(f"==== {cell} L={L} H={H}", flush=True)
    for kind in ("fastrnn", "nn"):
        if kind == "nn":
            step = nn_phases(cell, L, H)
        else:
            m, opt, h = g.fastrnn_model(cell, L, H, dev)
            step = (lambda m, opt, h: lambda s: ours_phases(m, opt, h, s))(m, opt, h)
        for _ in range(3):
            step(True)
        for synced in (False, True):
            rows = np.median([step(synced) for _ in range(10)], axis=0) * 1e3
            print(f"{kind:9s} {'synced' if synced else 'host  '} total {rows.sum():6.3f} ms | "
                  + " ".join(f"{n} {v:.3f}" for n, v in zip(names, rows)), flush=True)
