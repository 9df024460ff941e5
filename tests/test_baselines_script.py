"""bench/baselines.py --quick, run as a user would (a subprocess outside the source tree): its
table, JSON and plot, and losses a trained model must reach."""
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import fastrnn

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "baselines.py"
COLUMNS = "| cell | layers | hidden | params | val nats/char | bits/char | iterations | seconds |"


def unigram_entropy():
    """Entropy (nats) of the character frequencies of the training part (the first 90%)."""
    text = fastrnn.load_shakespeare()
    counts = Counter(text[:int(len(text) * 0.9)])
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


def test_quick_run_writes_a_sane_table(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1",
                          "--out", "res"], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads((tmp_path / "res" / "baselines.json").read_text())
    head = data["header"]
    assert head["command"].endswith("--quick --threads 1 --out res") and head["commit"]
    assert len(head["load_before"]) == 3 and len(head["load_after"]) == 3

    rows = data["rows"]
    assert sorted((r["cell"], r["layers"]) for r in rows) == sorted(
        (c, n) for c in ("rnn", "gru", "lstm") for n in (1, 2))
    entropy = unigram_entropy()
    assert 3.0 < entropy < 3.5
    for r in rows:
        model = fastrnn.CharRNN(77, r["hidden"], cell=r["cell"], num_layers=r["layers"],
                                backend="numpy")
        params = sum(p.size for p in model.get_params().values())
        assert r["params"] == params and abs(params - r["budget"]) <= 0.2 * r["budget"], r
        assert r["iterations"] == 300 and r["seconds"] > 0
        assert math.isfinite(r["val_nats_per_char"]) and r["val_nats_per_char"] < entropy, r
        assert abs(r["bits_per_char"] - r["val_nats_per_char"] / math.log(2)) < 2e-4

    ngram = {r["order"]: r["val_nats_per_char"] for r in data["ngram"]}
    assert set(ngram) == {1, 3, 5}
    assert abs(ngram[1] - entropy) < 0.1  # the add-one unigram, scored on held-out text
    assert ngram[5] < ngram[3] < ngram[1]

    # the n-gram rows are what `fastrnn baseline` reports (its split keeps one character more
    # in validation, at most: the same figures to 3 decimals)
    (tmp_path / "corpus.txt").write_text(fastrnn.load_shakespeare())
    cli = subprocess.run([sys.executable, "-m", "fastrnn", "baseline", "corpus.txt", "--order",
                          "5", "--val-frac", "0.1", "--json"], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert abs(json.loads(cli.stdout)["nats_per_char"] - ngram[5]) < 1e-3

    lines = (tmp_path / "res" / "baselines.md").read_text().splitlines()
    body = lines[lines.index(COLUMNS) + 2:]
    assert len(body) == len(rows) + len(ngram)
    for line, r in zip(body, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:4] == [r["cell"], str(r["layers"]), str(r["hidden"]), f"{r['params']:,}"]
        assert float(cells[4]) == r["val_nats_per_char"] and cells[6] == "300"
    assert (tmp_path / "res" / "baselines.png").read_bytes()[:4] == b"\x89PNG"
