"""Checkpoints: one .npz file, no pickled objects written or read, written atomically.

Keys of a model checkpoint (format version 2):
    format           "fastrnn-checkpoint"            format_version   2
    cell, num_layers, nonlinearity, dropout          the model (fastrnn._layout.ModelSpec)
    hidden_size, vocab_size                          dtype            "float32" | "float64"
    NAME             each named tensor (Wxh … for min-char-rnn's model, weight_ih_l0 … else)
    vocab_codes      uint32 code points of the vocab
    backend, device  where it was saved from (informational; any backend/device loads it)
    vocab_byte_level True when the vocab's characters stand for bytes (absent: False)
    precision        "fp32" | "bf16", the products' operands (absent: "fp32"; written for
                     bf16 only, so fp32 files stay readable by earlier versions)
Other components add keys under their own prefix: "trainer/…", and "optimizer/…" whose state
buffers are saved per named tensor ("optimizer/state/mem/Why"), so a later change of the flat
layout never breaks a resume. Version 1 files (min-char-rnn's model, its optimizer state as flat
buffers) still load.
"""
import math
import os
import re
import secrets
import sys
import time
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
    SIGKILL, a full disk). The file gets the mode a new file gets (0666 less the umask).

    The writer holds an exclusive flock on its temporary file until the rename; temporary files
    that nobody holds were left by killed writers and are removed by the next write, so they
    never pile up. Removing them and creating and locking one's own temporary file happen under
    an exclusive flock of the directory, so that no writer removes another's temporary file
    between its creation and its lock. An OSError (unwritable directory, full disk) is raised
    again naming `path`.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"checkpoint entry {name!r} is an object array; refusing to pickle")
    try:
        with _DirectoryLock(directory) as exact:
            _remove_stale_temporaries(directory, base, exact)
            fd, tmp = _create_temporary(directory, base)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
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
        interrupt = _interrupt_behind(exc)
        if interrupt is not None:
            raise interrupt  # noqa: B904 - the interrupt is the cause, not the error it caused
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise
    _fsync_directory(directory)


def _interrupt_behind(exc):
    """The KeyboardInterrupt or SystemExit that `exc` was raised while handling, if any: an
    interrupt landing inside np.savez's zip entry makes zipfile's close raise a ValueError, and
    the caller must see the Ctrl-C, not that."""
    seen = set()
    inner = exc.__context__
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, (KeyboardInterrupt, SystemExit)):
            return inner
        inner = inner.__context__
    return None


STALE_AFTER = 600  # seconds: without a directory lock, only older unheld temporaries are stale


class _DirectoryLock:
    """An exclusive flock of a directory while cleaning and creating temporary files; entering
    gives True when the directory is locked, False where it cannot be (no flock, a filesystem
    that refuses to lock a directory)."""

    def __init__(self, directory):
        self.fd = None
        if fcntl is None:
            return
        try:
            self.fd = os.open(directory, os.O_RDONLY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError:
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.fd is not None

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the lock


def _create_temporary(directory, base):
    """(fd, path) of a new temporary file "<base>.fastrnn-XXXXXXXX.tmp", locked (flock) before
    it is returned, created with mode 0666 so that the umask decides its mode as for any new
    file (mkstemp would make it 0600)."""
    for _ in range(100):
        tmp = os.path.join(directory, f"{base}{TMP_TAG}{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
        except FileExistsError:
            continue
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file is closed
            except OSError:
                os.close(fd)
                os.unlink(tmp)
                raise
        return fd, tmp
    raise FileExistsError(f"no free temporary file name for {base} in {directory}")


RUN_LOCK = ".fastrnn.lock"  # in a checkpoint directory while a run writes there


class DirectoryInUseError(OSError):
    """Another training run holds the checkpoint directory."""


class RunLock:
    """Ownership of a checkpoint directory for one training run: an exclusive flock on
    RUN_LOCK in it, held until release(), the file naming the holder (pid and command) for
    whoever is refused. The holder removes the file on release, while still holding it; a
    taker that finds it locked a file no longer at that name tries again."""

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, RUN_LOCK)
        self.fd = None

    def acquire(self):
        if fcntl is None:
            return self  # no flock (Windows): runs are not kept apart
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
                os.close(fd)
                pid, _, command = holder.partition(" ")
                who = f"pid {pid}: {command}" if pid.isdigit() else "pid unknown"
                raise DirectoryInUseError(
                    f"checkpoint directory {self.directory} is in use by another training run "
                    f"({' '.join(who.split())[:200]}); wait for it to end or write elsewhere "
                    f"(--checkpoint-dir)") from None
            except OSError:  # a filesystem without flock: go on unlocked
                os.close(fd)
                return self
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except OSError:
                same = False
            if same:
                command = " ".join(getattr(sys, "orig_argv", sys.argv))
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {command[:300]}\n".encode("utf-8", "replace"), 0)
                self.fd = fd
                return self
            os.close(fd)  # its holder removed it meanwhile: take the new one
        raise DirectoryInUseError(f"could not lock checkpoint directory {self.directory}")

    def release(self):
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _write_error(path, exc):
    """The OSError of a failed write, reworded to name the checkpoint (same errno, so still a
    PermissionError etc.)."""
    message = (f"could not write checkpoint {path}: {exc.strerror or exc}; the previous file, "
               f"if any, is unchanged")
    return OSError(exc.errno, message) if exc.errno is not None else OSError(message)


def _remove_stale_temporaries(directory, base, exact=True):
    """Deletes the temporary files of earlier writes of `base` whose writer died before it could
    clean up (SIGKILL, power loss). A live writer holds a lock on its file; one we can lock has
    no writer. Called under the directory's lock (exact): every writer locks its temporary file
    before it releases the directory, so any we can lock is stale. Without the directory lock
    a file may be one whose writer has not locked it yet: then only files older than
    STALE_AFTER are taken."""
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
            st = os.fstat(fd)
            old = exact or time.time() - st.st_mtime > STALE_AFTER
            if old and os.path.samestat(st, os.stat(stale)):  # not renamed meanwhile
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
    """All arrays of a checkpoint file, checked for format. The file is parsed here, not by
    np.load: only expected member names (see `expected_member`), only plain numeric, bool and
    string dtypes (never a pickle), every member's declared shape and size checked against the
    zip directory and the file's own size before its data is read (see `_member_array`); any
    fault of a crafted or damaged file is one CheckpointError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:  # OSErrors of the open itself (permissions) stay OSErrors
        try:
            arrays = _read_members(f, path)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything a crafted file provokes
            raise CheckpointError(f"{path} is not a readable .npz checkpoint (truncated, "
                                  f"damaged or another kind of file): {_one_line(exc)}") from None
    if str(arrays.get("format", "")) != FORMAT:
        raise CheckpointError(f"{path} is not a fastrnn checkpoint (no 'format' entry)")
    version = _int_entry(arrays, "format_version", path, default=-1)
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{path} has checkpoint format version {version}; this fastrnn "
                              f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    return arrays


# -- the reader: what a checkpoint may hold, and the limits checked before any data is read ----

# Entries at the top level besides the model's parameters (PARAM_NAMES, and the per-layer names
# of PARAM_PATTERNS: weight_ih_l0 ... of the stacked models of checkpoint format 2), and the
# prefixes of the sections other components add, each followed by up to three simple names
# ("optimizer/hyper/lr", "optimizer/state/mem/Why"). A new model kind extends these.
MODEL_ENTRIES = frozenset({"format", "format_version", "hidden_size", "vocab_size", "dtype",
                           "backend", "device", "vocab_codes", "vocab_byte_level", "cell",
                           "num_layers", "nonlinearity", "dropout", "precision"})
PARAM_PATTERNS = (re.compile(r"(weight|bias)_(ih|hh)_l[0-9]{1,3}"),)
SECTION_PREFIXES = ("optimizer/", "trainer/", "meta/")
_SECTION_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(/[A-Za-z_][A-Za-z0-9_]{0,63}){0,2}")
MAX_MEMBERS = 1024          # a checkpoint holds a few dozen entries
MAX_HEADER = 4096           # bytes of an .npy header (numpy writes 128 for ours)
MAX_NDIM = 8
DTYPE_KINDS = "biufUS"      # bool, integers, floats, str, bytes: nothing that unpickles
INFLATE_FREE = 16 << 20     # compressed members may inflate to this much in all, plus ...
MAX_INFLATION = 20          # ... this many times the file's size (fastrnn itself never compresses)
_DESCR = re.compile(r"[<>|=]?([biufUS])([0-9]{1,7})")
_HEADER = re.compile(r"\{'descr': *'([^']{1,16})', *'fortran_order': *(True|False), *"
                     r"'shape': *\(([0-9, ]{0,200})\),? *\} *\n?")


def expected_member(name):
    """True for the names a checkpoint may hold: the model's entries and parameters, and
    simple keys under the known section prefixes."""
    from ._params import PARAM_NAMES
    if name in MODEL_ENTRIES or name in PARAM_NAMES or \
            any(p.fullmatch(name) for p in PARAM_PATTERNS):
        return True
    for prefix in SECTION_PREFIXES:
        if name.startswith(prefix):
            return bool(_SECTION_KEY.fullmatch(name[len(prefix):]))
    return False


def _one_line(exc):
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _read_members(f, path):
    """{name: array} of an open .npz file (see read_npz); raises on any fault."""
    head = f.read(4)
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip from its first byte: no
        raise CheckpointError(f"{path} is not a readable .npz checkpoint (not a zip file from "
                              f"its first byte; truncated or another kind of file)")
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    with zipfile.ZipFile(f) as z:
        infos = z.infolist()
        if len(infos) > MAX_MEMBERS:
            raise CheckpointError(f"{path} holds {len(infos)} entries; a checkpoint holds at "
                                  f"most {MAX_MEMBERS}")
        if "format.npy" not in {info.filename for info in infos}:
            raise CheckpointError(f"{path} is not a fastrnn checkpoint (no 'format' entry)")
        names, stored, inflated = set(), 0, 0
        for info in infos:  # every name and size first: nothing is read from a refused file
            name = info.filename[:-4] if info.filename.endswith(".npy") else None
            if name is None or not expected_member(name):
                raise CheckpointError(f"{path} holds an unexpected entry {info.filename[:80]!r}"
                                      f"; fastrnn reads only its own entries")
            if name in names:
                raise CheckpointError(f"{path} holds the entry {name!r} twice")
            names.add(name)
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                raise CheckpointError(f"{path}: entry {name!r} is damaged (stored size "
                                      f"{info.compress_size} != {info.file_size})")
            stored += info.compress_size
            if info.compress_type != zipfile.ZIP_STORED:
                inflated += info.file_size
        if stored > size:
            raise CheckpointError(f"{path}: its entries claim {stored:,} bytes, more than the "
                                  f"file's {size:,}")
        if inflated > INFLATE_FREE + MAX_INFLATION * size:
            raise CheckpointError(f"{path}: its compressed entries would inflate to "
                                  f"{inflated:,} bytes from a {size:,}-byte file; refused")
        return {info.filename[:-4]: _member_array(z, info, path) for info in infos}


def _member_array(z, info, path):
    """One member as an array: its .npy header parsed strictly (no eval), its declared dtype,
    shape and size checked against the zip entry's size before the data is read."""
    name = info.filename[:-4]
    with z.open(info) as f:
        magic = f.read(8)
        if len(magic) != 8 or magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2, 3):
            raise CheckpointError(f"{path}: entry {name!r} is not an .npy array")
        width = 2 if magic[6] == 1 else 4
        raw = f.read(width)
        n = int.from_bytes(raw, "little") if len(raw) == width else -1
        if not 0 < n <= MAX_HEADER:
            raise CheckpointError(f"{path}: entry {name!r} has a bad .npy header length {n}")
        header = f.read(n)
        try:
            header = header.decode("utf-8" if magic[6] == 3 else "latin-1")
        except UnicodeDecodeError:
            header = ""
        m = _HEADER.fullmatch(header)
        d = m and _DESCR.fullmatch(m.group(1))
        if not d:
            raise CheckpointError(f"{path}: entry {name!r} has an .npy header fastrnn does not "
                                  f"read: {header[:80]!r}")
        dtype = np.dtype(m.group(1))
        if dtype.kind not in DTYPE_KINDS:
            raise CheckpointError(f"{path}: entry {name!r} has dtype {dtype}; checkpoints hold "
                                  f"numbers and strings only")
        dims = [x.strip() for x in m.group(3).split(",")]
        if dims and dims[-1] == "":
            dims.pop()
        if len(dims) > MAX_NDIM or not all(x.isdigit() and len(x) <= 12 for x in dims):
            raise CheckpointError(f"{path}: entry {name!r} declares the shape "
                                  f"({m.group(3)[:60]}); fastrnn does not read it")
        shape = tuple(int(x) for x in dims)
        nbytes = math.prod(shape) * dtype.itemsize
        offset = 8 + width + n
        if offset + nbytes != info.file_size:  # before anything that size is allocated
            raise CheckpointError(f"{path}: entry {name!r} declares {shape} {dtype} "
                                  f"({nbytes:,} bytes) but holds {info.file_size - offset:,}")
        data = bytearray(nbytes)
        got = f.readinto(data) if nbytes else 0
        if got != nbytes or f.read(1):  # read to the end: the zip's CRC-32 is checked there
            raise CheckpointError(f"{path}: entry {name!r} is truncated")
    a = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
    return a.reshape(shape, order="F" if m.group(2) == "True" else "C")


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
    if model.precision != "fp32":
        arrays["precision"] = np.array(model.precision)
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


def model_from_arrays(arrays, path="checkpoint", *, backend="cython", device="cpu", dtype=None,
                      precision=None):
    """A CharRNN rebuilt from checkpoint entries, on any backend and device; dtype and
    precision: the saved ones unless given."""
    try:
        return _model_from_arrays(arrays, path, backend, device, dtype, precision)
    except (TypeError, IndexError, OverflowError, RecursionError, AttributeError) as exc:
        raise CheckpointError(f"{path} holds an invalid model: {_one_line(exc)}") from None


def _model_from_arrays(arrays, path, backend, device, dtype, precision):
    from ._params import check_dtype, check_precision, check_tensors
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
        saved_precision = _str_entry(arrays, "precision", path, "fp32")
        if precision is None:
            check_precision(saved_precision, dtype or saved_dtype)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = CharRNN(vocab if vocab is not None else V, H, cell=spec.cell,
                    num_layers=spec.num_layers, nonlinearity=spec.nonlinearity,
                    dropout=spec.dropout, backend=backend, device=device,
                    dtype=dtype or saved_dtype, precision=precision or saved_precision)
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
    """A Trainer continuing exactly from a file written by write_training_checkpoint. A value
    in the file that cannot be right (a position outside the data, a state of another shape,
    an rng state that is not one) is a CheckpointError; training data other than the
    checkpoint's is a ResumeMismatch (a CheckpointError)."""
    from .trainer import ResumeMismatch
    arrays = read_npz(path)
    if "trainer/iteration" not in arrays or "optimizer/name" not in arrays:
        raise CheckpointError(f"{path} holds a model only, not a training run to resume "
                              f"(use it with --init-from to fine-tune)")
    model = model_from_arrays(arrays, path, backend=backend, device=device)
    try:
        return _training_from_arrays(arrays, model, ids, val_ids, path)
    except (ResumeMismatch, CheckpointError):
        raise
    except KeyError as exc:
        raise CheckpointError(f"{path} lacks the entry {_one_line(exc)}") from None
    except (ValueError, TypeError, IndexError, OverflowError, RecursionError, MemoryError,
            AttributeError) as exc:  # values of a damaged or crafted file
        raise CheckpointError(f"{path} holds an invalid training state: "
                              f"{_one_line(exc)}") from None


def _training_from_arrays(arrays, model, ids, val_ids, path):
    from .optim import make_optimizer
    from .trainer import Trainer
    hyper = {k[len("hyper/"):]: _unplain(v) for k, v in section(arrays, "optimizer").items()
             if k.startswith("hyper/")}
    if "betas" in hyper:
        hyper["betas"] = tuple(float(b) for b in hyper["betas"])
    opt = make_optimizer(_text(arrays["optimizer/name"]), model, **hyper)
    opt.load_state_dict(_optimizer_state(arrays, opt, model, path))
    state = section(arrays, "trainer")
    trainer = Trainer(model, ids, seq_length=_int_entry(state, "seq_length", path),
                      batch_size=_int_entry(state, "batch_size", path), optimizer=opt,
                      reset=_text(state["reset"]), reduction=_text(state["reduction"]),
                      val_ids=val_ids)
    trainer.load_state_dict(state)
    trainer.meta = _meta(arrays, path)
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


def _text(a):
    """A string entry (a 0-d str array), or ValueError."""
    a = np.asarray(a)
    if a.shape != () or a.dtype.kind != "U":
        raise ValueError(f"expected a string, got a {a.dtype} array of shape {a.shape}")
    return str(a)


def _meta(arrays, path="checkpoint"):
    """The "meta/…" entries as plain values (each must be a scalar)."""
    meta = {}
    for k, v in section(arrays, "meta").items():
        if np.ndim(v) != 0:
            raise CheckpointError(f"{path}: meta/{k} must be a single value, got shape "
                                  f"{np.shape(v)}")
        meta[k] = _unplain(v)
    return meta


def read_meta(path):
    """The "meta/…" entries of a training checkpoint (empty for a model-only file)."""
    return _meta(read_npz(path), path)
