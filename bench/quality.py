"""Quality at speed: how low the validation loss gets in a fixed wall-clock budget.

    python bench/quality.py [--seconds 120] [--threads 2] [--optimizer adam] [--backend cython]
    python bench/quality.py --seconds 900 --model lstm --num-layers 2 --hidden-size 384 \
        --dropout 0.25 --lr 4e-3 --val-frac 0.1        # issue 15's 15-minute quality goal

The speed issue's setting: the 1 MB Shakespeare corpus with its last 5% held out (--val-frac),
B=64 streams, T=128, H=256, float32, min-char-rnn's tanh cell (--model, --num-layers, --dropout
for the others). It trains until the budget is spent, measuring the validation loss
(nats/char over the whole held-out text) every --eval-every seconds; evaluation time counts
against the budget too. Prints one line per evaluation and a final summary (also as JSON with
--json FILE).

Defaults are the best settings measured (bench/README.md, "Quality at speed"): Adam (lr 6e-3,
betas 0.9 and 0.99) with the mean loss and clip-norm 5, PyTorch's uniform initialisation, and the
learning rate held for the first half of the budget, then lowered linearly to 0 by the end
(--decay-start, --decay-to).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import fastrnn

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "shakespeare_1mb.txt"


def corpus(val_frac):
    """(vocab, train ids, validation ids): the 1 MB Shakespeare (the shared copy when it exists,
    else the built-in one, the same text), its last val_frac held out."""
    text = SHARED.read_text(encoding="utf-8") if SHARED.exists() else fastrnn.load_shakespeare()
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    cut = int(len(ids) * (1 - val_frac))
    return vocab, ids[:cut], ids[cut:]


def optimizer(name, model, lr=None, clip_norm=5.0, beta2=0.99):
    """The optimizer of these benchmarks: clip-norm on the whole gradient, no per-element clip;
    Adam with betas (0.9, beta2) and lr 6e-3 unless given, the others at their own lr."""
    kwargs = {"clip_norm": clip_norm, "clip": None}
    if name == "adam":
        kwargs["betas"] = (0.9, beta2)
    if lr is not None or name == "adam":
        kwargs["lr"] = lr if lr is not None else 6e-3
    return fastrnn.make_optimizer(name, model, **kwargs)


def scheduled_lr(base_lr, done, decay_start=0.5, decay_to=0.0):
    """The learning rate after the fraction `done` of the budget: base_lr until decay_start,
    then lowered linearly to decay_to * base_lr at the end."""
    progress = (done - decay_start) / (1 - decay_start)
    return base_lr * (1 - (1 - decay_to) * min(max(progress, 0.0), 1.0))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=120.0, help="wall-clock budget")
    p.add_argument("--eval-every", type=float, default=15.0, help="seconds between evaluations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="cython")
    p.add_argument("--optimizer", default="adam", choices=["adam", "rmsprop", "adagrad", "sgd"])
    p.add_argument("--lr", type=float, default=None,
                   help="default: 6e-3 for adam, else the optimizer's")
    p.add_argument("--clip-norm", type=float, default=5.0)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--model", default="rnn", choices=["rnn", "lstm", "gru"])
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--val-frac", type=float, default=0.05, help="held out from the end")
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--reduction", default="mean", choices=["sum", "mean"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="uniform", choices=list(fastrnn.model.INITS),
                   help="the model's initial weights (see fastrnn.CharRNN)")
    p.add_argument("--beta2", type=float, default=0.99, help="Adam's second-moment decay")
    p.add_argument("--decay-to", type=float, default=0.0,
                   help="lower the learning rate linearly to this fraction of --lr at the end "
                        "of the budget (1: constant)")
    p.add_argument("--decay-start", type=float, default=0.5,
                   help="the fraction of the budget after which the learning rate decays (0: "
                        "over the whole budget)")
    p.add_argument("--json", help="write the summary here")
    args = p.parse_args(argv)
    if not 0 <= args.decay_start < 1:
        p.error(f"--decay-start must lie in [0, 1), got {args.decay_start}")

    fastrnn.set_num_threads(args.threads)
    vocab, train_ids, val_ids = corpus(args.val_frac)
    model = fastrnn.CharRNN(vocab, args.hidden_size, cell=args.model, num_layers=args.num_layers,
                            dropout=args.dropout, backend=args.backend, seed=args.seed,
                            init=args.init)
    opt = optimizer(args.optimizer, model, args.lr, args.clip_norm, args.beta2)
    trainer = fastrnn.Trainer(model, train_ids, seq_length=args.seq_length,
                              batch_size=args.batch_size, optimizer=opt,
                              reduction=args.reduction, val_ids=val_ids, seed=args.seed)
    print(f"fastrnn {fastrnn.__version__} quality run: {model}, {opt}, B={args.batch_size} "
          f"T={args.seq_length}, {args.threads} threads, budget {args.seconds:.0f} s, "
          f"{os.cpu_count()} cores", flush=True)
    history, start = [], time.perf_counter()
    next_eval = args.eval_every
    best = float("inf")
    base_lr = opt.lr
    while True:
        trainer.step()
        elapsed = time.perf_counter() - start
        opt.lr = scheduled_lr(base_lr, elapsed / args.seconds, args.decay_start, args.decay_to)
        if elapsed >= next_eval or elapsed >= args.seconds:
            val = trainer.evaluate()["nats_per_char"]
            elapsed = time.perf_counter() - start
            best = min(best, val)
            history.append({"seconds": round(elapsed, 1), "iteration": trainer.iteration,
                             "val_nats_per_char": round(val, 4)})
            print(f"{elapsed:7.1f} s  iteration {trainer.iteration:6d}  val {val:.4f} nats/char",
                  flush=True)
            next_eval += args.eval_every
            if elapsed >= args.seconds:
                break
    summary = {"best_val_nats_per_char": round(best, 4), "iterations": trainer.iteration,
               "lr": base_lr, "decay_to": args.decay_to, "decay_start": args.decay_start,
               "init": args.init, "beta2": args.beta2, "reduction": args.reduction,
               "seconds": round(time.perf_counter() - start, 1), "optimizer": repr(opt),
               "backend": args.backend, "threads": args.threads, "model": repr(model),
               "val_frac": args.val_frac, "history": history}
    print(f"best validation loss {best:.4f} nats/char after {trainer.iteration} iterations "
          f"in {summary['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
