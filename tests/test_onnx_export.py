"""`fastrnn export --format onnx`: the exported step, run by onnxruntime over 200 characters of
greedy generation, gives fastrnn's own logits and states, for every cell and layer count."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastrnn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

KINDS = [dict(), dict(num_layers=2, nonlinearity="relu"), dict(num_layers=3),
         dict(cell="lstm"), dict(cell="lstm", num_layers=2), dict(cell="gru"),
         dict(cell="gru", num_layers=3)]
IDS = ["minchar", "rnn2-relu", "rnn3", "lstm1", "lstm2", "gru1", "gru3"]
V, H = 23, 20


def trained_like(kind, seed=0):
    """A numpy-backend float32 model with weights of trained scale, biases included."""
    m = fastrnn.CharRNN(fastrnn.Vocab("".join(chr(97 + i) for i in range(V))), H,
                        backend="numpy", init="uniform", seed=seed, **kind)
    rng = np.random.default_rng(seed)
    scale = 1 if kind.get("nonlinearity") == "relu" else 2  # (relu: unbounded, grows)
    m.set_params({k: v * scale + rng.normal(0, 0.2, v.shape)
                  for k, v in m.get_params().items()})
    return m


def export(m, tmp_path):
    m.save(tmp_path / "m.npz")
    out = subprocess.run([sys.executable, "-m", "fastrnn", "export", str(tmp_path / "m.npz"),
                          "--format", "onnx", "-o", str(tmp_path / "step.onnx")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "step.onnx" in out.stdout and "step.vocab.json" in out.stdout
    return tmp_path / "step.onnx"


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_onnx_step_matches_fastrnn_over_200_greedy_characters(kind, tmp_path):
    m = trained_like(kind, seed=2)  # (a seed whose greedy paths do not stop on one id)
    sess = ort.InferenceSession(str(export(m, tmp_path)), providers=["CPUExecutionProvider"])
    L = m.num_layers
    names = ["h", "c"] if m.cell == "lstm" else ["h"]
    assert [i.name for i in sess.get_inputs()] == ["char"] + names
    assert [o.name for o in sess.get_outputs()] == ["logits"] + [n + "_out" for n in names]
    assert sess.get_inputs()[0].type == "tensor(int64)"
    meta = json.loads((tmp_path / "step.vocab.json").read_text(encoding="utf-8"))
    assert "".join(meta["chars"]) == m.vocab.chars and meta["inputs"] == ["char"] + names
    assert meta["state_shape"] == [L, 1, H]

    # fastrnn's own step (the numpy backend's step_one) and its logits, as the oracle
    be = m._backend
    ref_state = tuple(np.zeros((L, 1, H), np.float32) for _ in names)
    state = [np.zeros((L, 1, H), np.float32) for _ in names]
    x, ids, worst = 3, [], 0.0
    for _ in range(200):
        logits, *state = sess.run(None, {"char": np.array([x], np.int64),
                                         **dict(zip(names, state))})
        top = be.step_one(x, ref_state)
        ref = be.params["Why"] @ top + be.params["by"]
        assert logits.shape == (1, V) and logits.dtype == np.float32
        worst = max(worst, float(np.abs(logits[0] - ref).max()))
        for got, want in zip(state, ref_state):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        x = int(np.argmax(logits[0]))
        ids.append(x)
    assert worst < 1e-5, worst
    # the same characters as fastrnn's own greedy generation from that start
    np.testing.assert_array_equal(ids, m.generate(200, greedy=True, prime_ids=[3]))
    assert len(set(ids)) >= 2  # not a fixed point: the comparison covered varied states


def test_deploy_doc_loop_runs_without_fastrnn(tmp_path):
    # the sampling loop of docs/deploy.md, run as written in a process that cannot import fastrnn
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    m = trained_like(dict(cell="lstm", num_layers=2))
    m.vocab = fastrnn.Vocab("".join(sorted(set("The " + m.vocab.chars))))
    m2 = fastrnn.CharRNN(m.vocab, H, cell="lstm", num_layers=2, backend="numpy")
    export(m2, tmp_path)
    (tmp_path / "fastrnn.py").write_text("raise ImportError('no fastrnn here')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("The ") and len(out.stdout.rstrip("\n")) == 4 + 400


def test_export_needs_onnx_says_so(tmp_path, monkeypatch):
    m = trained_like(dict())
    m.save(tmp_path / "m.npz")
    (tmp_path / "onnx.py").write_text("raise ImportError('hidden')\n")
    # the shadowing onnx first, then wherever this fastrnn was imported from (an installed
    # package, or a checkout on PYTHONPATH)
    root = Path(fastrnn.__file__).resolve().parents[1]
    env = dict(__import__("os").environ, PYTHONPATH=f"{tmp_path}:{root}")
    out = subprocess.run([sys.executable, "-m", "fastrnn", "export", str(tmp_path / "m.npz"),
                          "--format", "onnx", "-o", str(tmp_path / "s.onnx")],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 2 and "pip install onnx" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.onnx").exists()
