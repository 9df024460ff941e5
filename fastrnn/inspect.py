"""See inside a model: one self-contained HTML page about how it reads a text.

    import fastrnn
    model = fastrnn.CharRNN.load("checkpoints/best.npz")
    fastrnn.inspect.report(model, open("input.txt").read(), "report.html")

or `fastrnn inspect CHECKPOINT TEXT -o report.html`. The page (no network, no external scripts:
it opens from disk in any browser) shows, after Karpathy, Johnson and Fei-Fei's "Visualizing and
Understanding Recurrent Networks" (2015):
  - the text coloured by one hidden unit (h, or an LSTM's cell state c), with a selector over
    every unit of every layer; the page's address may name the first one: report.html#unit=L0:h:5
  - at each character the model's top-5 next characters with their probabilities (on hover and
    in a fixed panel; click a character to pin it)
  - the units ranked by |Pearson correlation| with simple features of the text (inside double
    quotes, bracket depth, position in line, start of word, indentation), each clickable
  - for lstm/gru the gates' saturation: per unit, the fraction of characters at which a gate is
    left-saturated (< 0.1) against the fraction right-saturated (> 0.9), the paper's scatter plot
  - the loss of each character (-ln p of it given all before it) as a heat map.
The activations are computed by the numpy backend's readable math (NumpyBackend.trace) on a copy
of the model's parameters, so a model of any backend or device gives the same page. Long texts
are cut to their first `max_chars` characters (5,000 by default), and the page says so.
"""
import base64
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

MAX_CHARS = 5000
TOP_K = 5
TOP_UNITS = 10          # units listed per feature
SATURATION = (0.1, 0.9)  # a gate below the first is left-saturated, above the second right-
SIGMOID_GATES = {"rnn": "", "lstm": "ifo", "gru": "rz"}  # (g and n are tanh: not gates)
GATE_COLOURS = {"i": "#1b9e77", "f": "#d95f02", "o": "#7570b3", "r": "#e7298a", "z": "#66a61e"}

FEATURES = {
    "inside quotes": "1 from an opening double quote up to (not including) the closing one",
    "bracket depth": "open ( [ { not yet closed, counting the character itself",
    "position in line": "characters since the last newline",
    "start of word": "1 at a letter or digit that follows anything else",
    "indentation": "leading spaces and tabs of the character's line",
}


def text_features(text):
    """{feature name: (T,) float64 array}: each feature's value at each character of `text`,
    as it stands once that character has been read (see FEATURES)."""
    T = len(text)
    out = {name: np.zeros(T) for name in FEATURES}
    inside, depth, column, indent, counting_indent = False, 0, 0, 0, True
    line_start = 0
    for t, ch in enumerate(text):
        if ch == '"':
            inside = not inside
        out["inside quotes"][t] = inside
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        out["bracket depth"][t] = depth
        out["position in line"][t] = column
        column += 1
        out["start of word"][t] = ch.isalnum() and (t == 0 or not text[t - 1].isalnum())
        if counting_indent and ch in " \t":
            indent += 1
        else:
            counting_indent = False
        if ch == "\n" or t == T - 1:  # the line (its newline included) ends: its indentation
            out["indentation"][line_start:t + 1] = indent
            line_start, column, indent, counting_indent = t + 1, 0, 0, True
    return out


def correlations(values, feature):
    """Pearson correlation of each column of values (T,N) with feature (T,): (N,) array, 0 for
    a constant unit; None when the feature is constant (nothing to track)."""
    f = feature - feature.mean()
    f_norm = math.sqrt(float(f @ f))
    if f_norm == 0:
        return None
    v = values - values.mean(axis=0)
    v_norm = np.sqrt(np.einsum("tn,tn->n", v, v))
    r = (f @ v) / (np.where(v_norm > 0, v_norm, 1.0) * f_norm)
    return np.where(v_norm > 0, np.clip(r, -1.0, 1.0), 0.0)


def saturation(gate):
    """(left, right): per unit (column) of gate activations (T,H), the fraction of steps at
    which it is below SATURATION[0], and above SATURATION[1]."""
    return (gate < SATURATION[0]).mean(axis=0), (gate > SATURATION[1]).mean(axis=0)


@dataclass
class Analysis:
    """What report() draws. units name each column of `values` "L{layer}:{h or c}:{unit}"."""
    text: str                 # the characters analysed (the cap applied)
    total_chars: int          # characters in the text given (before the cap)
    max_chars: int
    ids: np.ndarray           # (T,)
    units: list               # N names
    values: np.ndarray        # (T, N) each unit after reading each character
    top_ids: np.ndarray       # (T, k) the most likely next ids after each character, best first
    top_probs: np.ndarray     # (T, k)
    loss: np.ndarray          # (T,) -ln p(character t | characters before); NaN for the first
    features: dict            # name -> (T,)
    ranking: dict             # name -> [(unit name, r), ...] best |r| first, or None (constant)
    saturation: list          # per layer {gate: (left (H,), right (H,))}; empty for rnn
    describe: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def truncated(self):
        """Whether the cap cut the text (total_chars -1: a longer text, not read whole)."""
        return self.total_chars < 0 or self.total_chars > self.max_chars


def cap_note(a):
    """The sentence saying which part of the text was analysed."""
    if not a.truncated:
        return f"all {len(a.text):,} characters of the text analysed"
    total = (f"{a.total_chars:,}" if a.total_chars >= 0 else f"more than {a.max_chars:,}")
    return (f"only the first {a.max_chars:,} of {total} characters analysed "
            f"(capped at max_chars={a.max_chars:,})")


def _numpy_backend(model):
    """The model's parameters in a numpy backend (the model's own when it is one)."""
    if model.backend == "numpy":
        return model._backend
    from .model import CharRNN
    twin = CharRNN(model.vocab_size, model.hidden_size, cell=model.cell,
                   num_layers=model.num_layers, dropout=model.dropout,
                   nonlinearity=model.nonlinearity, backend="numpy", dtype=model.dtype)
    twin.set_params(model.get_params())
    return twin._backend


def _check_count(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def analyse(model, text, *, max_chars=MAX_CHARS, oov="error", total_chars=None):
    """The Analysis of `text` (a str; needs model.vocab) by `model`: its first max_chars
    characters, encoded as model.vocab.encode(text, oov) does. total_chars: the length of the
    whole text when `text` is already a prefix of it (-1: unknown, longer)."""
    if model.vocab is None:
        raise ValueError("inspecting text needs a model with a vocab")
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    max_chars = _check_count(max_chars, "max_chars")
    if total_chars is None:
        total_chars = len(text)
    ids = model.vocab.encode(text[:max_chars], oov=oov)
    if len(ids) == 0:
        raise ValueError("the text holds no character of the model's vocabulary to inspect")
    shown = model.vocab.decode(ids)
    backend = _numpy_backend(model)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
        layers, logits = backend.trace(np.asarray(ids, dtype=np.intp))

    units, columns = [], []
    for k, layer in enumerate(layers):
        for kind in ("h", "c"):
            if kind in layer:
                units += [f"L{k}:{kind}:{j}" for j in range(model.hidden_size)]
                columns.append(layer[kind])
    values = np.concatenate(columns, axis=1).astype(np.float64)
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(logits))):
        raise ValueError(f"the model's activations overflow {model.dtype.name} on this text "
                         f"(NaN or infinite values): there is nothing meaningful to show")

    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    k = min(TOP_K, model.vocab_size)
    top_ids = np.argsort(-log_p, axis=1, kind="stable")[:, :k]
    top_probs = np.exp(np.take_along_axis(log_p, top_ids, axis=1))
    loss = np.full(len(ids), np.nan)
    loss[1:] = -log_p[np.arange(len(ids) - 1), ids[1:]]

    features = text_features(shown)
    ranking = {}
    for name, f in features.items():
        r = correlations(values, f)
        if r is None:
            ranking[name] = None
            continue
        best = np.argsort(-np.abs(r), kind="stable")[:TOP_UNITS]
        ranking[name] = [(units[j], float(r[j])) for j in best]
    sat = [{g: saturation(layer[g]) for g in SIGMOID_GATES[model.cell]} for layer in layers]
    return Analysis(text=shown, total_chars=total_chars, max_chars=max_chars, ids=np.asarray(ids),
                    units=units, values=values, top_ids=top_ids, top_probs=top_probs, loss=loss,
                    features=features, ranking=ranking, saturation=sat,
                    describe=model.spec.describe())


# -- the page ------------------------------------------------------------------------------------

def _shown_char(ch):
    """How a character is drawn: control characters as their Control Pictures sign."""
    if ch == "\n":
        return "\u21b5\n"
    if ch == "\t":
        return "\t"
    code = ord(ch)
    if code < 32:
        return chr(0x2400 + code)
    if code == 127:
        return "\u2421"
    return ch


def _quantised(values):
    """(scales, base64 of int8 rows): each unit's values (T,) as round(127 v / max|v|)."""
    scales = np.abs(values).max(axis=0)
    scales = np.where(scales > 0, scales, 1.0)
    q = np.rint(values / scales * 127).astype(np.int8)
    return scales, base64.b64encode(np.ascontiguousarray(q.T).tobytes()).decode("ascii")


def _svg_saturation(layer_k, gates):
    """The paper's plot for one layer: a dot per unit and gate at (left-, right-saturated)."""
    size, pad = 240, 34
    span = size - 2 * pad

    def at(v, flip=False):
        return pad + (1 - v if flip else v) * span

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
             f'class="sat" data-layer="{layer_k}" role="img" '
             f'aria-label="gate saturation, layer {layer_k}">',
             f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="#fafafa" '
             f'stroke="#999"/>',
             # left + right <= 1: no unit lies beyond this diagonal
             f'<line x1="{pad}" y1="{pad}" x2="{pad + span}" y2="{pad + span}" stroke="#ddd"/>',
             f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle">left-saturated '
             f'(&lt; {SATURATION[0]})</text>',
             f'<text x="10" y="{size / 2}" text-anchor="middle" transform="rotate(-90 10 '
             f'{size / 2})">right-saturated (&gt; {SATURATION[1]})</text>',
             f'<text x="{pad - 4}" y="{pad + span + 12}" text-anchor="end">0</text>',
             f'<text x="{pad + span}" y="{pad + span + 12}" text-anchor="middle">1</text>',
             f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">1</text>',
             f'<text x="{size / 2}" y="{pad - 10}" text-anchor="middle">layer {layer_k}</text>']
    for g, (left, right) in gates.items():
        colour = GATE_COLOURS[g]
        for j, (x, y) in enumerate(zip(left, right)):
            parts.append(f'<circle cx="{at(x):.1f}" cy="{at(y, True):.1f}" r="2.5" '
                         f'fill="{colour}" fill-opacity="0.6" data-gate="{g}" data-unit="{j}">'
                         f'<title>{g} gate, unit {j}: left {x:.3f}, right {y:.3f}</title>'
                         f'</circle>')
    parts.append("</svg>")
    return "".join(parts)


def _saturation_section(a, cell):
    if not a.saturation or not a.saturation[0]:
        return ('<p class="note">An rnn cell has no gates: no saturation plot (the paper\'s '
                'plot is for LSTM and GRU gates).</p>')
    names = {"i": "input", "f": "forget", "o": "output", "r": "reset", "z": "update"}
    legend = " ".join(f'<span class="key" style="background:{GATE_COLOURS[g]}"></span>'
                      f'{g} ({names[g]})' for g in SIGMOID_GATES[cell])
    plots = "".join(_svg_saturation(k, gates) for k, gates in enumerate(a.saturation))
    rows = []
    for k, gates in enumerate(a.saturation):
        for g, (left, right) in gates.items():
            rows.append(f'<tr data-layer="{k}" data-gate="{g}"><td>{k}</td><td>{g}</td>'
                        f'<td>{left.mean():.3f}</td><td>{right.mean():.3f}</td></tr>')
    table = ('<table class="sattab"><tr><th>layer</th><th>gate</th><th>mean left-saturated'
             '</th><th>mean right-saturated</th></tr>' + "".join(rows) + "</table>")
    return f'<p>{legend}</p><div class="plots">{plots}</div>{table}'


def _page_data(a, vocab):
    scales, packed = _quantised(a.values)
    chars = [_shown_char(c) for c in a.text]
    loss = [None if math.isnan(v) else round(float(v), 4) for v in a.loss]
    top = [[[_shown_char(vocab.chars[i]), round(float(p), 4)] for i, p in zip(ids, ps)]
           for ids, ps in zip(a.top_ids.tolist(), a.top_probs.tolist())]
    ranking = {name: (None if r is None else [[u, round(v, 4)] for u, v in r])
               for name, r in a.ranking.items()}
    return {"chars": chars, "units": a.units, "scales": [float(s) for s in scales],
            "values": packed, "top": top, "loss": loss, "ranking": ranking,
            "features": FEATURES,
            "feature_values": {name: [int(v) for v in f] for name, f in a.features.items()}}


def _script_json(obj):
    """JSON that is safe inside <script>: ASCII (a lone surrogate cannot break the file's
    UTF-8) and no '<' (so no '</script>')."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")


def render(a, vocab, cell, title="fastrnn inspect"):
    """The HTML page of an Analysis (a str)."""
    template = resources.files("fastrnn").joinpath("_inspect.html").read_text(encoding="utf-8")
    finite = a.loss[~np.isnan(a.loss)]
    mean_loss = (f"{finite.mean():.4f} nats/char ({finite.mean() / math.log(2):.4f} bits/char)"
                 if len(finite) else "n/a (one character)")
    fill = {
        "TITLE": html.escape(title),
        "DESCRIBE": html.escape(a.describe),
        "CAP_NOTE": html.escape(cap_note(a)),
        "N_UNITS": f"{len(a.units):,}",
        "MEAN_LOSS": mean_loss,
        "SATURATION": _saturation_section(a, cell),
        "DATA": _script_json(_page_data(a, vocab)),
    }
    # one pass: a title that holds "{{DATA}}" stays text
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: fill[m.group(1)], template)


def report(model, text, path, *, max_chars=MAX_CHARS, oov="error", title=None,
           total_chars=None):
    """Writes the page about `model` reading `text` to `path` (see the module docstring) and
    returns its Analysis. max_chars caps the text; oov: characters outside the vocabulary, as
    Vocab.encode (error, skip, replace)."""
    a = analyse(model, text, max_chars=max_chars, oov=oov, total_chars=total_chars)
    page = render(a, model.vocab, model.cell, title or "fastrnn inspect")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", errors="replace") as f:  # (a lone surrogate)
        f.write(page)
    os.replace(tmp, path)
    return a


def read_prefix(path, max_chars, byte_level=False):
    """(text, total_chars) of a file's first max_chars characters (bytes as characters with
    byte_level); total_chars is -1 when the file holds more."""
    if byte_level:
        with open(path, "rb") as f:
            text = f.read(max_chars + 1).decode("latin-1")
    else:
        with open(path, encoding="utf-8") as f:
            try:
                text = f.read(max_chars + 1)
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path} is not UTF-8 text ({exc.reason})") from None
    if len(text) > max_chars:
        return text[:max_chars], -1
    return text, len(text)
