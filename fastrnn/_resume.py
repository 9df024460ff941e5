"""`fastrnn train --resume`: which settings a resumed run takes from its checkpoint.

People resume by re-running the original command with --resume added, so a setting given
again with the value the checkpoint was trained with is accepted; one that differs is refused,
every such setting named with both values. The run's display options (--log, --plot,
--sample-every, --eval-every, --checkpoint-every) are kept in the checkpoint's meta entries and
come back when the resumed command leaves them out, so that the printed "continue with" hint
loses none of them.
"""
import math
import os

# Settings a checkpoint fixes, as the argparse names of `fastrnn train`.
FIXED = ("preset", "hidden_size", "seq_length", "batch_size", "optimizer", "lr", "clip",
         "clip_norm", "reduction", "reset", "init_from", "dtype", "init", "lr_hold",
         "lr_decay_to", "lr_decay_every", "lr_decay_factor", "val_frac", "seed", "model",
         "num_layers", "dropout", "nonlinearity", "forget_bias", "precision")
# Options of how a run reports, kept in the checkpoint and reused when left out on --resume.
RUN_OPTIONS = ("log", "plot", "sample_every", "eval_every", "checkpoint_every")
DEFAULT_VAL_FRAC = 0.05
DEFAULT_SEED = 0


def _path(p):
    return os.path.abspath(p) if p else None


def record(args, trainer, init, hold, decay_to, steps=(None, None), preset=None):
    """Meta entries of a new run: the settings only the command line knows (the model,
    optimizer and trainer hold the others) and its display options. hold, decay_to: the
    hold-then-linear schedule (--lr-hold; meta key lr_decay, its name in fastrnn 0.1);
    steps: (--lr-decay-every, --lr-decay-factor) of the stepped one; preset: the preset the run
    used (the default one when none was named)."""
    every, factor = steps
    trainer.meta.update({"preset": preset or args.preset or "", "init": init or "",
                         "init_from": _path(args.init_from) or "",
                         "lr_decay": hold, "lr_decay_to": decay_to if hold is not None
                         else None,
                         "lr_decay_every": every if factor is not None else None,
                         "lr_decay_factor": factor,
                         "seed": args.seed if args.seed is not None else DEFAULT_SEED,
                         "forget_bias": getattr(args, "forget_bias", None) or 0.0})
    record_run_options(args, trainer.meta)


def record_run_options(args, meta):
    for name in RUN_OPTIONS:
        value = getattr(args, name)
        meta[name] = _path(value) if name in ("log", "plot") else value


def restore_run_options(args, meta):
    """Options left out on --resume take the checkpoint's values; the meta keeps the ones
    used now."""
    for name in RUN_OPTIONS:
        if getattr(args, name) is None and meta.get(name) is not None:
            value = meta[name]
            setattr(args, name, value if name in ("log", "plot") else int(value))
    record_run_options(args, meta)


def _saved(trainer):
    """name -> the value the checkpoint's run had, for each FIXED setting it records."""
    opt, model, meta = trainer.optimizer, trainer.model, trainer.meta
    hyper = opt.hyperparameters()
    saved = {"hidden_size": model.hidden_size, "seq_length": trainer.seq_length,
             "batch_size": trainer.batch_size, "optimizer": opt.name, "lr": trainer.base_lr,
             "clip": hyper.get("clip"), "clip_norm": hyper.get("clip_norm"),
             "reduction": trainer.reduction, "reset": trainer.reset, "dtype": model.dtype.name,
             "val_frac": meta.get("val_frac"), "model": model.cell,
             "num_layers": model.num_layers, "dropout": model.dropout,
             "nonlinearity": model.nonlinearity, "precision": model.precision}
    for name in ("preset", "init", "init_from", "lr_decay_to", "seed", "forget_bias"):
        if name in meta:
            saved[name] = meta[name]
    if "lr_decay" in meta:  # --lr-hold's value, under the option's name in fastrnn 0.1
        saved["lr_hold"] = meta["lr_decay"]
        # a checkpoint from before the stepped schedule had none
        saved["lr_decay_every"] = meta.get("lr_decay_every")
        saved["lr_decay_factor"] = meta.get("lr_decay_factor")
    return {k: v for k, v in saved.items() if k != "val_frac" or v is not None}


def _given(name, value):
    """A command-line value as the checkpoint records it."""
    if name in ("clip", "clip_norm"):
        return value if value > 0 else None  # 0 turns it off
    if name == "init_from":
        return _path(value)
    return value


def _same(name, given, saved):
    if given is None or saved is None or saved == "":
        return given is None and (saved is None or saved == "")
    if isinstance(given, float) or isinstance(saved, float):
        try:
            return math.isclose(float(given), float(saved), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return str(given) == str(saved)


def _show(value):
    return "(none)" if value is None or value == "" else str(value)


def check(args, trainer, byte_level):
    """Refuses, in one line naming each with both values, the settings given on --resume that
    differ from the checkpoint's; settings the checkpoint does not record must be left out."""
    saved = _saved(trainer)
    differ, unknown = [], []
    for name in FIXED:
        value = getattr(args, name)
        if value is None:
            continue
        option = "--" + name.replace("_", "-")
        if name not in saved:
            unknown.append(option)
        elif not _same(name, _given(name, value), saved[name]):
            differ.append(f"{option} {_show(_given(name, value))} (the checkpoint's: "
                          f"{_show(saved[name])})")
    if args.bytes and not byte_level:
        differ.append("--bytes (the checkpoint models characters)")
    if differ:
        raise ValueError(f"--resume continues a run with its own settings; these differ from "
                         f"{args.resume}'s: {'; '.join(differ)}; leave them out or give the "
                         f"checkpoint's values")
    if unknown:
        raise ValueError(f"--resume continues a run with its own settings, and {args.resume} "
                         f"does not record {', '.join(unknown)}: leave "
                         f"{'it' if len(unknown) == 1 else 'them'} out")


def hint(args, where):
    """The command that continues an interrupted run (its display options are in the
    checkpoint; where it ran is not)."""
    extra = ""
    if args.backend != "cython":
        extra += f" --backend {args.backend}"
    if args.device != "cpu":
        extra += f" --device {args.device}"
    return f"fastrnn train --resume {where}{extra}"
