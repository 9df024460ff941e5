"""The `fastrnn` command line (also `python -m fastrnn`)."""
import argparse
import sys
import time

import fastrnn


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def cmd_train(args):
    text = _read_text(args.data) if args.data else fastrnn.load_shakespeare()
    source = args.data or "built-in Shakespeare (1.1 MB)"
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    model = fastrnn.CharRNN(vocab, args.hidden_size, backend=args.backend, dtype=args.dtype,
                            seed=args.seed)
    opt = fastrnn.Adagrad(model, lr=args.lr, clip=args.clip)
    trainer = fastrnn.Trainer(model, ids, seq_length=args.seq_length,
                              batch_size=args.batch_size, optimizer=opt)
    print(f"fastrnn {fastrnn.__version__}: training on {source}: {len(ids):,} chars, "
          f"vocab {len(vocab)}; {model}", flush=True)
    result = trainer.fit(args.iterations, print_every=args.print_every)
    print(f"{result.iterations} iterations in {result.seconds:.1f} s "
          f"({result.chars_per_sec:,.0f} chars/s); smooth loss {result.smooth_loss:.3f} "
          f"({result.smooth_loss / (args.seq_length * args.batch_size):.3f} nats/char)")
    print("----")
    print(model.sample_text(args.sample_length, prime=args.prime, temperature=args.temperature,
                            seed=args.seed))
    print("----")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="fastrnn", description=__doc__)
    parser.add_argument("--version", action="version", version=fastrnn.__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a character-level RNN on a text file, then sample")
    t.add_argument("--data", help="UTF-8 text file (default: the built-in Shakespeare)")
    t.add_argument("--backend", default="cython", choices=list(fastrnn.BACKENDS))
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--hidden-size", type=int, default=100)
    t.add_argument("--seq-length", type=int, default=25)
    t.add_argument("--batch-size", type=int, default=1)
    t.add_argument("--iterations", type=int, default=5000)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--clip", type=float, default=5.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--print-every", type=int, default=500)
    t.add_argument("--sample-length", type=int, default=400)
    t.add_argument("--prime", default="", help="text to warm the state on before sampling")
    t.add_argument("--temperature", type=float, default=1.0)
    t.set_defaults(func=cmd_train)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError, OSError, FloatingPointError) as exc:
        print(f"fastrnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastrnn: interrupted", file=sys.stderr)
        return 130
