"""Smoke test of the benchmark suite's quick mode: it runs, and its numbers are sane."""
import json

import pytest

import fastrnn.bench as bench


def test_quick_bench_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "b.json"
    configs = [dict(name="min-char", B=1, T=8, H=16, threads=1),
               dict(name="sweep", B=2, T=8, H=16, threads=1),
               dict(name="sweep", B=2, T=8, H=32, threads=1)]
    results = bench.run(configs, seconds=0.01, repeats=2, max_threads=1, with_torch=False)
    rows = {r["backend"]: r for r in results[0]["rows"]}
    assert set(rows) == {"numpy/1t", "cython/1t"}
    assert rows["numpy/1t"]["speedup_vs_numpy"] == 1.0
    for r in rows.values():
        assert r["total"] > 0 and r["chars_per_sec"] == 8 / r["total"]
        assert r["forward"] > 0 and r["update"] > 0
    assert set(bench.fit_exponents(results)) == {"H"}
    for B, T, H in [(1, 25, 100), (64, 128, 256), (64, 16, 64), (4, 10, 32)]:
        mem = bench.memory_row(B, T, H, 77)  # the memory goal: at most 1.5x the minimum
        assert mem["per_step_alloc"] < 10_000 and 1.0 <= mem["ratio"] <= 1.5, mem
    # the command itself, in quick mode on the smallest sizes
    assert bench.main(["--quick", "--no-torch", "--only", "goals", "--seconds", "0.01",
                       "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| min-char | 1 | 25 | 100 | cython/1t |" in text and "sgemm peak" in text
    data = json.loads(out.read_text())
    assert data["header"]["kernels"] and data["results"]


def test_cli_bench_is_the_same_command(capsys):
    from fastrnn.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0 and "--quick" in capsys.readouterr().out


def test_backends_are_timed_in_turn_each_after_pinning_its_threads():
    """timed_together runs every call once per round, each right after its own prepare() (which
    pins its threads), and returns each call's median time per call."""
    import time
    pinned, log = [None], []

    def entry(key, pause):
        def prepare():
            pinned[0] = key
            log.append(key)

        def fn():
            assert pinned[0] == key  # never timed under another row's settings
            time.sleep(pause)
        return prepare, fn

    times = bench.timed_together({"slow": entry("slow", 0.002), "fast": entry("fast", 0.0)},
                                 seconds=0.004, repeats=3, warmup=1)
    assert log == ["slow", "fast"] + ["slow", "fast"] * 3  # warm-up, then three rounds in turn
    assert set(times) == {"slow", "fast"}
    assert times["slow"] >= 0.002 > times["fast"] > 0


def test_gpu_rnn_bench_runs_on_the_cpu_and_records_a_failing_contender(tmp_path, monkeypatch,
                                                                         capsys):
    """bench/gpu_rnn.py (run on GPU machines only) in quick mode on the CPU, small sizes: every
    contender gives a rate, and one that raises is recorded as its error while the rest run."""
    pytest.importorskip("torch")
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_rnn.py"
    spec = importlib.util.spec_from_file_location("gpu_rnn", path)
    g = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)
    monkeypatch.setattr(g, "B", 4)
    monkeypatch.setattr(g, "T", 8)
    monkeypatch.setattr(g, "MODELS", [("gru", 2, 16)])
    out = tmp_path / "t.md"
    assert g.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    row = out.read_text().splitlines()[-1].split(" | ")
    assert row[0] == "| gru L=2 H=16" and row[-1].endswith("x |")
    assert all(float(v.replace(",", "")) > 0 for v in row[1:4])

    def broken(*args):
        raise RuntimeError("no plan")
    monkeypatch.setattr(g, "fastrnn_step", broken)
    assert g.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    row = out.read_text().splitlines()[-1].split(" | ")
    assert row[1] == "RuntimeError" and row[-1] == "- |"
    assert all(float(v.replace(",", "")) > 0 for v in row[2:4])
    assert "fastrnn gru L=2 H=16: RuntimeError: no plan" in capsys.readouterr().err
