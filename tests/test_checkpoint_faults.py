"""Checkpoints under hostile files and faults: pickles refused without being unpickled, bogus
sizes refused before anything is allocated, a writer killed (SIGKILL) or interrupted (SIGINT) at
random moments never leaves a half-written checkpoint nor a growing pile of temporary files, and
an unwritable directory or a full disk gives a clear error and loses nothing."""
import errno
import os
import pickle
import random
import signal
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn import checkpoint
from fastrnn.checkpoint import CheckpointError

posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def make(seed=4, H=12):
    vocab = fastrnn.Vocab.from_text("hello, wörld\n")
    return fastrnn.CharRNN(vocab, H, backend="numpy", dtype="float32", seed=seed)


def same_params(model, other):
    a, b = model.get_params(), other.get_params()
    return all(np.array_equal(a[k], b[k]) for k in a)


def temporaries(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


# -- pickles: refused, and never unpickled ----------------------------------------------------

class Trap:
    """Unpickling this creates the file `marker`: the trace that would prove a load unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_pickled_objects_are_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    good = tmp_path / "good.npz"
    make().save(good)
    arrays = dict(np.load(good))
    # 1. an object array (a pickle) as one entry of an otherwise valid checkpoint
    inside = tmp_path / "inside.npz"
    with open(inside, "wb") as f:
        np.savez(f, **{**arrays, "Wxh": np.array([Trap(marker)], dtype=object)})
    # 2. a bare pickle named .npz
    bare = tmp_path / "bare.npz"
    bare.write_bytes(pickle.dumps(Trap(marker)))
    # 3. a pickle with a valid checkpoint appended: still looks like a zip from its end
    polyglot = tmp_path / "polyglot.npz"
    polyglot.write_bytes(pickle.dumps(Trap(marker)) + good.read_bytes())
    assert zipfile.is_zipfile(polyglot)
    for path in (inside, bare, polyglot):
        with pytest.raises(CheckpointError):
            fastrnn.CharRNN.load(path)
        assert not marker.exists(), f"loading {path.name} unpickled the trap"
    # the traps are armed: a loader that unpickles does leave the trace
    with np.load(inside, allow_pickle=True) as z:
        z["Wxh"]
    assert marker.exists()
    marker.unlink()
    with open(bare, "rb") as f:
        pickle.load(f)
    assert marker.exists()


# -- damaged or inconsistent files ----------------------------------------------------------

def write(tmp_path, name, **changes):
    good = tmp_path / "good.npz"
    if not good.exists():
        make().save(good)
    arrays = {**dict(np.load(good)), **changes}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / name
    checkpoint.write_npz_atomic(path, arrays)
    return path


@pytest.mark.parametrize("changes,match", [
    (dict(format_version=np.array(3)), "version 3"),
    (dict(format_version=np.array([1, 1])), "format_version"),
    (dict(format_version=np.array("one")), "format_version"),
    (dict(format=None), "not a fastrnn checkpoint"),
    (dict(hidden_size=np.array(13)), "shape"),
    (dict(hidden_size=np.array(-12)), "hidden_size"),
    (dict(hidden_size=np.array([12, 12])), "hidden_size"),
    (dict(hidden_size=np.array(12.5)), "hidden_size"),
    (dict(vocab_size=np.array(99)), "vocab"),
    (dict(dtype=np.array("int8")), "dtype"),
    (dict(Whh=np.zeros((12, 13), np.float32)), "shape"),
    (dict(by=np.zeros(12, np.float32)), "shape"),
    (dict(bh=np.full(12, np.nan, np.float32)), "NaN"),
    (dict(Why=np.full((11, 12), "x")), "real numbers"),
    (dict(Wxh=None), "lacks the entry 'Wxh'"),
    (dict(vocab_codes=np.array([0x110000, 5], np.uint32)), "vocabulary"),
    (dict(vocab_codes=np.array([98, 97], np.uint32)), "vocabulary"),
])
def test_inconsistent_checkpoints_are_refused_clearly(tmp_path, changes, match):
    path = write(tmp_path, "bad.npz", **changes)
    with pytest.raises(CheckpointError, match=match) as info:
        fastrnn.CharRNN.load(path)
    assert str(path) in str(info.value)


def test_bogus_sizes_are_refused_before_allocating(tmp_path):
    """A checkpoint claiming hidden_size=3000 next to 12-unit arrays must be refused from the
    arrays it holds, not after building a 3000-unit model (~100 MB here; a larger claim would
    exhaust memory)."""
    path = write(tmp_path, "huge.npz", hidden_size=np.array(3000))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="shape"):
            fastrnn.CharRNN.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"refusing the file allocated {peak / 2**20:.0f} MB"


def test_truncated_at_every_length_is_refused(tmp_path):
    make().save(tmp_path / "good.npz")
    data = (tmp_path / "good.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    for n in sorted({0, 1, 4, 30, 100} | set(range(0, len(data), max(1, len(data) // 40)))):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError):
            fastrnn.CharRNN.load(cut)
    rng = np.random.default_rng(0)
    for junk in (b"\x00" * 100, rng.bytes(300), b"PK\x03\x04" + rng.bytes(200)):
        cut.write_bytes(junk)
        with pytest.raises(CheckpointError):
            fastrnn.CharRNN.load(cut)


def test_a_directory_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fastrnn.CharRNN.load(tmp_path / "nope.npz")
    with pytest.raises((CheckpointError, IsADirectoryError)):
        fastrnn.CharRNN.load(tmp_path)


# -- a writer killed or interrupted at random moments ----------------------------------------

def _writer(path, models, ready_fd):
    """Child process body: save the two models alternately, forever."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    try:
        models[0].save(path)
        os.write(ready_fd, b"r")
        i = 1
        while True:
            models[i % 2].save(path)
            i += 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - report any other failure through the exit code
        code = 1
    finally:
        os._exit(code)


@posix_only
def test_killed_or_interrupted_writer_never_leaves_a_half_written_checkpoint(tmp_path):
    models = [make(seed=1, H=256), make(seed=2, H=256)]  # ~290 kB per file: writes take a while
    path = tmp_path / "ckpt.npz"
    rng = random.Random(0)
    caught_in_flight = 0
    for trial in range(16):
        sig = signal.SIGKILL if trial % 4 else signal.SIGINT
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            os.close(r)
            _writer(path, models, w)
        os.close(w)
        assert os.read(r, 1) == b"r"
        os.close(r)
        if trial % 2:  # at a random moment
            time.sleep(rng.uniform(0, 0.03))
        else:  # the moment a write is seen in flight
            deadline = time.monotonic() + 10
            while not temporaries(tmp_path) and time.monotonic() < deadline:
                pass
        os.kill(pid, sig)
        _, status = os.waitpid(pid, 0)
        if sig == signal.SIGKILL:
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        else:  # KeyboardInterrupt unwound the write and the loop
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 130, status
        loaded = fastrnn.CharRNN.load(path, backend="numpy")  # always complete and loadable
        assert same_params(loaded, models[0]) or same_params(loaded, models[1])
        left = temporaries(tmp_path)
        assert len(left) <= 1, f"temporary files pile up: {left}"  # at most the one in flight
        caught_in_flight += bool(left)
        assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.npz"] + left)
    print(f"{caught_in_flight} of 16 kills caught a write in flight")
    assert caught_in_flight, "no kill landed during a write; the test proved nothing"
    models[0].save(path)  # the next write clears what a killed writer left behind
    assert temporaries(tmp_path) == []


# -- unwritable directory, full disk ------------------------------------------------------

def _assert_nothing_lost(tmp_path, path, before, model, params):
    assert path.read_bytes() == before, "the previous checkpoint changed"
    assert temporaries(tmp_path) == []
    assert all(np.array_equal(v, params[k]) for k, v in model.get_params().items())
    other = tmp_path / "elsewhere"
    other.mkdir()
    model.save(other / "ckpt.npz")  # the model in memory is intact and still saves
    assert same_params(fastrnn.CharRNN.load(other / "ckpt.npz", backend="numpy"), model)


def test_full_disk_gives_a_clear_error_and_loses_nothing(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    make(seed=1).save(path)
    before = path.read_bytes()
    model = make(seed=2)
    params = model.get_params()

    def savez_on_a_full_disk(f, **arrays):
        f.write(b"PK\x03\x04" + b"\x00" * 4000)  # part of a file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(checkpoint.np, "savez", savez_on_a_full_disk)
        with pytest.raises(OSError, match="No space left") as info:
            model.save(path)
    assert info.value.errno == errno.ENOSPC
    assert str(path) in str(info.value) and "unchanged" in str(info.value)
    _assert_nothing_lost(tmp_path, path, before, model, params)


@posix_only
def test_file_size_limit_hit_mid_write_loses_nothing(tmp_path):
    """A real short write: the child's RLIMIT_FSIZE stops the file at 4 kB (EFBIG, as a full
    disk stops it with ENOSPC)."""
    path = tmp_path / "ckpt.npz"
    make(seed=1).save(path)
    before = path.read_bytes()
    model = make(seed=2, H=64)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        os.close(r)
        try:
            import resource
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
            model.save(path)
            os.write(w, b"saved")
        except OSError as exc:
            os.write(w, f"{exc.errno}|{exc}".encode())
        finally:
            os._exit(0)
    os.close(w)
    report = b""
    while chunk := os.read(r, 4096):
        report += chunk
    os.close(r)
    os.waitpid(pid, 0)
    err, _, message = report.decode().partition("|")
    assert err == str(errno.EFBIG), report
    assert str(path) in message and "unchanged" in message
    _assert_nothing_lost(tmp_path, path, before, model, model.get_params())


def test_unwritable_directory_gives_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    make(seed=1).save(path)
    before = path.read_bytes()
    model = make(seed=2)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    with monkeypatch.context() as m:  # what a read-only directory does to mkstemp
        m.setattr(checkpoint.tempfile, "mkstemp", refuse)
        with pytest.raises(PermissionError) as info:
            model.save(path)
    assert str(path) in str(info.value) and "unchanged" in str(info.value)
    _assert_nothing_lost(tmp_path, path, before, model, model.get_params())


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_read_only_directory_for_real(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    make(seed=1).save(d / "ckpt.npz")
    before = (d / "ckpt.npz").read_bytes()
    d.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="could not write checkpoint"):
            make(seed=2).save(d / "ckpt.npz")
        assert (d / "ckpt.npz").read_bytes() == before and temporaries(d) == []
    finally:
        d.chmod(0o700)


def test_stale_temporaries_of_other_files_are_left_alone(tmp_path):
    """Clearing what killed writers left behind touches only this checkpoint's own temporary
    files, never a user's file that merely looks similar."""
    path = tmp_path / "ckpt.npz"
    mine = tmp_path / "ckpt.npz.fastrnn-abcd1234.tmp"  # the pattern the writer uses
    theirs = [tmp_path / "ckpt.npz.backup.tmp", tmp_path / "other.npz.fastrnn-abcd1234.tmp",
              tmp_path / "ckpt.npz.tmp"]
    for f in [mine, *theirs]:
        f.write_bytes(b"x")
    make().save(path)
    assert not mine.exists()
    assert all(f.exists() for f in theirs)
