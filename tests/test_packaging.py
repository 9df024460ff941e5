"""The package as installed: compiled kernels present, sdist carries the Cython sources."""
import importlib.util
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import fastrnn

ROOT = Path(__file__).resolve().parents[1]


def test_compiled_backend_is_available():
    assert fastrnn.available_backends()[:2] == ["numpy", "cython"]
    from fastrnn import _kernels
    assert _kernels.BUILD_DEBUG in (True, False) and _kernels.BUILD_NATIVE in (True, False)
    assert fastrnn.__version__ == "0.1.0"


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the source checkout")
def test_sdist_contains_cython_sources(tmp_path):
    spec = importlib.util.find_spec("build")  # the `test` extra installs it
    if spec is None or spec.origin is None:  # (a bare build/ directory is not the package)
        pytest.skip("the `build` package is not installed")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    src = tmp_path / "src_copy"
    for f in files:  # a clean copy: no build outputs, no generated C
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    out = subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path)],
                         cwd=src, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (sdist,) = tmp_path.glob("fastrnn-*.tar.gz")
    names = tarfile.open(sdist).getnames()
    assert any(n.endswith("src/fastrnn/_kernels.pyx") for n in names)
    assert any(n.endswith("src/fastrnn/_kernels.pxd") for n in names)
    assert any(n.endswith("fastrnn/data/shakespeare_1mb.txt.gz") for n in names)
    assert any(n.endswith("fastrnn/_inspect.html") for n in names)  # the inspect page
    assert not any(n.endswith("_kernels.c") for n in names)
