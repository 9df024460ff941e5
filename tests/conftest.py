import os
from pathlib import Path

import numpy as np
import pytest

import fastrnn

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CPU_BACKENDS = ["numpy", "cython"]


def random_params(H, V, rng, scale=None):
    """Parameters of realistic trained scale (not the tiny 0.01 init)."""
    s = 1.0 / np.sqrt(H) if scale is None else scale
    return {"Wxh": rng.normal(0, 0.5, (H, V)), "Whh": rng.normal(0, s, (H, H)),
            "Why": rng.normal(0, 2 * s, (V, H)), "bh": rng.normal(0, 0.3, H),
            "by": rng.normal(0, 0.3, V)}


def rel_err(a, b):
    """Norm-wise relative error between two arrays (0 when both are zero)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if den == 0 else float(np.linalg.norm(a - b) / den)


@pytest.fixture(scope="session")
def shakespeare():
    """The 1 MB corpus: from ../shared/data when present, else the copy shipped in the package."""
    path = SHARED_DATA / "shakespeare_1mb.txt"
    if path.exists():
        return path.read_text(encoding="utf-8")
    return fastrnn.load_shakespeare()


@pytest.fixture(autouse=True)
def _single_blas_thread(monkeypatch):
    # tests compare numbers, not speed; one BLAS thread keeps them deterministic and quick
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", os.environ.get("OPENBLAS_NUM_THREADS", "1"))
