"""Checkpoints: one .npz file, no pickled objects written or read, written atomically.

Keys of a model checkpoint (format version 1):
    format           "fastrnn-checkpoint"            format_version   1
    Wxh Whh Why bh by  the parameters                vocab_codes      uint32 code points of the vocab
    hidden_size, vocab_size                          dtype            "float32" | "float64"
    backend, device  where it was saved from (informational; any backend/device loads it)
Other components (trainer, optimizer state) add keys under their own prefix, e.g. "trainer/…".
"""
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "fastrnn-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable fastrnn checkpoint."""


def write_npz_atomic(path, arrays):
    """Writes `arrays` (name -> array) to `path` as .npz: to a temporary file in the same
    directory, flushed to disk, then renamed over `path`, so `path` is always either the old
    complete file or the new complete one."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"checkpoint entry {name!r} is an object array; refusing to pickle")
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
    version = int(arrays.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}; this fastrnn "
                              f"reads version {FORMAT_VERSION}")
    return arrays


def model_arrays(model):
    """The entries that describe a model: parameters, vocabulary, sizes, dtype."""
    from .vocab import code_points
    arrays = {"format": np.array(FORMAT), "format_version": np.array(FORMAT_VERSION),
              "hidden_size": np.array(model.hidden_size), "vocab_size": np.array(model.vocab_size),
              "dtype": np.array(model.dtype.name), "backend": np.array(model.backend),
              "device": np.array(str(model.device))}
    if model.vocab is not None:
        arrays["vocab_codes"] = code_points(model.vocab.chars)
    arrays.update(model.get_params())
    return arrays


def model_from_arrays(arrays, path="checkpoint", *, backend="cython", device="cpu", dtype=None):
    """A CharRNN rebuilt from checkpoint entries, on any backend and device."""
    from .model import CharRNN
    from .vocab import Vocab, from_code_points
    try:
        H, V = int(arrays["hidden_size"]), int(arrays["vocab_size"])
        saved_dtype = str(arrays["dtype"])
        params = {k: arrays[k] for k in ("Wxh", "Whh", "Why", "bh", "by")}
    except KeyError as exc:
        raise CheckpointError(f"{path} lacks the entry {exc.args[0]!r}") from None
    vocab = None
    if "vocab_codes" in arrays:
        try:
            vocab = Vocab(from_code_points(arrays["vocab_codes"]))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(f"{path} holds an invalid vocabulary: {exc}") from None
    model = CharRNN(vocab if vocab is not None else V, H, backend=backend, device=device,
                    dtype=dtype or saved_dtype)
    if model.vocab_size != V:
        raise CheckpointError(f"{path}: vocabulary has {model.vocab_size} characters but "
                              f"vocab_size is {V}")
    try:
        model.set_params(params)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return model
