import os
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn.checkpoint import CheckpointError, write_npz_atomic


def make(backend="cython", dtype="float32"):
    vocab = fastrnn.Vocab.from_text("hello, wörld\n")
    return fastrnn.CharRNN(vocab, 12, backend=backend, dtype=dtype, seed=4)


@pytest.mark.parametrize("src,dst", [("cython", "numpy"), ("numpy", "cython"),
                                     ("cython", "cython")])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_across_backends(tmp_path, src, dst, dtype):
    m = make(src, dtype)
    m.save(tmp_path / "m.npz")
    m2 = fastrnn.CharRNN.load(tmp_path / "m.npz", backend=dst)
    assert m2.vocab == m.vocab and m2.dtype == m.dtype and m2.backend == dst
    for k, v in m.get_params().items():
        np.testing.assert_array_equal(m2.get_params()[k], v)
    assert np.array_equal(m.generate(30, seed=1), m2.generate(30, seed=1)) or dtype == "float32"
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:  # plain arrays only
        assert all(z[k].dtype != object for k in z.files)


def test_bad_files_are_refused_clearly(tmp_path):
    m = make()
    with pytest.raises(FileNotFoundError):
        fastrnn.CharRNN.load(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(CheckpointError, match="not a readable"):
        fastrnn.CharRNN.load(tmp_path / "text.npz")
    m.save(tmp_path / "good.npz")
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        fastrnn.CharRNN.load(tmp_path / "cut.npz")
    # a pickled object inside must be refused without being unpickled
    arrays = dict(np.load(tmp_path / "good.npz"))
    arrays["Wxh"] = np.array([object()], dtype=object)
    with open(tmp_path / "pickled.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CheckpointError, match="pickled"):
        fastrnn.CharRNN.load(tmp_path / "pickled.npz")
    arrays = dict(np.load(tmp_path / "good.npz"))
    write_npz_atomic(tmp_path / "v9.npz", {**arrays, "format_version": np.array(9)})
    with pytest.raises(CheckpointError, match="version 9"):
        fastrnn.CharRNN.load(tmp_path / "v9.npz")
    write_npz_atomic(tmp_path / "shape.npz", {**arrays, "Whh": np.zeros((3, 3))})
    with pytest.raises(CheckpointError, match="shape"):
        fastrnn.CharRNN.load(tmp_path / "shape.npz")
    write_npz_atomic(tmp_path / "other.npz", {"x": np.zeros(3)})
    with pytest.raises(CheckpointError, match="not a fastrnn checkpoint"):
        fastrnn.CharRNN.load(tmp_path / "other.npz")


def test_failed_write_leaves_the_old_file_intact(tmp_path):
    m = make()
    path = tmp_path / "m.npz"
    m.save(path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_npz_atomic(path, {"bad": np.array([object()], dtype=object)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind
    assert zipfile.is_zipfile(path)
