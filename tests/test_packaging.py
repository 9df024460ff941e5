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
    assert any(n.endswith("src/fastrnn/_hot.pyx") for n in names)  # the per-ISA kernels
    assert any(n.endswith("src/fastrnn/_hot.pxd") for n in names)
    for pxi in ("_stack.pxi", "_stack_api.pxi", "_stack_sample.pxi", "_cells.pxi", "_table.pxi",
                "_shims.pxi", "_bf16_api.pxi", "_beam_api.pxi"):
        assert any(n.endswith(f"src/fastrnn/{pxi}") for n in names), pxi  # the .pyx includes
    assert any(n.endswith("fastrnn/data/shakespeare_1mb.txt.gz") for n in names)
    assert any(n.endswith("fastrnn/_inspect.html") for n in names)  # the inspect page
    assert not any(n.endswith("_kernels.c") for n in names)
    assert any(n.endswith("/LICENSE") for n in names)
    assert any(n.endswith("fastrnn/py.typed") for n in names)
    # the license metadata in the form setuptools wants (SPDX string + license-files)
    assert "SetuptoolsDeprecationWarning" not in out.stderr + out.stdout, out.stderr[-3000:]
    pkg_info = next(n for n in names if n.endswith("PKG-INFO"))
    info = tarfile.open(sdist).extractfile(pkg_info).read().decode()
    assert "License-Expression: MIT" in info and "License-File: LICENSE" in info


def test_license_typing_marker_and_changelog():
    """The declared license has its file; the package says it ships type hints (PEP 561)."""
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is Python 3.11+")
    import tomllib
    if not (ROOT / "pyproject.toml").exists() or not (ROOT / "CHANGELOG.md").exists():
        pytest.skip("needs the source checkout")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert project["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["fastrnn"]
    assert (Path(fastrnn.__file__).parent / "py.typed").exists()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and "## [0.1.0]" in changelog
    import inspect
    for fn in (fastrnn.CharRNN.__init__, fastrnn.CharRNN.generate, fastrnn.Trainer.__init__,
               fastrnn.Trainer.fit, fastrnn.Vocab.encode, fastrnn.CharRNN.load):
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, fn
        assert all(p.annotation is not inspect.Parameter.empty
                   for name, p in sig.parameters.items() if name not in ("self", "cls")), fn
