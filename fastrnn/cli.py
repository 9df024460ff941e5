"""The `fastrnn` command line (also `python -m fastrnn`): train, sample, eval, baseline, export."""
import argparse
import json
import math
import os
import sys
import time
import warnings

import numpy as np

import fastrnn
import fastrnn._layout
import fastrnn.checkpoint
from fastrnn import _cli_compat, _resume
from fastrnn._progress import kchars
from fastrnn.trainer import NAN_POLICIES, WorseThanUnigramWarning
from fastrnn.vocab import OOV_POLICIES, read_ids

# Model, walk and optimizer settings of each preset; the optimizer's own defaults complete them.
PRESETS = {
    "min-char-rnn": dict(hidden_size=100, seq_length=25, batch_size=1, optimizer="adagrad",
                         optim=dict(lr=0.1, clip=5.0), reduction="sum", iterations=5000,
                         init="gist", lr_decay=None),
    "lab": dict(hidden_size=256, seq_length=128, batch_size=64, optimizer="adam",
                optim=dict(lr=6e-3, betas=(0.9, 0.99), clip_norm=5.0), reduction="mean",
                iterations=2000, init="uniform", lr_decay=0.5),
    # karpathy/char-rnn's train.lua defaults: 2-layer LSTM 128, RMSprop lr 2e-3 (decay 0.95),
    # elementwise clip 5, seq 50, batch 50, mean loss over the batch's tokens
    "char-rnn": dict(hidden_size=128, seq_length=50, batch_size=50, optimizer="rmsprop",
                     optim=dict(lr=2e-3, decay=0.95, clip=5.0), reduction="mean",
                     iterations=5000, init="uniform", lr_decay=None, model="lstm",
                     num_layers=2, dropout=0.0),
    # the best model measured to train in about 15 minutes on a 2-core machine (bench/quality.py
    # with these settings: 1.509 nats/char on the 1 MB Shakespeare, last 10% held out, 1,898
    # iterations in 900 s; bench/README.md)
    "lstm-15min": dict(hidden_size=384, seq_length=128, batch_size=64, optimizer="adam",
                       optim=dict(lr=4e-3, betas=(0.9, 0.99), clip_norm=5.0), reduction="mean",
                       iterations=1900, init="uniform", lr_decay=0.5, model="lstm",
                       num_layers=2, dropout=0.25),
}
MODEL_DEFAULTS = dict(model="rnn", num_layers=1, dropout=0.0, nonlinearity="tanh")
# The preset of `fastrnn train` without --preset. Not min-char-rnn: its Adagrad at lr 0.1 on the
# summed loss of one 25-character stream can end worse than a unigram guess (issue 17: half the
# seeds on Python sources); lab's batched Adam on the mean loss ended better in every seed tried.
DEFAULT_PRESET = "lab"


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


def _load_ids(path, byte_level, vocab=None, oov="error"):
    """(vocab, ids, a description) of --data, or of the built-in corpus: the vocabulary built
    from it unless given, the ids in the vocabulary's smallest integer type (one byte a
    character up to 256 symbols); the text itself is never held whole."""
    if path:
        vocab, ids = read_ids(path, byte_level, vocab, oov)
        source = path
    else:
        text = fastrnn.load_shakespeare()
        if byte_level:
            text = text.encode("utf-8").decode("latin-1")
        vocab = vocab or fastrnn.Vocab.from_text(text, byte_level=byte_level)
        ids = vocab.encode(text, oov=oov, dtype=vocab.dtype)
        source = "built-in Shakespeare (1.1 MB)"
    if len(ids) == 0:
        raise ValueError(f"{source} holds no text to train on"
                         + (f" (--oov {oov} dropped every character)" if oov == "skip" else ""))
    return vocab, ids, source


def _check_length(train_ids, val_ids, T, B, source):
    """A clear error when the training part of the corpus is too short for one chunk."""
    need = B * T + 1
    if len(train_ids) >= need:
        return
    held = f" ({len(val_ids):,} more are held out by --val-frac)" if val_ids is not None else ""
    raise ValueError(f"{source} gives {len(train_ids):,} characters to train on{held}; "
                     f"--seq-length {T} x --batch-size {B} needs at least {need:,}: use more "
                     f"text or a smaller --seq-length / --batch-size")


def _split(ids, val_frac):
    """Train ids and the held-out last val_frac of them (None when that is under 2 ids)."""
    if not 0 <= val_frac < 1:
        raise ValueError(f"--val-frac must lie in [0, 1), got {val_frac}")
    n_val = int(len(ids) * val_frac)
    if n_val < 2:
        return ids, None
    return ids[:-n_val], ids[-n_val:]


def optimizer_from_args(args, model, name, base=()):
    """Optimizer `name` with hyperparameters `base`, overridden by those given on the line."""
    kwargs = dict(base)
    if args.lr is not None:
        kwargs["lr"] = args.lr
    for key in ("clip", "clip_norm"):  # 0 turns it off; absent keeps the optimizer's default
        value = getattr(args, key)
        if value is not None:
            kwargs[key] = value if value > 0 else None
    return fastrnn.make_optimizer(name, model, **kwargs)


def _new_trainer(args, out):
    """A fresh (or --init-from) model, optimizer and trainer from the command line."""
    if args.seed is None:
        args.seed = _resume.DEFAULT_SEED
    preset_name = args.preset or DEFAULT_PRESET
    preset = PRESETS[preset_name]
    H, T, B = (preset[k] if getattr(args, k) is None else getattr(args, k)
               for k in ("hidden_size", "seq_length", "batch_size"))
    if args.init_from and args.init:
        raise ValueError("--init sets up a new model's weights; --init-from loads them: leave "
                         "out one")
    if args.init_from:
        model = fastrnn.CharRNN.load(args.init_from, backend=args.backend, device=args.device,
                                     dtype=args.dtype)
        if model.vocab is None:
            raise ValueError(f"{args.init_from} has no vocabulary to fine-tune with")
        for key, have in (("hidden_size", model.hidden_size), ("model", model.cell),
                          ("num_layers", model.num_layers), ("nonlinearity", model.nonlinearity),
                          ("dropout", model.dropout)):
            given = getattr(args, key)
            if given is not None and given != have:
                raise ValueError(f"--{key.replace('_', '-')} {given} differs from the "
                                 f"--init-from model's {have}")
        if args.bytes and not model.vocab.byte_level:
            raise ValueError(f"--bytes: the --init-from model {args.init_from} models "
                             f"characters, not bytes; leave out --bytes")
        vocab, ids, source = _load_ids(args.data, model.vocab.byte_level, model.vocab, args.oov)
    else:
        vocab, ids, source = _load_ids(args.data, args.bytes)
        cell, layers, dropout, nonlinearity = (
            getattr(args, k) if getattr(args, k) is not None else preset.get(k, MODEL_DEFAULTS[k])
            for k in ("model", "num_layers", "dropout", "nonlinearity"))
        model = fastrnn.CharRNN(vocab, H, cell=cell, num_layers=layers, dropout=dropout,
                                nonlinearity=nonlinearity, backend=args.backend,
                                device=args.device, dtype=args.dtype or "float32",
                                seed=args.seed, init=args.init or preset["init"],
                                forget_bias=args.forget_bias or 0.0)
    val_frac = args.val_frac if args.val_frac is not None else _resume.DEFAULT_VAL_FRAC
    train_ids, val_ids = _split(ids, val_frac)
    fitted = ""
    if args.batch_size is None and B > 1 and len(train_ids) < B * T + 1:
        # the preset's streams do not fit a short text: as many as do (one at least)
        B, fitted = max(1, (len(train_ids) - 1) // T), f" (the preset's {B} do not fit)"
    _check_length(train_ids, val_ids, T, B, source)
    default = preset["optimizer"], preset["optim"]
    name = args.optimizer or default[0]
    base = default[1] if name == default[0] else {}
    reduction = args.reduction or preset["reduction"]
    trainer = fastrnn.Trainer(model, train_ids, seq_length=T, batch_size=B,
                              optimizer=optimizer_from_args(args, model, name, base),
                              reset=args.reset or "wrap",
                              reduction=reduction, val_ids=val_ids, seed=args.seed,
                              nan_policy=args.nan_policy or "raise")
    trainer.meta = {"data": os.path.abspath(args.data) if args.data else "",
                    "val_frac": val_frac,
                    "iterations": _total_iterations(args, trainer, preset)}
    _lr_schedule(args, trainer, preset, preset_name)
    print(f"fastrnn {fastrnn.__version__}: training on {source}: {len(train_ids):,} chars"
          f"{f' + {len(val_ids):,} held out' if val_ids is not None else ''}, vocab "
          f"{len(model.vocab)}{' (bytes)' if model.vocab.byte_level else ''}; {model}; "
          f"preset {preset_name}: T={T}, B={B}{fitted}, {name} lr {trainer.base_lr:g}, "
          f"{reduction} loss, {trainer.meta['iterations']:,} iterations", file=out, flush=True)
    return trainer


def _lr_schedule(args, trainer, preset, preset_name):
    """The run's lr schedule: --lr-decay-factor's steps, else --lr-hold's (or the preset's)
    hold-then-linear decay, else none; recorded in the trainer's meta for --resume."""
    hold = None if args.lr_decay_factor is not None else (
        args.lr_hold if args.lr_hold is not None else preset["lr_decay"])
    if args.lr_decay_to is not None and hold is None:
        raise ValueError("--lr-decay-to R is where --lr-hold's linear decay ends: give --lr-hold "
                         "F too")
    decay_to = args.lr_decay_to if args.lr_decay_to is not None else 0.01
    every = args.lr_decay_every if args.lr_decay_every is not None else 1.0
    _resume.record(args, trainer, None if args.init_from else args.init or preset["init"],
                   hold, decay_to, (every, args.lr_decay_factor), preset_name)
    total = trainer.meta["iterations"]
    if args.lr_decay_factor is not None:
        trainer.lr_schedule = fastrnn.StepDecay(
            max(1, round(every * trainer.iterations_per_epoch)), args.lr_decay_factor)
    elif hold is not None and total >= 2:
        trainer.lr_schedule = fastrnn.LinearDecay(min(int(hold * total), total - 1), total,
                                                  decay_to)


def _total_iterations(args, trainer, preset):
    if args.epochs is not None:
        if not args.epochs > 0:
            raise ValueError(f"--epochs must be positive, got {args.epochs}")
        return max(1, math.ceil(args.epochs * trainer.iterations_per_epoch))
    return args.iterations if args.iterations is not None else preset["iterations"]


def _resumed_trainer(args, out):
    meta = fastrnn.checkpoint.read_meta(args.resume)
    probe = fastrnn.CharRNN.load(args.resume, backend="numpy")
    if probe.vocab is None:
        raise ValueError(f"{args.resume} has no vocabulary")
    data = args.data if args.data is not None else (meta.get("data") or None)
    val_frac = meta.get("val_frac")
    if val_frac is None:  # a checkpoint written by the API: what is given, else the default
        val_frac = args.val_frac if args.val_frac is not None else _resume.DEFAULT_VAL_FRAC
    _, ids, source = _load_ids(data, probe.vocab.byte_level, probe.vocab, args.oov)
    train_ids, val_ids = _split(ids, val_frac)
    # loaded with the checkpoint's --val-frac: one given that differs is named by check()
    trainer = fastrnn.Trainer.load(args.resume, train_ids, val_ids=val_ids,
                                   backend=args.backend, device=args.device)
    trainer.meta.setdefault("val_frac", val_frac)
    _resume.check(args, trainer, probe.vocab.byte_level)
    _resume.restore_run_options(args, trainer.meta)
    if args.seed is None:
        args.seed = int(trainer.meta.get("seed") or 0)
    if args.nan_policy is not None:
        trainer.nan_policy = args.nan_policy
    if args.epochs is not None or args.iterations is not None:
        trainer.meta["iterations"] = _total_iterations(args, trainer, PRESETS["min-char-rnn"])
    print(f"fastrnn {fastrnn.__version__}: resuming {args.resume} at iteration "
          f"{trainer.iteration:,} on {source}; {trainer.model}, {trainer.optimizer!r}",
          file=out, flush=True)
    return trainer


def cmd_train(args):
    out = sys.stdout
    if args.plot:  # fail before training, not after it
        fastrnn.plot.check_path(args.plot)
    if args.threads is not None:
        _set_threads(args.threads)
    trainer = _resumed_trainer(args, out) if args.resume else _new_trainer(args, out)
    if args.plot:  # restored from the checkpoint
        fastrnn.plot.check_path(args.plot)
    prime = args.prime
    if prime:  # checked now, not after the training
        vocab = trainer.model.vocab
        try:
            prime = vocab.decode(vocab.encode(prime, oov=args.oov))
        except ValueError as exc:
            raise ValueError(f"--prime: {exc}") from None
    total = int(trainer.meta["iterations"])
    todo = max(0, total - trainer.iteration)
    has_val = trainer.val_ids is not None
    eval_every = args.eval_every if args.eval_every is not None else max(1, round(total / 10))
    print_every = args.print_every
    if print_every is None:  # a progress bar on a terminal, else lines
        print_every = 0 if sys.stderr.isatty() else max(1, round(total / 20))
    log = args.log
    ckpt = args.checkpoint_dir
    if ckpt is None:  # a resumed run keeps writing beside the checkpoint it came from
        ckpt = os.path.dirname(args.resume) or "." if args.resume else "checkpoints"
    ckpt = ckpt or None
    try:
        with warnings.catch_warnings():  # each evaluation's warning as it comes, one line
            warnings.simplefilter("always", WorseThanUnigramWarning)
            warnings.showwarning = _show_warning
            result = trainer.fit(todo, print_every=print_every, file=out, progress=None,
                                 eval_every=eval_every if has_val else 0,
                                 sample_every=args.sample_every or 0,
                                 sample_length=args.sample_length,
                                 checkpoint_every=(args.checkpoint_every if
                                                   args.checkpoint_every is not None
                                                   else eval_every),
                                 checkpoint_dir=ckpt, log=log)
    except fastrnn.trainer.DivergedError as exc:  # say what is on disk, and what to change
        where = os.path.join(ckpt, "latest.npz") if ckpt else None
        kept = ("no checkpoint was written (no --checkpoint-dir)" if not where else
                f"no checkpoint was written yet to {where}")
        if where and os.path.exists(where):
            it = int(fastrnn.checkpoint.read_npz(where)["trainer/iteration"])
            kept = f"the last checkpoint, {where}, is from iteration {it:,}"
        skip = "" if trainer.nan_policy == "skip" else ", or --nan-policy skip"
        raise FloatingPointError(f"training diverged at iteration {exc.iteration:,}: "
                                 f"{exc.reason}; try a smaller --lr, or --clip / --clip-norm"
                                 f"{skip}; {kept}") from None
    if args.plot:
        fastrnn.plot_history(trainer.history, args.plot)
    if result.interrupted:
        where = os.path.join(ckpt, "latest.npz") if ckpt else None
        print(f"fastrnn: interrupted at iteration {trainer.iteration:,}"
              + (f"; checkpoint written to {where}; continue with: "
                 f"{_resume.hint(args, where)}" if where else
                 " (no --checkpoint-dir: nothing saved)"),
              file=sys.stderr)
        return 130
    tpc = trainer.seq_length * trainer.batch_size
    trained = result.steps * tpc
    # two lines that each fit 80 columns
    print(f"{trainer.iteration:,} iterations ({trainer.epoch:.3g} epochs); this run "
          f"{result.steps:,} in {result.seconds:.1f} s", file=out)
    print(f"training {kchars(trained / max(result.step_seconds, 1e-9))} "
          f"({result.step_seconds:.1f} s); smooth loss {result.smooth_loss:.3f} "
          f"({result.smooth_loss / tpc:.4f} nats/char)"
          f"{f'; {result.skipped_steps} non-finite steps skipped' if result.skipped_steps else ''}",
          file=out)
    if has_val and trainer.history["val"]:
        best = trainer.best_val_loss
        print(f"validation: last {trainer.history['val'][-1][1]:.4f}, best {best:.4f} "
              f"nats/char ({best / math.log(2):.4f} bits/char)", file=out)
    if ckpt:
        print(f"checkpoints: {os.path.join(ckpt, 'latest.npz')}"
              f"{', ' + os.path.join(ckpt, 'best.npz') if has_val else ''}", file=out)
    if not has_val and trainer.iteration:  # no validation: the training text's score tells
        tail = trainer.ids[-TAIL_CHECK:]
        _show_warning(trainer.unigram_warning(trainer.evaluate(tail)["nats_per_char"],
                                              f"training-text (last {len(tail):,} chars)",
                                              tail))
    model, note = _best_model(trainer, ckpt, args) if has_val else (trainer.model, "")
    if args.sample_length:
        if note:
            print(note, file=out)
        print("----", file=out)
        _write_text(model.vocab, model.stream(
            args.sample_length, prime=prime, temperature=args.temperature,
            seed=args.seed), out, prime=prime)
        print("\n----", file=out)
    return 0


TAIL_CHECK = 50_000  # training characters scored at the end of a run without validation


def _show_warning(message, *args, **kwargs):
    """A warning as one line on stderr (also warnings.showwarning's signature)."""
    if message:
        print(f"fastrnn: warning: {message}", file=sys.stderr, flush=True)


def _best_model(trainer, ckpt, args):
    """(model, note): the model of best.npz when it is this run's best (same data, the best
    validation loss this trainer knows) and not the final model, else the final model."""
    path = os.path.join(ckpt, "best.npz") if ckpt else None
    if not path or not os.path.exists(path) or not trainer.history["val"]:
        return trainer.model, ""
    if trainer.history["val"][-1][1] <= trainer.best_val_loss:
        return trainer.model, ""  # the final model is the best
    try:
        arrays = fastrnn.checkpoint.read_npz(path)
        ours = (str(arrays.get("trainer/data_sha256", "")) == trainer.data_fingerprint() and
                float(arrays["trainer/best_val_loss"]) == trainer.best_val_loss)
        model = fastrnn.checkpoint.model_from_arrays(arrays, path, backend=args.backend,
                                                     device=args.device) if ours else None
    except (ValueError, KeyError, OSError):
        model = None
    if model is None:
        return trainer.model, ""
    it = int(arrays["trainer/iteration"])
    return model, (f"sample from the best checkpoint, {path} (iteration {it:,}, validation "
                   f"{trainer.best_val_loss:.4f} nats/char):")


def _set_threads(n):
    """set_num_threads, its warning (more threads than cores) as one line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastrnn.set_num_threads(n)
    for w in caught:
        print(f"fastrnn: warning: {w.message}", file=sys.stderr)


def _write_text(vocab, chars, out, prime=""):
    """Writes the prime and then each generated character as it comes (bytes for a byte-level
    vocab), flushing every 16."""
    buffer = out.buffer if vocab.byte_level and hasattr(out, "buffer") else None

    def put(s):
        if buffer is not None:
            out.flush()
            buffer.write(vocab.to_bytes(s))
        else:
            out.write(s)

    put(prime)
    pending = []
    for c in chars:
        pending.append(c)
        if len(pending) == 16:
            put("".join(pending))
            pending.clear()
            out.flush()
    put("".join(pending))
    out.flush()


def _load_model(args):
    return fastrnn.CharRNN.load(args.checkpoint, backend=args.backend, device=args.device)


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
