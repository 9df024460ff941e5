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


def test_an_interrupt_inside_the_zip_writer_surfaces_as_the_interrupt(tmp_path, monkeypatch):
    """A Ctrl-C landing inside a zip entry makes zipfile's close raise a ValueError while the
    KeyboardInterrupt unwinds; save must raise the KeyboardInterrupt (what a training loop's
    interrupt handling catches), not that ValueError, and lose nothing."""
    path = tmp_path / "ckpt.npz"
    model = make(seed=1)
    model.save(path)
    before = path.read_bytes()
    real_savez = np.savez

    def savez_interrupted(file, **arrays):
        try:
            real_savez(file, **dict(list(arrays.items())[:2]))
            raise KeyboardInterrupt
        finally:  # as zipfile.ZipFile.close does with a writing handle still open
            raise ValueError("Can't close the ZIP file while there is an open writing handle")

    monkeypatch.setattr(np, "savez", savez_interrupted)
    for _ in range(2):  # and again: no temporary file is left to pile up
        with pytest.raises(KeyboardInterrupt):
            make(seed=2).save(path)
    assert path.read_bytes() == before
    assert temporaries(tmp_path) == []
    monkeypatch.setattr(np, "savez", lambda file, **arrays: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # other errors pass through unchanged
        make(seed=2).save(path)
    assert path.read_bytes() == before and temporaries(tmp_path) == []


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

    with monkeypatch.context() as m:  # what a read-only directory does to creating a file
        m.setattr(checkpoint, "_create_temporary", refuse)
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


# -- crafted files: refused in one line before anything large is allocated (issue 17) --------

def training_checkpoint(tmp_path, name="train.npz"):
    """A small training checkpoint, and (train ids, val ids) to resume it with."""
    text = "the quick brown fox jumps over the lazy dog\n" * 40
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    train, val = ids[:-200], ids[-200:]
    model = fastrnn.CharRNN(vocab, 8, backend="numpy", dtype="float32", seed=1)
    tr = fastrnn.Trainer(model, train, seq_length=10, val_ids=val)
    tr.fit(7)
    tr.save(tmp_path / name)
    return tmp_path / name, train, val


def npy_bytes(header, data=b"", version=1):
    """An .npy member with the header text given verbatim (padded as numpy pads it)."""
    width = 2 if version == 1 else 4
    header = header + " " * ((-(10 + len(header) + 1)) % 64) + "\n"
    return (b"\x93NUMPY" + bytes([version, 0]) + len(header).to_bytes(width, "little")
            + header.encode("latin-1") + data)


def rezip(src, dst, replace=(), extra=()):
    """A copy of the .npz src with members replaced (name -> bytes) and extra ones added."""
    replace = dict(replace)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, replace.get(info.filename, zin.read(info.filename)))
        for name, data in dict(extra).items():
            zout.writestr(name, data)
    return dst


def load_peak(fn):
    """(exception raised by fn, peak bytes traced while it ran)."""
    tracemalloc.start()
    try:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the caller checks which
            caught = exc
        else:
            caught = None
        return caught, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_unbalanced_npy_header_is_one_checkpoint_error(tmp_path):
    """numpy's own header parser raises tokenize.TokenError / SyntaxError on this header."""
    good, train, val = training_checkpoint(tmp_path)
    data = np.zeros((8, 8), np.float32).tobytes()
    for header in ("{'descr': '<f4', 'fortran_order': False, 'shape': ((8, 8), }",
                   "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 8), ",
                   "{'descr': '<f4', 'fortran_order': False, 'shape': [[[[[[(8, 8)]]]]]], }",
                   "{'descr': '|O', 'fortran_order': False, 'shape': (8, 8), }",
                   "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (8, 8), }",
                   "{'descr': '<f4', 'fortran_order': False, 'shape': (8, -8), }"):
        bad = rezip(good, tmp_path / "bad.npz", replace={"Whh.npy": npy_bytes(header, data)})
        with pytest.raises(CheckpointError, match="header|shape|dtype") as info:
            fastrnn.CharRNN.load(bad)
        assert "\n" not in str(info.value)
        with pytest.raises(CheckpointError):
            fastrnn.Trainer.load(bad, train, val_ids=val, backend="numpy")


def test_a_huge_declared_shape_is_refused_before_allocating(tmp_path):
    good, _, _ = training_checkpoint(tmp_path)
    for shape in ("(1073741824, 1073741824)", "(100000, 100000)", "(8, 8, 8, 8, 8, 8, 8, 8, 8)",
                  "(99999999999999999999,)"):
        header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
        bad = rezip(good, tmp_path / "bad.npz", replace={"Wxh.npy": npy_bytes(header, b"x" * 64)})
        caught, peak = load_peak(lambda: fastrnn.CharRNN.load(bad, backend="numpy"))
        assert isinstance(caught, CheckpointError), repr(caught)
        assert peak < 4 << 20, f"refusing {shape} allocated {peak / 2**20:.0f} MB"


def _bomb(src, dst, name, shape, mib):
    """src with the member `name` replaced by `mib` MiB of deflated zeros declared as `shape`
    float32 (a ~1000:1 ratio: the file stays small)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename != name:
                zout.writestr(info.filename, zin.read(info.filename))
        bomb = zipfile.ZipInfo(name)
        bomb.compress_type = zipfile.ZIP_DEFLATED
        with zout.open(bomb, "w", force_zip64=True) as f:
            f.write(npy_bytes(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"))
            for _ in range(mib):
                f.write(bytes(1 << 20))
    return dst


def test_an_inflating_member_is_refused_before_it_is_inflated(tmp_path):
    """Issue 17: a 1 MB checkpoint whose extra member inflated to 1 GiB made `fastrnn sample`
    allocate 1 GiB. Here 64 MiB from ~64 kB: as an unexpected member, and under a name a
    checkpoint does hold."""
    good, train, val = training_checkpoint(tmp_path)
    extra = _bomb(good, tmp_path / "extra.npz", "padding.npy", "(16777216,)", 64)
    known = _bomb(good, tmp_path / "known.npz", "trainer/h.npy", "(4096, 4096)", 64)
    assert extra.stat().st_size < 1 << 20 and known.stat().st_size < 1 << 20
    for bad, match in ((extra, "unexpected entry 'padding.npy'"), (known, "inflate")):
        for load in (lambda: fastrnn.CharRNN.load(bad, backend="numpy"),
                     lambda: fastrnn.Trainer.load(bad, train, val_ids=val, backend="numpy")):
            caught, peak = load_peak(load)
            assert isinstance(caught, CheckpointError) and match in str(caught), repr(caught)
            assert peak < 4 << 20, f"refusing {bad.name} allocated {peak / 2**20:.0f} MB"


def test_crafted_training_states_are_one_checkpoint_error(tmp_path):
    good, train, val = training_checkpoint(tmp_path)
    arrays = checkpoint.read_npz(good)
    cases = {
        "trainer/rng_state": ("[" * 2000 + "]" * 2000, "nested too deeply"),
        "trainer/position": (-5, "position"),
        "trainer/iteration": (-1, "iteration"),
        "trainer/h": (np.zeros((1, 3), np.float32), "shape"),
        "trainer/history_val": (np.zeros((2, 7)), "history_val"),
        "trainer/tokens_since": (np.array([1, 2]), "tokens_since"),
        "trainer/lr_schedule": ('{"start": 1}', "lr_schedule|start"),
        "optimizer/steps": (np.array("x"), "steps|invalid"),
        "meta/iterations": (np.arange(3), "meta/iterations"),
    }
    cases["trainer/rng_state"] = ("[" * 5000 + "]" * 5000, "rng_state")
    for key, (value, match) in cases.items():
        path = tmp_path / "bad.npz"
        checkpoint.write_npz_atomic(path, {**arrays, key: np.asarray(value)})
        with pytest.raises(CheckpointError, match=match) as info:
            fastrnn.Trainer.load(path, train, val_ids=val, backend="numpy")
        assert str(path) in str(info.value) and "\n" not in str(info.value), key
    deep = "[" * 2000 + "]" * 2000  # within the length limit: json.loads recurses too deep
    checkpoint.write_npz_atomic(path, {**arrays, "trainer/rng_state": np.asarray(deep)})
    with pytest.raises(CheckpointError, match="nested too deeply"):
        fastrnn.Trainer.load(path, train, val_ids=val, backend="numpy")


def test_todays_files_load_and_written_ones_are_plain_npz(tmp_path):
    """The reader takes what np.savez writes: C and Fortran order, every dtype a checkpoint
    holds, header versions 1 to 3."""
    good, train, val = training_checkpoint(tmp_path)
    arrays = checkpoint.read_npz(good)
    with np.load(good) as z:
        assert sorted(z.files) == sorted(arrays)
        for k in z.files:
            assert np.array_equal(z[k], arrays[k], equal_nan=z[k].dtype.kind == "f"), k
            assert z[k].dtype == arrays[k].dtype, k
    fortran = {**arrays, "Whh": np.asfortranarray(arrays["Whh"].T).T}
    checkpoint.write_npz_atomic(tmp_path / "f.npz", fortran)
    assert np.array_equal(checkpoint.read_npz(tmp_path / "f.npz")["Whh"], arrays["Whh"])
    for version in (2, 3):
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 8), }"
        data = np.ascontiguousarray(arrays["Whh"]).tobytes()
        v = rezip(good, tmp_path / f"v{version}.npz",
                  replace={"Whh.npy": npy_bytes(header, data, version)})
        assert np.array_equal(checkpoint.read_npz(v)["Whh"], arrays["Whh"])
    back = fastrnn.Trainer.load(good, train, val_ids=val, backend="numpy")
    assert back.iteration == 7


def test_byte_mutated_checkpoints_load_exactly_or_give_one_checkpoint_error(tmp_path):
    """Issue 17 found 27 of 400 mutated files giving numpy's tokenize.TokenError. Every mutant
    must be refused with a CheckpointError or load to exactly the original state."""
    good, train, val = training_checkpoint(tmp_path)
    data = bytearray(good.read_bytes())
    original = checkpoint.read_npz(good)
    rng = random.Random(17)
    path = tmp_path / "mutant.npz"
    refused = loaded = 0
    for trial in range(200):
        mutant = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 4))):
            i = rng.randrange(len(mutant))
            mutant[i] = rng.choice((0, 0xFF, ord("("), ord("["), rng.randrange(256)))
        path.write_bytes(bytes(mutant))
        try:
            tr = fastrnn.Trainer.load(path, train, val_ids=val, backend="numpy")
            model = fastrnn.CharRNN.load(path, backend="numpy")
        except CheckpointError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        again = checkpoint.read_npz(path)
        assert sorted(again) == sorted(original), trial
        for k, v in original.items():
            assert np.array_equal(again[k], v, equal_nan=v.dtype.kind == "f"), (trial, k)
            assert again[k].dtype == v.dtype, (trial, k)
        assert tr.iteration == 7 and same_params(model, tr.model)
        loaded += 1
    print(f"{refused} mutants refused, {loaded} loaded exactly")
    assert refused > 100


# -- writers racing in one directory (issue 17) ----------------------------------------------

def _racing_writer(path, seed, rounds, start_fd):
    """Child process body: save a model `rounds` times; exit 0, or 1 with the error on stderr."""
    code = 0
    try:
        model = make(seed=seed, H=32)
        os.read(start_fd, 1)
        for _ in range(rounds):
            model.save(path)
    except BaseException as exc:  # noqa: BLE001 - reported through the exit code
        os.write(2, f"writer {seed}: {exc!r}\n".encode())
        code = 1
    finally:
        os._exit(code)


@posix_only
def test_writers_of_one_checkpoint_never_delete_each_others_temporaries(tmp_path):
    """Issue 17: a writer's stale-temporary cleanup deleted another writer's temporary file
    between its creation and its lock, and that writer died ("No such file or directory").
    Four processes save the same path 300 times each: none may fail, the file stays complete
    and no temporary is left."""
    path = tmp_path / "ckpt.npz"
    r, w = os.pipe()
    pids = []
    for seed in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            os.close(w)
            _racing_writer(path, seed, 300, r)
        pids.append(pid)
    os.close(r)
    os.write(w, b"go!!")
    os.close(w)
    codes = [os.waitpid(pid, 0)[1] for pid in pids]
    assert codes == [0] * 4, codes
    loaded = fastrnn.CharRNN.load(path, backend="numpy")
    assert any(same_params(loaded, make(seed=s, H=32)) for s in range(4))
    assert temporaries(tmp_path) == [] and os.listdir(tmp_path) == ["ckpt.npz"]


@posix_only
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoints_get_the_mode_the_umask_gives_a_new_file(tmp_path, umask):
    """Issue 17: checkpoints were always 0600 (mkstemp's mode) whatever the umask."""
    old = os.umask(umask)
    try:
        make().save(tmp_path / "m.npz")
        (tmp_path / "plain").write_bytes(b"x")
    finally:
        os.umask(old)
    mode = (tmp_path / "m.npz").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask == (tmp_path / "plain").stat().st_mode & 0o777


def test_a_checkpoint_directory_belongs_to_one_run(tmp_path):
    """A second fit writing to a directory a running fit holds is refused in one line naming
    the holder; once the first ends, the directory is free again and the lock file is gone."""
    text = "abcdefgh" * 200
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)

    def trainer():
        return fastrnn.Trainer(fastrnn.CharRNN(vocab, 8, backend="numpy", seed=0), ids,
                               seq_length=10)

    errors = []

    def second(tr, loss):
        if tr.iteration == 2:
            try:
                trainer().fit(3, checkpoint_dir=tmp_path)
            except checkpoint.DirectoryInUseError as exc:
                errors.append(str(exc))

    trainer().fit(5, checkpoint_dir=tmp_path, callback=second)
    assert len(errors) == 1 and str(tmp_path) in errors[0], errors
    assert f"pid {os.getpid()}" in errors[0] and "\n" not in errors[0]
    assert sorted(os.listdir(tmp_path)) == ["latest.npz"]  # the second wrote nothing
    assert int(checkpoint.read_npz(tmp_path / "latest.npz")["trainer/iteration"]) == 5
    trainer().fit(3, checkpoint_dir=tmp_path)  # free again
    assert sorted(os.listdir(tmp_path)) == ["latest.npz"]


def test_the_reader_takes_exactly_the_entries_fastrnn_writes():
    """The schema of expected_member: the entries of format versions 1 and 2 (stacked models'
    per-layer tensors and per-tensor optimizer state), nothing else."""
    for name in ("format", "Wxh", "by", "cell", "num_layers", "weight_ih_l0", "bias_hh_l12",
                 "optimizer/name", "optimizer/hyper/lr", "optimizer/state/mem/Why",
                 "optimizer/state/m/weight_hh_l1", "trainer/rng_state", "meta/data"):
        assert checkpoint.expected_member(name), name
    for name in ("x", "padding", "Wxh2", "weight_ih", "weight_xx_l0", "optimizer",
                 "optimizer/", "trainer/a/b/c/d", "meta/../x", "meta/a b", "other/x",
                 "trainer/" + "a" * 65, "format.npy", "WXH"):
        assert not checkpoint.expected_member(name), name


def test_entries_mutated_under_a_valid_zip_give_one_checkpoint_error_or_load(tmp_path):
    """Raw byte mutations mostly meet the zip's CRC-32; these are made inside one entry (its
    .npy header mostly) and zipped again with a valid CRC, so the header parser and the checks
    of every value see them. Each gives a CheckpointError or loads; nothing else escapes."""
    good, train, val = training_checkpoint(tmp_path)
    with zipfile.ZipFile(good) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    rng = random.Random(5)
    path = tmp_path / "mutant.npz"
    refused = 0
    for trial in range(200):
        name = rng.choice(sorted(members))
        entry = bytearray(members[name])
        reach = min(len(entry), 140) if rng.random() < 0.7 else len(entry)
        for _ in range(rng.choice((1, 2, 3))):
            entry[rng.randrange(reach)] = rng.choice((rng.randrange(256), *b"([9,-'"))
        with zipfile.ZipFile(path, "w") as z:
            for k, v in members.items():
                z.writestr(k, bytes(entry) if k == name else v)
        try:
            fastrnn.Trainer.load(path, train, val_ids=val, backend="numpy")
            fastrnn.CharRNN.load(path, backend="numpy")
        except CheckpointError as exc:
            assert "\n" not in str(exc), (trial, name)
            refused += 1
    assert refused > 150
