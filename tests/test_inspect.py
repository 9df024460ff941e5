"""fastrnn.inspect and `fastrnn inspect`: the page, the numbers behind it, and a real browser."""
import html
import html.parser
import json
import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import fastrnn
from fastrnn import inspect
from fastrnn.cli import main

TEXT = ('He said "hello (there) world" and\n    left [now], {a (b [c])}.\n'
        'Then "quiet" again; "x" and "y".\n\tTab line "q"\n')

MODELS = [("rnn", "tanh", 1), ("rnn", "tanh", 2), ("rnn", "relu", 1), ("rnn", "relu", 3),
          ("lstm", "tanh", 1), ("lstm", "tanh", 2), ("gru", "tanh", 1), ("gru", "tanh", 2)]


def model_of(cell, nonlinearity, layers, H=5, text=TEXT, backend="numpy", dtype="float64",
             seed=1):
    return fastrnn.CharRNN(fastrnn.Vocab.from_text(text), H, cell=cell, num_layers=layers,
                           nonlinearity=nonlinearity, backend=backend, dtype=dtype, seed=seed)


class TagChecker(html.parser.HTMLParser):
    """Every element that is opened is closed, in order (void elements aside)."""
    VOID = {"meta", "br", "img", "input", "link", "hr", "circle", "rect", "line"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def page_data(page):
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


def shown(text):
    return [inspect._shown_char(c) for c in text]


@pytest.mark.parametrize("cell,nonlinearity,layers", MODELS)
def test_page_for_every_cell_and_layer_count(tmp_path, cell, nonlinearity, layers):
    model = model_of(cell, nonlinearity, layers)
    path = tmp_path / "report.html"
    a = inspect.report(model, TEXT, str(path))
    page = path.read_text(encoding="utf-8")
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert page.startswith("<!DOCTYPE html>")
    # self-contained: nothing fetched from anywhere
    assert not re.search(r"<link|\ssrc=|@import|url\(|https?://(?!www\.w3\.org/2000/svg)", page)
    data = page_data(page)
    assert data["chars"] == shown(TEXT)
    per_layer = 2 if cell == "lstm" else 1
    assert len(data["units"]) == layers * per_layer * 5 == len(set(data["units"]))
    assert len(data["top"]) == len(TEXT) and all(len(t) == 5 for t in data["top"])
    assert data["loss"][0] is None and len(data["loss"]) == len(TEXT)
    assert a.values.shape == (len(TEXT), len(data["units"]))
    assert f"all {len(TEXT)} characters of the text analysed" in page
    if cell == "rnn":
        assert "has no gates" in page and "<svg" not in page
    else:
        assert page.count('<svg xmlns="http://www.w3.org/2000/svg"') == layers


@pytest.mark.parametrize("cell,nonlinearity,layers", MODELS)
def test_numbers_agree_with_the_compiled_backend(cell, nonlinearity, layers):
    """The last h (and c) of every layer and the summed loss, against the cython backend."""
    model = model_of(cell, nonlinearity, layers, backend="cython", seed=3)
    a = inspect.analyse(model, TEXT)
    ids = model.vocab.encode(TEXT)
    total, count = model.nll(ids)
    assert np.nansum(a.loss) == pytest.approx(total, rel=1e-9)
    _, state = model.loss(ids[:-1], ids[1:])
    state = state if isinstance(state, tuple) else (state,)
    # the state after T-1 ids: the row before last of the trace
    for kind, s in zip("hc", state):
        s = s.reshape(layers, 5)
        for k in range(layers):
            cols = [a.units.index(f"L{k}:{kind}:{j}") for j in range(5)]
            np.testing.assert_allclose(a.values[-2, cols], s[k], rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(a.top_probs, axis=1) <= 0) and np.all(a.top_probs.sum(axis=1) <= 1)


def planted_quote_model():
    """A 2-layer relu rnn whose unit L1:h:3 is 1 inside double quotes, else 0, exactly.

    Layer 0 keeps u = in-quote XOR (this char is a quote) as two relus: u0 = relu(a - q),
    u1 = relu(q - a), with a = u0 + u1 of the step before (the previous in-quote bit) and q = 1
    at a quote; a_t = u0 + u1 is then the new in-quote bit. Layer 1's unit 3 sums them."""
    model = model_of("rnn", "relu", 2, H=4, seed=5)
    p = model.get_params()
    q = model.vocab.chars.index('"')
    rng = np.random.default_rng(0)
    for name in p:
        p[name] = rng.normal(0, 0.3, p[name].shape)
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        p[name][:2] = 0
    p["weight_ih_l0"][0, q], p["weight_ih_l0"][1, q] = -1, 1
    p["weight_hh_l0"][0, :2], p["weight_hh_l0"][1, :2] = 1, -1
    p["weight_ih_l1"][3], p["weight_hh_l1"][3] = [1, 1, 0, 0], 0
    p["bias_ih_l1"][3] = p["bias_hh_l1"][3] = 0
    model.set_params(p)
    return model


def test_planted_quote_unit_ranks_first():
    model = planted_quote_model()
    a = inspect.analyse(model, TEXT)
    inside = inspect.text_features(TEXT)["inside quotes"]
    # the feature itself, counted by hand on a small piece
    assert inspect.text_features('a"bc"d')["inside quotes"].tolist() == [0, 1, 1, 1, 0, 0]
    np.testing.assert_array_equal(a.values[:, a.units.index("L1:h:3")], inside)
    unit, r = a.ranking["inside quotes"][0]
    assert unit == "L1:h:3" and r == pytest.approx(1.0)
    assert all(abs(r) < 0.999 for _, r in a.ranking["inside quotes"][1:])


def test_features_by_hand():
    f = inspect.text_features("ab (c[d])\n  x y\n")
    assert f["bracket depth"].tolist() == [0, 0, 0, 1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert f["position in line"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5]
    assert f["start of word"].tolist() == [1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0]
    assert f["indentation"].tolist() == [0] * 10 + [2] * 6


def gates_by_hand(p, cell, ids, H, L):
    """Per layer, the sigmoid gates (T,H) of PyTorch's LSTM/GRU equations, written out."""
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    out, x = [], np.eye(p["weight_ih_l0"].shape[1])[ids]
    for k in range(L):
        W, U = p[f"weight_ih_l{k}"], p[f"weight_hh_l{k}"]
        b, c_b = p[f"bias_ih_l{k}"], p[f"bias_hh_l{k}"]
        h, c, hs, gates = np.zeros(H), np.zeros(H), [], {}
        for t in range(len(ids)):
            gx, gh = W @ x[t] + b, U @ h + c_b
            if cell == "lstm":
                i, f = sig(gx[:H] + gh[:H]), sig(gx[H:2 * H] + gh[H:2 * H])
                g, o = np.tanh(gx[2 * H:3 * H] + gh[2 * H:3 * H]), sig(gx[3 * H:] + gh[3 * H:])
                c = f * c + i * g
                h = o * np.tanh(c)
                now = {"i": i, "f": f, "o": o}
            else:
                r, z = sig(gx[:H] + gh[:H]), sig(gx[H:2 * H] + gh[H:2 * H])
                n = np.tanh(gx[2 * H:] + r * gh[2 * H:])
                h = (1 - z) * n + z * h
                now = {"r": r, "z": z}
            for name, v in now.items():
                gates.setdefault(name, []).append(v)
            hs.append(h)
        out.append({name: np.array(v) for name, v in gates.items()})
        x = np.array(hs)
    return out


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gate_saturation_matches_numpy(tmp_path, cell):
    model = model_of(cell, "tanh", 2, H=6, seed=2)
    p = {k: v * 6 for k, v in model.get_params().items()}  # big weights: gates saturate
    model.set_params(p)
    a = inspect.report(model, TEXT, str(tmp_path / "r.html"))
    want = gates_by_hand(p, cell, model.vocab.encode(TEXT), 6, 2)
    seen_some = False
    for k in range(2):
        assert sorted(a.saturation[k]) == sorted(want[k])
        for g, gate in want[k].items():
            left, right = a.saturation[k][g]
            np.testing.assert_allclose(left, (gate < 0.1).mean(axis=0))
            np.testing.assert_allclose(right, (gate > 0.9).mean(axis=0))
            seen_some |= left.any() and right.any()
    assert seen_some  # the test saw saturation of both kinds, not only zeros
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    g = "i" if cell == "lstm" else "r"
    left, right = a.saturation[1][g]
    assert (f'<tr data-layer="1" data-gate="{g}"><td>1</td><td>{g}</td>'
            f'<td>{left.mean():.3f}</td><td>{right.mean():.3f}</td></tr>') in page
    assert page.count(f'data-gate="{g}" data-unit=') == 2 * 6  # a dot per unit and layer


def test_cap_is_applied_and_stated(tmp_path):
    model = model_of("gru", "tanh", 1)
    long_text = (TEXT * 80)[:7000]
    a = inspect.report(model, long_text, str(tmp_path / "r.html"))
    assert a.text == long_text[:5000] and a.truncated and a.values.shape[0] == 5000
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "only the first 5,000 of 7,000 characters analysed (capped at max_chars=5,000)" in page
    assert len(page_data(page)["chars"]) == 5000
    a = inspect.analyse(model, long_text, max_chars=30)
    assert len(a.text) == 30 and "first 30 of 7,000" in inspect.cap_note(a)


def test_cli(tmp_path, capsys):
    model = model_of("lstm", "tanh", 2, backend="cython", dtype="float32")
    ckpt, text, out = tmp_path / "m.npz", tmp_path / "t.txt", tmp_path / "r.html"
    model.save(str(ckpt))
    text.write_text(TEXT * 3, encoding="utf-8")
    assert main(["inspect", str(ckpt), str(text), "-o", str(out), "--max-chars", "100"]) == 0
    said = capsys.readouterr().out
    assert "only the first 100 of more than 100 characters" in said and "20 units" in said
    page = out.read_text(encoding="utf-8")
    assert "only the first 100 of more than 100 characters" in page
    assert page_data(page)["chars"] == shown((TEXT * 3)[:100])
    assert main(["inspect", str(ckpt), str(text), "-o", str(out), "--backend", "cython"]) == 0
    assert f"all {len(TEXT) * 3} characters" in capsys.readouterr().out
    assert main(["inspect", str(ckpt), str(text), "-o", str(out), "--max-chars", "0"]) == 2
    assert "--max-chars must be at least 1" in capsys.readouterr().err
    text.write_text("zzz \u00e9", encoding="utf-8")
    assert main(["inspect", str(ckpt), str(text), "-o", str(out)]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err


def test_errors():
    model = model_of("rnn", "tanh", 1)
    with pytest.raises(ValueError, match="max_chars must be a positive integer"):
        inspect.analyse(model, TEXT, max_chars=0)
    with pytest.raises(ValueError, match="no character"):
        inspect.analyse(model, "")
    with pytest.raises(TypeError, match="must be a str"):
        inspect.analyse(model, b"abc")
    with pytest.raises(ValueError, match="needs a model with a vocab"):
        inspect.analyse(fastrnn.CharRNN(10, 4, backend="numpy"), "abc")
    a = inspect.analyse(model, "He\u00e9 said", oov="skip")
    assert a.text == "He said"
    one = inspect.analyse(model, "H")  # one character: no loss, constant features
    assert math.isnan(one.loss[0]) and one.ranking["inside quotes"] is None


def test_hostile_text_and_title(tmp_path):
    text = 'a</script><script>alert(1)</script> {{DATA}} "\u2028" \x00\x1b end'
    model = model_of("gru", "tanh", 1, text=text)
    path = tmp_path / "r.html"
    inspect.report(model, text, str(path), title="<b>{{DATA}}</b>")
    page = path.read_text(encoding="utf-8")
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<title>&lt;b&gt;{{DATA}}&lt;/b&gt;</title>" in page
    assert page_data(page)["chars"] == shown(text)
    assert shown("\x00\x1b\n") == ["\u2400", "\u241b", "\u21b5\n"]


def test_overflowing_activations_are_refused():
    model = model_of("rnn", "relu", 2, dtype="float32")
    model.set_params({k: np.full(v.shape, 3e3) for k, v in model.get_params().items()})
    with pytest.raises(ValueError, match="overflow float32"):
        inspect.analyse(model, TEXT)


@pytest.mark.parametrize("backend", ["cython", "torch"])
def test_any_backend_gives_the_same_analysis(backend):
    if backend not in fastrnn.available_backends():
        pytest.skip(f"no {backend} backend here")
    reference = model_of("lstm", "tanh", 2, seed=4)
    other = model_of("lstm", "tanh", 2, seed=0, backend=backend)
    other.set_params(reference.get_params())
    a, b = inspect.analyse(reference, TEXT), inspect.analyse(other, TEXT)
    assert a.units == b.units and a.ranking == b.ranking
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.top_ids, b.top_ids)


# -- a real browser ------------------------------------------------------------------------------

def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium(binary, profile, *args):
    return subprocess.run([binary, "--headless", "--disable-gpu", "--no-sandbox",
                           "--no-first-run", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def rendered(dom):
    """(data-unit of the text box, [(character, background colour)]) of a dumped DOM."""
    m = re.search(r'<div class="textbox" id="text" data-unit="([^"]*)">(.*?)</div>', dom, re.S)
    spans = re.findall(r'<span data-t="\d+"([^>]*)>(.*?)</span>', m.group(2), re.S)
    return m.group(1), [(html.unescape(c), re.search(r"background-color: ([^;\"]+)", a).group(1))
                        for a, c in spans]


@pytest.mark.skipif(find_chromium() is None, reason="no chromium binary (apt-get install chromium)")
def test_in_a_real_browser(tmp_path):
    binary = find_chromium()
    model = planted_quote_model()
    path = tmp_path / "report.html"
    inspect.report(model, TEXT, str(path))
    url = path.resolve().as_uri()

    doms = {}
    for unit in ("L1:h:3", "L0:h:1", "feature:inside quotes"):
        run = chromium(binary, tmp_path / "profile", "--dump-dom",
                       f"{url}#unit={unit.replace(' ', '%20')}")
        assert run.returncode == 0, run.stderr[-2000:]
        doms[unit] = rendered(run.stdout)
    for unit, (chosen, spans) in doms.items():
        assert chosen == unit                     # the selector's choice reached the text
        assert [c for c, _ in spans] == shown(TEXT)   # the whole text was rendered
    quote_colours = [col for _, col in doms["L1:h:3"][1]]
    inside = inspect.text_features(TEXT)["inside quotes"]
    # the planted unit: one colour inside quotes (full blue), white outside
    assert {col for col, q in zip(quote_colours, inside) if q} == {"rgb(33, 102, 172)"}
    assert {col for col, q in zip(quote_colours, inside) if not q} == {"rgb(255, 255, 255)"}
    assert quote_colours != [col for _, col in doms["L0:h:1"][1]]
    # the feature itself, offered in the selector to compare: the same picture
    assert [col for _, col in doms["feature:inside quotes"][1]] == quote_colours
    # without a unit in the address: the best-ranked unit (the planted one)
    run = chromium(binary, tmp_path / "profile", "--dump-dom", url)
    assert rendered(run.stdout)[0] == "L1:h:3"

    shot = tmp_path / "report.png"
    run = chromium(binary, tmp_path / "profile", "--window-size=1280,1400",
                   f"--screenshot={shot}", f"{url}#unit=L1:h:3")
    assert run.returncode == 0, run.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 1400)
    if os.environ.get("FASTRNN_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["FASTRNN_KEEP_SCREENSHOT"])
