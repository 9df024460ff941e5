"""torch stays optional: fastrnn never imports it unasked, and says how to install it when asked."""
import subprocess
import sys
import textwrap

import fastrnn


def run_python(code, tmp_path):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_and_cpu_training_do_not_import_torch(tmp_path):
    run_python("""
        import sys
        import numpy as np
        import fastrnn
        m = fastrnn.CharRNN(5, 4, backend="cython")
        fastrnn.Trainer(m, np.arange(50) % 5, seq_length=5).fit(3)
        m.save("m.npz")
        fastrnn.CharRNN.load("m.npz", backend="numpy")
        fastrnn.set_num_threads(1)
        assert "torch" not in sys.modules, "torch was imported"
    """, tmp_path)


def test_without_torch_the_error_says_how_to_install(tmp_path):
    run_python("""
        import sys
        sys.modules["torch"] = None  # makes `import torch` fail, as when it is not installed
        import numpy as np, pytest, fastrnn
        assert "torch" not in fastrnn.available_backends()
        assert fastrnn.available_backends()[:2] == ["numpy", "cython"]
        assert fastrnn.cuda_available() is False
        m = fastrnn.CharRNN(5, 4, backend="numpy")
        for call in (lambda: fastrnn.CharRNN(5, 4, backend="torch"), m.to_torch,
                     lambda: fastrnn.CharRNN.from_torch({})):
            with pytest.raises(ImportError, match=r"pip install torch.*fastrnn\\[torch\\]"):
                call()
        with pytest.raises(ImportError, match="pip install torch"):
            import fastrnn.distributed
        print("ok")
    """, tmp_path)


def test_torch_is_listed_when_importable():
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "torch" not in fastrnn.available_backends()
    else:
        assert fastrnn.available_backends() == ["numpy", "cython", "torch"]
        assert fastrnn.cuda_available() == torch.cuda.is_available()
