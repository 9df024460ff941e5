"""What validation loss is good? Vanilla / GRU / LSTM at 1-3 layers and two parameter budgets,
trained for the same number of iterations, next to Kneser-Ney n-gram models, on the 1 MB
Shakespeare with its last 10% held out.

    python bench/baselines.py --out bench/tables          # the full table (~30 min on 2 cores)
    python bench/baselines.py --quick --out /tmp/b        # a smoke run (under a minute)

Every row trains on the cython backend, float32, --threads threads, with the same settings:
B=--batch-size streams of T=--seq-length characters, --iterations iterations, Adam (lr --lr,
default 2e-3, betas 0.9 and 0.99, the mean loss, clip-norm 5), PyTorch's uniform
initialisation, the learning rate held for the first half and then lowered linearly to 0
(bench/quality.py's optimizer and schedule, by iteration instead of by second), seed --seed.
The hidden size of each row is the one (a multiple of 8) that brings its parameter count
closest to the budget. The validation loss is measured once, after the last iteration, over the
whole held-out text (Trainer.evaluate). A row's loss therefore depends on the budget, not on the
machine's load; its seconds do (the header records the load average before and after, and each
row the load when it started).

The n-gram rows are fastrnn.ngram.KneserNey (what `fastrnn baseline` runs) fitted on the same
training ids and scored on the same validation ids; the unigram row is the add-one unigram.

Writes baselines.md (header and table), baselines.json and baselines.png (matplotlib) to --out.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import fastrnn
from fastrnn._layout import ModelSpec
from fastrnn.bench import machine_header
from fastrnn.ngram import KneserNey
from fastrnn.trainer import metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import corpus, optimizer, scheduled_lr  # noqa: E402  (bench/ is no package)

CELLS = ("rnn", "gru", "lstm")
# lr 2e-3 (char-rnn's): in 200-iteration probes the vanilla rnn at H=928 stayed at the unigram
# loss with 4e-3 and 6e-3 (bench/quality.py's default, tuned at H=256), and the rows share one lr
FULL = dict(budgets=(250_000, 1_000_000), layers=(1, 2, 3), iterations=500, batch_size=32,
            seq_length=64, kn_orders=(3, 4, 5, 6, 7), lr=2e-3)
QUICK = dict(budgets=(20_000,), layers=(1, 2), iterations=300, batch_size=16, seq_length=32,
             kn_orders=(3, 5), lr=6e-3)


def hidden_for(cell, layers, vocab_size, budget):
    """The hidden size (a multiple of 8) whose parameter count is closest to budget."""
    return min(range(8, 4097, 8),
               key=lambda h: abs(ModelSpec(cell, vocab_size, h, layers).num_weights - budget))


def commit():
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=8"],
                             capture_output=True, text=True, cwd=Path(__file__).parent)
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def load():
    return [round(x, 2) for x in os.getloadavg()]


def train_row(cell, layers, hidden, vocab, train_ids, val_ids, args):
    model = fastrnn.CharRNN(vocab, hidden, cell=cell, num_layers=layers, backend="cython",
                            dtype="float32", seed=args.seed, init="uniform")
    opt = optimizer("adam", model, args.lr)
    trainer = fastrnn.Trainer(model, train_ids, seq_length=args.seq_length,
                              batch_size=args.batch_size, optimizer=opt, reduction="mean",
                              val_ids=val_ids, seed=args.seed)
    load_at_start = load()[0]
    t0 = time.perf_counter()
    for it in range(args.iterations):
        opt.lr = scheduled_lr(args.lr, it / args.iterations)
        trainer.step()
    train_s = time.perf_counter() - t0
    val = trainer.evaluate()
    eval_s = time.perf_counter() - t0 - train_s
    return {"cell": cell, "layers": layers, "hidden": hidden, "params": model.spec.num_weights,
            "val_nats_per_char": round(val["nats_per_char"], 4),
            "bits_per_char": round(val["bits_per_char"], 4), "iterations": trainer.iteration,
            "seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
            "load_at_start": load_at_start}


def ngram_rows(vocab, train_ids, val_ids, orders):
    counts = np.bincount(train_ids, minlength=len(vocab)) + 1.0  # add-one unigram
    unigram = -np.log(counts / counts.sum())[val_ids[1:]].sum()
    rows = [dict(name="unigram (add-one)", order=1,
                 **_loss(metrics(float(unigram), len(val_ids) - 1)), seconds=0.0)]
    for k in orders:
        t0 = time.perf_counter()
        total, count = KneserNey(k, len(vocab)).fit(train_ids).nll(val_ids)
        rows.append(dict(name=f"Kneser-Ney {k}-gram", order=k, **_loss(metrics(total, count)),
                         seconds=round(time.perf_counter() - t0, 1)))
    return rows


def _loss(m):
    return {"val_nats_per_char": round(m["nats_per_char"], 4),
            "bits_per_char": round(m["bits_per_char"], 4)}


def markdown(header, settings, rows, ngrams):
    lines = ["Run: " + "; ".join(f"{k} {v}" for k, v in header.items()), "",
             "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()), "",
             "| cell | layers | hidden | params | val nats/char | bits/char | iterations | "
             "seconds |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['layers']} | {r['hidden']} | {r['params']:,} | "
                     f"{r['val_nats_per_char']:.4f} | {r['bits_per_char']:.4f} | "
                     f"{r['iterations']} | {r['seconds']:.1f} |")
    for r in ngrams:
        lines.append(f"| {r['name']} | - | - | - | {r['val_nats_per_char']:.4f} | "
                     f"{r['bits_per_char']:.4f} | - | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows, ngrams, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    markers, colours = {"rnn": "o", "gru": "s", "lstm": "^"}, {1: "C0", 2: "C1", 3: "C2"}
    for ax, key, label in [(axes[0], "params", "parameters"),
                           (axes[1], "seconds", "training seconds (this machine, shared)")]:
        for r in rows:
            ax.scatter(r[key], r["val_nats_per_char"], marker=markers[r["cell"]],
                       color=colours.get(r["layers"], "C3"), s=60)
        labels = []  # [loss, orders]: orders whose lines nearly coincide share one label
        for r in sorted((n for n in ngrams if n["order"] > 1),
                        key=lambda n: n["val_nats_per_char"]):
            ax.axhline(r["val_nats_per_char"], color="grey", ls="--", lw=0.8)
            if labels and r["val_nats_per_char"] - labels[-1][0] < 0.04:
                labels[-1][1].append(str(r["order"]))
            else:
                labels.append([r["val_nats_per_char"], [str(r["order"])]])
        for loss, orders in labels:
            ax.annotate(f"Kneser-Ney {'/'.join(sorted(orders, key=int))}-gram", (0.01, loss),
                        xycoords=("axes fraction", "data"), fontsize=8, va="bottom")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation nats/char")
    handles = [plt.Line2D([], [], marker=m, ls="", color="k", label=c)
               for c, m in markers.items()]
    handles += [plt.Line2D([], [], marker="o", ls="", color=c, label=f"{n} layer(s)")
                for n, c in colours.items()]
    axes[1].legend(handles=handles, loc="lower right", fontsize=8, ncol=2)
    fig.suptitle("1 MB Shakespeare, last 10% held out: RNNs at a fixed iteration budget "
                 "against Kneser-Ney n-grams")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for baselines.{md,json,png}")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: tiny models (20k parameters), 1-2 layers, few iterations")
    p.add_argument("--iterations", type=int, help=f"default {FULL['iterations']}")
    p.add_argument("--batch-size", type=int, help=f"default {FULL['batch_size']}")
    p.add_argument("--seq-length", type=int, help=f"default {FULL['seq_length']}")
    p.add_argument("--budgets", type=int, nargs="+", help="parameter budgets (default "
                   f"{' '.join(map(str, FULL['budgets']))})")
    p.add_argument("--layers", type=int, nargs="+", choices=(1, 2, 3))
    p.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    p.add_argument("--kn-orders", type=int, nargs="+")
    p.add_argument("--lr", type=float, help=f"default {FULL['lr']} (--quick: {QUICK['lr']})")
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.iterations < 1 or args.batch_size < 1 or args.seq_length < 1 or args.lr <= 0:
        p.error("--iterations, --batch-size, --seq-length and --lr must be positive")
    if not 0 < args.val_frac < 1:
        p.error(f"--val-frac must lie in (0, 1), got {args.val_frac}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fastrnn.set_num_threads(args.threads)
    vocab, train_ids, val_ids = corpus(args.val_frac)
    header = machine_header(args.threads)
    header.update(commit=commit(), command="python " + shlex.join(
        [os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else list(argv))),
        load_before=load())
    settings = {"corpus": f"1 MB Shakespeare, {len(train_ids):,} train / {len(val_ids):,} "
                          f"validation chars, vocab {len(vocab)}",
                "backend": "cython float32", "B": args.batch_size, "T": args.seq_length,
                "iterations": args.iterations,
                "optimizer": f"Adam lr {args.lr} betas (0.9, 0.99) clip-norm 5, mean loss, "
                             f"lr held to half, then linearly to 0",
                "init": "uniform", "seed": args.seed}
    print(" | ".join(f"{k} {v}" for k, v in header.items()), flush=True)
    print(", ".join(f"{k} {v}" for k, v in settings.items()), flush=True)

    ngrams = ngram_rows(vocab, train_ids, val_ids, args.kn_orders)
    for r in ngrams:
        print(f"{r['name']:<24} {r['val_nats_per_char']:.4f} nats/char "
              f"{r['bits_per_char']:.4f} bits/char ({r['seconds']:.1f} s)", flush=True)
    rows = []
    for budget in args.budgets:
        for layers in args.layers:
            for cell in args.cells:
                hidden = hidden_for(cell, layers, len(vocab), budget)
                r = train_row(cell, layers, hidden, vocab, train_ids, val_ids, args)
                r["budget"] = budget
                rows.append(r)
                print(f"{cell:<5}L={layers} H={hidden:<5}{r['params']:>10,} params  "
                      f"{r['val_nats_per_char']:.4f} nats/char {r['bits_per_char']:.4f} "
                      f"bits/char  {r['iterations']} it in {r['seconds']:.1f} s "
                      f"(+{r['eval_seconds']:.1f} s eval, load {r['load_at_start']})",
                      flush=True)
    header["load_after"] = load()
    table = markdown(header, settings, rows, ngrams)
    (out / "baselines.md").write_text(table)
    (out / "baselines.json").write_text(json.dumps(
        {"header": header, "settings": settings, "rows": rows, "ngram": ngrams}, indent=1))
    if not args.no_plot:
        plot(rows, ngrams, out / "baselines.png")
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
