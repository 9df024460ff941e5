"""The `fastrnn` command line (also `python -m fastrnn`): the parser, and every command but `train`
(fastrnn._train_cli): sample, eval, baseline, export, inspect."""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

import fastrnn
import fastrnn._layout
import fastrnn._params
import fastrnn.checkpoint
from fastrnn import _cli_compat
from fastrnn.trainer import NAN_POLICIES
from fastrnn.vocab import OOV_POLICIES, read_ids
# the train command (DEFAULT_PRESET and _new_trainer stay importable from here)
from fastrnn._train_cli import (DEFAULT_PRESET, PRESETS, _new_trainer,  # noqa: F401
                                _split, _write_text, cmd_train)

# Checks of numeric options, made before anything is loaded: (test, what it must be).
_FINITE = math.isfinite
OPTION_CHECKS = {
    "positive integer": (lambda v: v >= 1, "at least 1"),
    "count": (lambda v: v >= 0, "at least 0"),
    "positive": (lambda v: v > 0 and _FINITE(v), "a positive finite number"),
    "clip": (lambda v: v >= 0, "positive (0 turns it off; inf: no clipping)"),
    "temperature": (lambda v: v >= 0 and _FINITE(v), "a finite number >= 0 (0: greedy)"),
    "fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "start": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
}
OPTIONS = {"hidden_size": "positive integer", "seq_length": "positive integer",
           "batch_size": "positive integer", "threads": "positive integer",
           "top_k": "count", "iterations": "count", "eval_every": "count",
           "print_every": "count", "sample_every": "count", "sample_length": "count",
           "checkpoint_every": "count", "length": "count", "seed": "count", "lr": "positive",
           "epochs": "positive", "clip": "clip", "clip_norm": "clip",
           "temperature": "temperature", "top_p": "fraction", "lr_hold": "start",
           "lr_decay_to": "fraction", "lr_decay_every": "positive",
           "lr_decay_factor": "fraction",
           "num_layers": "positive integer", "dropout": "dropout"}


def check_options(args):
    """A clear error for a numeric option out of its range (NaN included), or for options
    that contradict each other, before any work."""
    if getattr(args, "epochs", None) is not None and getattr(args, "iterations", None) is not None:
        raise ValueError(f"--epochs {args.epochs:g} and --iterations {args.iterations} both set "
                         f"the run's length: give one of them")
    if getattr(args, "lr_hold", None) is not None and args.lr_decay_factor is not None:
        raise ValueError("--lr-hold (hold, then lower linearly) and --lr-decay-factor (times a "
                         "factor every --lr-decay-every epochs) are two schedules: give one")
    if getattr(args, "lr_decay_every", None) is not None and args.lr_decay_factor is None:
        raise ValueError("--lr-decay-every E needs --lr-decay-factor F (the lr times F every E "
                         "epochs)")
    for name, kind in OPTIONS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        test, want = OPTION_CHECKS[kind]
        if not test(value):  # NaN fails every test
            raise ValueError(f"--{name.replace('_', '-')} must be {want}, got {value}")


def _load_model(args):
    return fastrnn.CharRNN.load(args.checkpoint, backend=args.backend, device=args.device,
                                precision=getattr(args, "precision", None))


def cmd_sample(args):
    model = _load_model(args)
    if model.vocab is None:
        raise ValueError(f"{args.checkpoint} has no vocabulary to turn ids into text")
    prime = model.vocab.decode(model.vocab.encode(args.prime, oov=args.oov)) if args.prime else ""
    if args.beam is not None:
        if args.greedy or args.top_k is not None or args.top_p is not None \
                or args.temperature != 1.0:
            raise ValueError("--beam does not combine with --greedy, --temperature, --top-k or "
                             "--top-p")
        prime_ids = model.vocab.encode(prime) if prime else None
        ids, score = model.beam_search(args.length, args.beam, prime_ids=prime_ids)
        _write_text(model.vocab, model.vocab.decode(ids), sys.stdout, prime=prime)
        print(f"\nbeam {args.beam}: mean log-probability {score:.4f} nats/char",
              file=sys.stderr)
        return 0
    chars = model.stream(args.length, prime=prime, temperature=args.temperature,
                         greedy=args.greedy, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    _write_text(model.vocab, chars, sys.stdout, prime=prime)
    if sys.stdout.isatty():
        print()
    return 0


def _report(name, m, as_json):
    if as_json:
        print(json.dumps({"name": name, **m}))
        return
    extra = f", {m['bits_per_byte']:.4f} bits/byte" if "bits_per_byte" in m else ""
    print(f"{name}: {m['chars']:,} predictions, {m['nats_per_char']:.4f} nats/char, "
          f"{m['bits_per_char']:.4f} bits/char, perplexity {m['perplexity']:.3f}{extra}")


def cmd_eval(args):
    model = _load_model(args)
    if model.vocab is None:
        raise ValueError(f"{args.checkpoint} has no vocabulary to read text with")
    _, ids = read_ids(args.file, model.vocab.byte_level, model.vocab, args.oov)
    if len(ids) < 2:
        raise ValueError(f"{args.file} holds {len(ids)} character(s) of the vocabulary; "
                         f"scoring needs at least 2")
    total, count = model.nll(ids, batch_size=args.batch_size)
    n_bytes = int(np.bincount(ids[1:], minlength=len(model.vocab)) @ model.vocab.byte_lengths())
    _report(args.file, fastrnn.trainer.metrics(total, count, n_bytes), args.json)
    return 0


def cmd_baseline(args):
    from fastrnn.ngram import KneserNey
    vocab, ids = read_ids(args.file, args.bytes)
    train_ids, val_ids = _split(ids, args.val_frac)
    if val_ids is None:
        raise ValueError(f"--val-frac {args.val_frac} of {len(ids)} characters leaves no "
                         f"validation text to score")
    t0 = time.perf_counter()
    lm = KneserNey(args.order, len(vocab)).fit(train_ids)
    total, count = lm.nll(val_ids)
    n_bytes = int(np.bincount(val_ids[1:], minlength=len(vocab)) @ vocab.byte_lengths())
    if not args.json:
        print(f"interpolated Kneser-Ney {args.order}-gram on {len(train_ids):,} chars, vocab "
              f"{len(vocab)}, scored on the last {len(val_ids):,} "
              f"({time.perf_counter() - t0:.1f} s)")
    _report("validation", fastrnn.trainer.metrics(total, count, n_bytes), args.json)
    return 0


def cmd_export(args):
    model = fastrnn.CharRNN.load(args.checkpoint, backend="numpy")
    if args.format == "npz":
        model.save(args.output)  # the model alone: parameters, vocabulary, sizes
    elif args.format == "onnx":
        from fastrnn.onnx_export import export_onnx
        print(f"wrote {' and '.join(export_onnx(model, args.output))}")
        return 0
    else:
        # weights, vocabulary and model description in plain types: torch.load(...,
        # weights_only=True) reads it, CharRNN.from_torch takes it back
        from fastrnn._optional import require_torch
        torch = require_torch("export --format torch")
        from fastrnn.interop import export_dict
        torch.save(export_dict(model), args.output)
    print(f"wrote {args.output}")
    return 0


EXPORT_HELP = """\
--format onnx (needs `pip install onnx`) writes one stateful step of the model, float32,
opset 17, and its vocabulary beside it as JSON (step.onnx -> step.vocab.json: "chars" in id
order, the state inputs' names and shape). Inputs: char (int64, shape (1,)), then h (float32,
(L,1,H); min-char-rnn's model: (1,1,H)) and, for lstm, c (L,1,H). Outputs: logits (1,V), then
h_out (and c_out) in the order of the state inputs. To sample without fastrnn, feed zeros as
the first state, then each output state back in with the id drawn from softmax(logits); see
docs/deploy.md for a complete numpy + onnxruntime loop."""


def cmd_inspect(args):
    from fastrnn import inspect
    if args.max_chars < 1:
        raise ValueError(f"--max-chars must be at least 1, got {args.max_chars}")
    model = fastrnn.CharRNN.load(args.checkpoint, backend=args.backend)
    if model.vocab is None:
        raise ValueError(f"{args.checkpoint} has no vocabulary to read text with")
    text, total = inspect.read_prefix(args.text, args.max_chars, model.vocab.byte_level)
    a = inspect.report(model, text, args.output, max_chars=args.max_chars, oov=args.oov,
                       total_chars=total, title=f"fastrnn inspect: {os.path.basename(args.text)}"
                                                f" read by {os.path.basename(args.checkpoint)}")
    print(f"wrote {args.output}: {a.describe} ({len(a.units):,} units shown); "
          f"{inspect.cap_note(a)}")
    return 0


PRECISION_HELP = ("the matrix products' operands: fp32, or bf16: rounded to bfloat16 and summed "
                  "in float32, all else float32 (float32 models only)")


def _add_model_location(p):
    p.add_argument("--backend", default="cython", choices=list(fastrnn.BACKENDS))
    p.add_argument("--device", default="cpu", help="cpu, or cuda[:N] with --backend torch")


def build_parser():
    parser = argparse.ArgumentParser(prog="fastrnn", description=__doc__)
    parser.add_argument("--version", action="version", version=fastrnn.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a character-level RNN on a text file, then sample",
                       description="Options left out come from --preset (default lab: "
                                   "about 90 s on 2 cores for the built-in Shakespeare, "
                                   "ending with text that reads like it), then from the "
                                   "optimizer's defaults. --preset min-char-rnn is "
                                   "Karpathy's gist, exactly.")
    t.add_argument("--data", help="text file (default: the built-in Shakespeare)")
    t.add_argument("--bytes", action="store_true", help="model the file byte by byte")
    t.add_argument("--preset", choices=list(PRESETS),
                   help="lab (the default): H=256 T=128 B=64 Adam lr 6e-3 betas (0.9, "
                        "0.99) clip-norm 5, mean loss, uniform init, lr lowered over the "
                        "second half, 2000 iterations; min-char-rnn: the gist, H=100 T=25 B=1 "
                        "Adagrad lr 0.1 clip 5, summed loss, 5000 iterations (can end worse "
                        "than a unigram guess: a warning says so); char-rnn: 2-layer LSTM "
                        "128, T=50 B=50, RMSprop lr 2e-3 decay 0.95, clip 5, mean loss; "
                        "lstm-15min: 2-layer LSTM 384, dropout 0.25, T=128 B=64, Adam lr 4e-3, "
                        "lr lowered over the second half, 1900 iterations (about 15 minutes "
                        "on 2 cores; 1.51 nats/char on the built-in Shakespeare)")
    _add_model_location(t)
    t.add_argument("--dtype", choices=["float32", "float64"],
                   help="default float32 (with --init-from: the checkpoint's)")
    t.add_argument("--precision", choices=list(fastrnn._params.PRECISIONS),
                   help=PRECISION_HELP + " (default fp32; with --init-from: the checkpoint's)")
    t.add_argument("--init", choices=list(fastrnn.model.INITS),
                   help="a new model's weights: gist, N(0,1)*0.01 as min-char-rnn; uniform, "
                        "U(+-1/sqrt(H)) as PyTorch's nn.RNN (default: the preset's)")
    t.add_argument("--model", choices=list(fastrnn._layout.CELLS),
                   help="the cell: rnn (Elman, min-char-rnn's), lstm or gru (default: the "
                        "preset's; rnn)")
    t.add_argument("--num-layers", type=int, help="stacked layers (default: the preset's; 1)")
    t.add_argument("--dropout", type=float,
                   help="dropout on each layer's output but the last, while training (0: off)")
    t.add_argument("--nonlinearity", choices=list(fastrnn._layout.NONLINEARITIES),
                   help="--model rnn's activation: tanh (default) or relu (with --init identity:"
                        " the IRNN)")
    t.add_argument("--forget-bias", type=float,
                   help="--model lstm: the forget gates' initial bias (char-rnn: 1)")
    t.add_argument("--hidden-size", type=int, help="H (default: the preset's)")
    t.add_argument("--seq-length", type=int, help="T, characters a chunk (default: the preset's)")
    t.add_argument("--batch-size", type=int,
                   help="B streams (default: the preset's, or as many as a short text fits)")
    t.add_argument("--iterations", type=int, help="total iterations (with --resume too)")
    t.add_argument("--epochs", type=float, help="total passes over the data (instead)")
    t.add_argument("--optimizer", choices=list(fastrnn.optim.OPTIMIZERS),
                   help="default: the preset's (its lr and clipping go with it)")
    t.add_argument("--lr", type=float,
                   help="learning rate (default: the preset's with its optimizer, else the "
                        "optimizer's)")
    t.add_argument("--lr-hold", type=float, metavar="F",
                   help="hold the lr for the first fraction F of the run's iterations, then "
                        "lower it linearly to --lr-decay-to times it at the end (default: the "
                        "preset's; lab: 0.5; else constant)")
    t.add_argument("--lr-decay-to", type=float, metavar="R",
                   help="the lr's final fraction with --lr-hold (default 0.01)")
    t.add_argument("--lr-decay-factor", type=float, metavar="F",
                   help="char-rnn's and torch-rnn's decay instead: the lr times F every "
                        "--lr-decay-every epochs")
    t.add_argument("--lr-decay-every", type=float, metavar="E",
                   help="epochs between --lr-decay-factor's steps (default 1)")
    _cli_compat.add_lr_decay(t)
    t.add_argument("--clip", type=float, help="elementwise gradient clip (0: off)")
    t.add_argument("--clip-norm", type=float, help="global gradient-norm clip (0: off)")
    t.add_argument("--reduction", choices=["sum", "mean"],
                   help="loss the update follows: summed over a chunk's tokens (the gist's) or "
                        "their mean (default: the preset's; lab: mean)")
    t.add_argument("--reset", choices=["wrap", "never", "every"],
                   help="when a stream's carried hidden state is zeroed (default: wrap)")
    t.add_argument("--val-frac", type=float,
                   help="fraction held out from the end for validation (0: none; default "
                        "0.05, with --resume the checkpoint's)")
    t.add_argument("--eval-every", type=int, help="default: a tenth of the run")
    t.add_argument("--print-every", type=int,
                   help="print lines this often instead of a progress bar")
    t.add_argument("--sample-every", type=int,
                   help="show a sample this often (default: never; with --resume, as the "
                        "checkpoint's run did, as for --log, --plot, --eval-every and "
                        "--checkpoint-every)")
    t.add_argument("--sample-length", type=int, default=400)
    t.add_argument("--prime", default="", help="text to warm the state on before sampling")
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--checkpoint-dir",
                   help="where latest.npz and best.npz go (default: checkpoints, or the "
                        "directory of --resume; '': nowhere)")
    t.add_argument("--checkpoint-every", type=int, help="default: --eval-every")
    t.add_argument("--resume", metavar="PATH", help="continue a run exactly from a checkpoint")
    t.add_argument("--init-from", metavar="PATH",
                   help="fine-tune a checkpoint's model (its vocabulary is kept)")
    t.add_argument("--oov", choices=OOV_POLICIES, default="error",
                   help="characters outside the vocabulary: in the data of --init-from or "
                        "--resume, and in --prime")
    t.add_argument("--nan-policy", choices=NAN_POLICIES,
                   help="a step whose loss or update is not finite is never taken; raise (the "
                        "default): stop with an error; skip: go on without it")
    t.add_argument("--seed", type=int, help="default 0 (with --resume: the checkpoint's)")
    t.add_argument("--threads", type=int, help="threads: the compiled kernels split a batch over "
                                               "them; numpy's BLAS and torch use as many "
                                               "(default: $FASTRNN_NUM_THREADS or all cores)")
    t.add_argument("--log", metavar="FILE.jsonl", help="append every metric as a JSON line")
    t.add_argument("--plot", metavar="FILE.png", help="write the loss curves (matplotlib)")
    t.set_defaults(func=cmd_train)
    _cli_compat.add_compat(t, _cli_compat.TRAIN_ALIASES, _cli_compat.TRAIN_REFER)

    s = sub.add_parser("sample", help="generate text from a checkpoint, streamed to stdout")
    s.add_argument("checkpoint")
    _add_model_location(s)
    s.add_argument("--length", type=int, default=500)
    s.add_argument("--prime", default="", help="text to warm the state on (printed first)")
    s.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    s.add_argument("--top-k", type=int,
                   help="draw from the k most likely characters only (0: all, as top_k=0 in "
                        "the API)")
    s.add_argument("--top-p", type=float, help="nucleus: the most likely holding this mass")
    s.add_argument("--greedy", action="store_true", help="always the most likely character")
    s.add_argument("--beam", type=int, metavar="K",
                   help="beam search keeping K hypotheses: the --length characters of highest "
                        "log-probability it finds (K=1: greedy); prints their mean "
                        "log-probability per character to stderr")
    s.add_argument("--seed", type=int, help="for a reproducible sample")
    s.add_argument("--oov", choices=OOV_POLICIES, default="error",
                   help="prime characters outside the vocabulary")
    s.set_defaults(func=cmd_sample)
    _cli_compat.add_compat(s, _cli_compat.SAMPLE_ALIASES, _cli_compat.SAMPLE_REFER)

    e = sub.add_parser("eval", help="nats/char, bits/char, perplexity, bits/byte of a file")
    e.add_argument("checkpoint")
    e.add_argument("file")
    _add_model_location(e)
    e.add_argument("--batch-size", type=int, default=1,
                   help="score in this many parallel streams (1: exact, every character "
                        "sees all before it)")
    e.add_argument("--oov", choices=OOV_POLICIES, default="error")
    e.add_argument("--json", action="store_true")
    e.add_argument("--precision", choices=list(fastrnn._params.PRECISIONS),
                   help=PRECISION_HELP + " (default: the checkpoint's)")
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("baseline", help="a Kneser-Ney character n-gram model's validation loss")
    b.add_argument("file")
    b.add_argument("--order", type=int, default=5)
    b.add_argument("--val-frac", type=float, default=0.05)
    b.add_argument("--bytes", action="store_true")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_baseline)

    x = sub.add_parser(
        "export", help="write a checkpoint's model alone (npz), for PyTorch, or its step as ONNX",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=EXPORT_HELP)
    x.add_argument("checkpoint")
    x.add_argument("--format", choices=["npz", "torch", "onnx"], default="npz")
    x.add_argument("--output", "-o", required=True)
    x.set_defaults(func=cmd_export)

    i = sub.add_parser("inspect", help="an HTML page showing what the model's units do on a text")
    i.add_argument("checkpoint")
    i.add_argument("text", help="text file to read (its first --max-chars characters)")
    i.add_argument("--output", "-o", required=True, help="the HTML file to write")
    i.add_argument("--max-chars", type=int, default=5000,
                   help="analyse at most this many characters (default 5000)")
    i.add_argument("--backend", default="numpy", choices=["numpy", "cython"],
                   help="backend the checkpoint is loaded on (the activations are computed "
                        "with the numpy backend's math either way; default numpy)")
    i.add_argument("--oov", choices=OOV_POLICIES, default="error")
    i.set_defaults(func=cmd_inspect)

    # `fastrnn bench ...` is handed to fastrnn.bench.main whole (see main); listed for --help
    sub.add_parser("bench", help="speed benchmarks against numpy and PyTorch "
                                 "(fastrnn bench --help)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from . import bench
        return bench.main(argv[1:])
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # answered with the subcommand's usage, not the top-level one
        subparsers = next(a for a in parser._actions
                          if isinstance(a, argparse._SubParsersAction))
        _cli_compat.unknown(subparsers.choices[args.command], extras)
    try:
        check_options(args)
        return args.func(args)
    except BrokenPipeError:  # e.g. `fastrnn sample ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, ImportError, OSError, ArithmeticError) as exc:
        print(f"fastrnn: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # e.g. an absurd --hidden-size
        print(f"fastrnn: error: out of memory ({exc or 'no details'}); try smaller sizes",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastrnn: interrupted", file=sys.stderr)
        return 130
