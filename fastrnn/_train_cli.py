"""`fastrnn train`: the presets, a new or resumed trainer from the command line, the run and
its end (the best model's sample, the unigram check). The parser and the other commands are in
fastrnn.cli."""
import math
import os
import sys
import warnings

import fastrnn
import fastrnn._layout
import fastrnn.checkpoint
from fastrnn import _resume
from fastrnn._progress import kchars
from fastrnn.trainer import WorseThanUnigramWarning
from fastrnn.vocab import read_ids

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
                                     dtype=args.dtype, precision=args.precision)
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
                                forget_bias=args.forget_bias or 0.0,
                                precision=args.precision or "fp32")
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
