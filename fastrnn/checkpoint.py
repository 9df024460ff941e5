"""Checkpoints: one .npz file, no pickled objects written or read, written atomically.

Keys of a model checkpoint (format version 2):
    format           "fastrnn-checkpoint"            format_version   2
    cell, num_layers, nonlinearity, dropout          the model (fastrnn._layout.ModelSpec)
    hidden_size, vocab_size                          dtype            "float32" | "float64"
    NAME             each named tensor (Wxh … for min-char-rnn's model, weight_ih_l0 … else)
    vocab_codes      uint32 code points of the vocab
    backend, device  where it was saved from (informational; any backend/device loads it)
    vocab_byte_level True when the vocab's characters stand for bytes (absent: False)
Other components add keys under their own prefix: "trainer/…", and "optimizer/…" whose state
buffers are saved per named tensor ("optimizer/state/mem/Why"), so a later change of the flat
layout never breaks a resume. Version 1 files (min-char-rnn's model, its optimizer state as flat
buffers) still load.
"""
import os
import re
import tempfile
import zipfile

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no flock; files left by killed writers are then not cleared
    fcntl = None

FORMAT = "fastrnn-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
TMP_TAG = ".fastrnn-"  # temporary files are "<name>.fastrnn-XXXXXXXX.tmp" next to "<name>"


class CheckpointError(ValueError):
    """A file that is not a usable fastrnn checkpoint."""


def write_npz_atomic(path, arrays):
    """Writes `arrays` (name -> array) to `path` as .npz: to a temporary file in the same
    directory, flushed to disk, then renamed over `path`, so `path` is always either the old
    complete file or the new complete one, whatever interrupts the write (an exception, SIGINT,
    SIGKILL, a full disk).

    The writer holds an exclusive flock on its temporary file until the rename; temporary files
    that nobody holds were left by killed writers and are removed by the next write, so they
    never pile up. An OSError (unwritable directory, full disk) is raised again naming `path`.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"checkpoint entry {name!r} is an object array; refusing to pickle")
    _remove_stale_temporaries(directory, base)
    try:
        fd, tmp = tempfile.mkstemp(prefix=base + TMP_TAG, suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                os.replace(tmp, path)  # while still locked, so no cleaner can take it
        if fcntl is None:
            os.replace(tmp, path)  # Windows cannot rename an open file
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise
    _fsync_directory(directory)


def _write_error(path, exc):
    """The OSError of a failed write, reworded to name the checkpoint (same errno, so still a
    PermissionError etc.)."""
    message = (f"could not write checkpoint {path}: {exc.strerror or exc}; the previous file, "
               f"if any, is unchanged")
    return OSError(exc.errno, message) if exc.errno is not None else OSError(message)


def _remove_stale_temporaries(directory, base):
    """Deletes the temporary files of earlier writes of `base` whose writer died before it could
    clean up (SIGKILL, power loss). A live writer holds a lock on its file; one we can lock has
    no writer."""
    if fcntl is None:
        return
    pattern = re.compile(re.escape(base + TMP_TAG) + r"[a-z0-9_]{8}\.tmp")
    try:
        names = [n for n in os.listdir(directory) if pattern.fullmatch(n)]
    except OSError:
        return
    for name in names:
        stale = os.path.join(directory, name)
        try:
            fd = os.open(stale, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(stale)):  # not renamed meanwhile
                os.unlink(stale)
        except OSError:
            pass  # held by a live writer, or gone already
        finally:
            os.close(fd)


def _fsync_directory(directory):
    """Makes the rename itself durable (POSIX); best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _int_entry(arrays, key, path, default=None):
    """An integer scalar entry, or CheckpointError (KeyError if missing and no default)."""
    if key not in arrays and default is not None:
        return default
    a = np.asarray(arrays[key])
    if a.shape != () or a.dtype.kind not in "iu":
        raise CheckpointError(f"{path}: {key} must be an integer scalar, got a {a.dtype} array "
                              f"of shape {a.shape}")
    return int(a)


def read_npz(path):
    """All arrays of a checkpoint file, loaded with allow_pickle=False and checked for format."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # np.load would try other formats, pickle among them
        raise CheckpointError(f"{path} is not a readable .npz checkpoint (truncated or another "
                              f"kind of file)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable .npz checkpoint "
                              f"(truncated or another kind of file): {exc}") from None
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CheckpointError(f"{path} holds pickled objects; fastrnn never loads those")
        raise CheckpointError(f"{path} is not a readable .npz checkpoint: {exc}") from None
    if str(arrays.get("format", "")) != FORMAT:
        raise CheckpointError(f"{path} is not a fastrnn checkpoint (no 'format' entry)")
    version = _int_entry(arrays, "format_version", path, default=-1)
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{path} has checkpoint format version {version}; this fastrnn "
                              f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    return arrays


def model_arrays(model):
    """The entries that describe a model: parameters, vocabulary, sizes, dtype."""
    from .vocab import code_points
    spec = model.spec
    arrays = {"format": np.array(FORMAT), "format_version": np.array(FORMAT_VERSION),
              "hidden_size": np.array(spec.hidden_size), "vocab_size": np.array(spec.vocab_size),
              "cell": np.array(spec.cell), "num_layers": np.array(spec.num_layers),
              "nonlinearity": np.array(spec.nonlinearity), "dropout": np.array(spec.dropout),
              "dtype": np.array(model.dtype.name), "backend": np.array(model.backend),
              "device": np.array(str(model.device))}
    if model.vocab is not None:
        arrays["vocab_codes"] = code_points(model.vocab.chars)
        arrays["vocab_byte_level"] = np.array(model.vocab.byte_level)
    arrays.update(model.get_params())
    return arrays


def _str_entry(arrays, key, path, default):
    if key not in arrays:
        return default
    a = np.asarray(arrays[key])
    if a.shape != () or a.dtype.kind != "U":
        raise CheckpointError(f"{path}: {key} must be a string, got a {a.dtype} array of shape "
                              f"{a.shape}")
    return str(a)


def spec_from_arrays(arrays, path="checkpoint"):
    """The ModelSpec a checkpoint describes (version 1: min-char-rnn's model)."""
    from ._layout import ModelSpec
    H, V = _int_entry(arrays, "hidden_size", path), _int_entry(arrays, "vocab_size", path)
    if H < 1 or V < 1:
        raise CheckpointError(f"{path}: hidden_size and vocab_size must be positive, got {H} "
                              f"and {V}")
    dropout = 0.0
    if "dropout" in arrays:
        d = np.asarray(arrays["dropout"])
        if d.shape != () or d.dtype.kind != "f":
            raise CheckpointError(f"{path}: dropout must be a float scalar")
        dropout = float(d)
    try:
        return ModelSpec(_str_entry(arrays, "cell", path, "rnn"), V, H,
                         _int_entry(arrays, "num_layers", path, default=1),
                         _str_entry(arrays, "nonlinearity", path, "tanh"), dropout)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _tensors(arrays, spec, prefix):
    """The spec's named tensors, their names under prefix."""
    return {name: arrays[prefix + name] for name in spec.names}


def model_from_arrays(arrays, path="checkpoint", *, backend="cython", device="cpu", dtype=None):
    """A CharRNN rebuilt from checkpoint entries, on any backend and device."""
    from ._params import check_dtype, check_tensors
    from .model import CharRNN
    from .vocab import Vocab, from_code_points
    try:
        spec = spec_from_arrays(arrays, path)
        H, V = spec.hidden_size, spec.vocab_size
        saved_dtype = str(arrays["dtype"])
        params = _tensors(arrays, spec, "")
    except KeyError as exc:
        raise CheckpointError(f"{path} lacks the entry {exc.args[0]!r}") from None
    vocab = None
    if "vocab_codes" in arrays:
        try:
            vocab = Vocab(from_code_points(arrays["vocab_codes"]),
                          byte_level=bool(arrays.get("vocab_byte_level", False)))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(f"{path} holds an invalid vocabulary: {exc}") from None
        if len(vocab) != V:
            raise CheckpointError(f"{path}: vocabulary has {len(vocab)} characters but "
                                  f"vocab_size is {V}")
    try:
        # the sizes must match the arrays actually stored before a model of that size is built
        check_tensors(params, spec)
        if dtype is None:
            check_dtype(saved_dtype)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = CharRNN(vocab if vocab is not None else V, H, cell=spec.cell,
                    num_layers=spec.num_layers, nonlinearity=spec.nonlinearity,
                    dropout=spec.dropout, backend=backend, device=device,
                    dtype=dtype or saved_dtype)
    try:
        model.set_params(params)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return model


# -- training checkpoints: a model checkpoint plus "optimizer/…", "trainer/…" and "meta/…" -------

def _plain(v):
    """A checkpoint entry for a plain value; None becomes NaN (read back by _unplain)."""
    return np.array(np.nan if v is None else v)


def _unplain(a):
    a = np.asarray(a)
    if a.ndim == 0 and a.dtype.kind == "f" and np.isnan(a):
        return None
    return a.item() if a.ndim == 0 else a


def write_training_checkpoint(path, trainer):
    """Writes everything a Trainer needs to continue exactly: the model entries, the optimizer
    (name, hyperparameters, step count, state buffers), the trainer's walk, carried states,
    smooth loss, history and RNG state, and trainer.meta, as one atomic .npz."""
    opt = trainer.optimizer
    arrays = model_arrays(trainer.model)
    arrays["optimizer/name"] = np.array(opt.name)
    for k, v in opt.hyperparameters().items():
        arrays[f"optimizer/hyper/{k}"] = _plain(v)
    from ._layout import unflatten
    for k, v in opt.state_dict().items():
        if k in opt.state_names:  # per named tensor (see the module docstring)
            for name, a in unflatten(np.asarray(v), trainer.model.spec).items():
                arrays[f"optimizer/state/{k}/{name}"] = a
        else:
            arrays[f"optimizer/{k}"] = np.asarray(v)
    for k, v in trainer.state_dict().items():
        arrays[f"trainer/{k}"] = np.asarray(v)
    for k, v in trainer.meta.items():
        arrays[f"meta/{k}"] = _plain(v)
    write_npz_atomic(path, arrays)


def section(arrays, prefix):
    """The entries under "prefix/" (prefix removed)."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}


def read_training_checkpoint(path, ids, *, val_ids=None, backend="cython", device="cpu"):
    """A Trainer continuing exactly from a file written by write_training_checkpoint."""
    from .optim import make_optimizer
    from .trainer import Trainer
    arrays = read_npz(path)
    if "trainer/iteration" not in arrays or "optimizer/name" not in arrays:
        raise CheckpointError(f"{path} holds a model only, not a training run to resume "
                              f"(use it with --init-from to fine-tune)")
    model = model_from_arrays(arrays, path, backend=backend, device=device)
    try:
        hyper = {k[len("hyper/"):]: _unplain(v) for k, v in section(arrays, "optimizer").items()
                 if k.startswith("hyper/")}
        if "betas" in hyper:
            hyper["betas"] = tuple(float(b) for b in hyper["betas"])
        opt = make_optimizer(str(arrays["optimizer/name"]), model, **hyper)
        opt.load_state_dict(_optimizer_state(arrays, opt, model, path))
        state = section(arrays, "trainer")
        trainer = Trainer(model, ids, seq_length=int(state["seq_length"]),
                          batch_size=int(state["batch_size"]), optimizer=opt,
                          reset=str(state["reset"]), reduction=str(state["reduction"]),
                          val_ids=val_ids)
        trainer.load_state_dict(state)
    except KeyError as exc:
        raise CheckpointError(f"{path} lacks the entry {exc.args[0]!r}") from None
    trainer.meta = {k: _unplain(v) for k, v in section(arrays, "meta").items()}
    return trainer


def _optimizer_state(arrays, opt, model, path):
    """The optimizer's state_dict from a checkpoint: version 2 buffers are reassembled from
    their named tensors into the model's flat layout; version 1 ones are flat already."""
    from ._params import check_tensors, pack
    state = section(arrays, "optimizer")
    for k in opt.state_names:
        prefix = f"optimizer/state/{k}/"
        if not any(key.startswith(prefix) for key in arrays):
            continue  # version 1: state[k] is the flat buffer itself
        try:
            tensors = check_tensors(_tensors(arrays, model.spec, prefix), model.spec,
                                    what=f"optimizer state {k!r}")
        except KeyError as exc:
            raise CheckpointError(f"{path} lacks the entry {exc.args[0]!r}") from None
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        state[k] = pack(tensors, model.spec, model.dtype)
    return state


def read_meta(path):
    """The "meta/…" entries of a training checkpoint (empty for a model-only file)."""
    return {k: _unplain(v) for k, v in section(read_npz(path), "meta").items()}
