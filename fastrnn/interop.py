"""PyTorch interop: a CharRNN as torch.nn.RNN / LSTM / GRU + torch.nn.Linear, and back.

    module = model.to_torch()                # module.rnn: nn.LSTM(V, H, num_layers=2, ...)
    logits = module(ids)                     # ids (B,T) -> (B,T,V), equal to fastrnn's logits
    model2 = fastrnn.CharRNN.from_torch(module)                  # or module.state_dict(),
    model3 = fastrnn.CharRNN.from_torch((nn_lstm, nn_linear))    # or a pair of state dicts
    model4 = fastrnn.CharRNN.from_torch(torch.load("m.pt", weights_only=True))  # fastrnn export

The recurrent tensors keep PyTorch's names and gate order (weight_ih_l{k}, weight_hh_l{k},
bias_ih_l{k}, bias_hh_l{k}; see fastrnn._layout), head.weight = Why and head.bias = by. min-char-
rnn's model (one tanh rnn layer) has no separate recurrent bias: weight_ih_l0 = Wxh, weight_hh_l0 =
Whh and bias_ih_l0 + bias_hh_l0 = bh (exported as bh and zeros). From a module the cell, layers,
nonlinearity and dropout are read off the module; from a bare state dict the cell comes from the
gate blocks (G*H rows: G = 4 lstm, 3 gru, 1 rnn), and an rnn's nonlinearity (which the tensors
cannot tell) and the dropout from from_torch's arguments.
"""
import re
import warnings
from collections.abc import Mapping

import numpy as np

from ._layout import CELLS, ModelSpec
from ._optional import require_torch
from .vocab import Vocab

torch = require_torch("fastrnn's PyTorch interop")
nn = torch.nn
MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
GATES_TO_CELL = {g: cell for cell, g in CELLS.items()}


class TorchCharRNN(nn.Module):
    """The CharRNN as plain PyTorch modules: `rnn` (a batch_first nn.RNN, nn.LSTM or nn.GRU over
    one-hot input) and `head` (nn.Linear from the top layer's output to the logits)."""

    def __init__(self, vocab_size, hidden_size, *, cell="rnn", num_layers=1, dropout=0.0,
                 nonlinearity="tanh", dtype=None, device=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        if cell == "rnn":
            kw["nonlinearity"] = nonlinearity
        with warnings.catch_warnings():  # dropout on one layer does nothing, as in fastrnn
            warnings.filterwarnings("ignore", message=".*dropout.*num_layers.*")
            self.rnn = MODULES[cell](vocab_size, hidden_size, num_layers=num_layers,
                                     dropout=dropout, batch_first=True, **kw)
        self.head = nn.Linear(hidden_size, vocab_size, dtype=dtype, device=device)
        self.vocab = None  # the fastrnn Vocab, when the model had one (not part of state_dict)

    def forward(self, ids, h0=None, return_state=False):
        """Logits (B,T,V) for int ids (B,T) (or (T,V) for ids (T,)). h0 in PyTorch's convention
        (zeros by default): (L,B,H) ((L,H) for ids (T,)), a tuple (h0, c0) of two for an LSTM;
        a one-layer model also takes them without the layer axis, (B,H) or (H,). With
        return_state, returns (logits, last state) in the convention of h0."""
        x = nn.functional.one_hot(ids.long(), self.rnn.input_size).to(self.head.weight.dtype)
        squeeze = False
        if h0 is not None:
            parts = h0 if isinstance(h0, tuple) else (h0,)
            squeeze = self.rnn.num_layers == 1 and parts[0].dim() == ids.dim()
            if squeeze:
                parts = tuple(p.unsqueeze(0) for p in parts)
            h0 = parts if isinstance(self.rnn, nn.LSTM) else parts[0]
        out, state = self.rnn(x, h0)
        logits = self.head(out)
        if not return_state:
            return logits
        if squeeze:
            state = tuple(s[0] for s in state) if isinstance(state, tuple) else state[0]
        return logits, state


def to_torch(model, device=None):
    """A TorchCharRNN holding copies of `model`'s parameters, in its dtype, on `device` (default:
    the model's device), in eval mode (its dropout, if any, applies after .train())."""
    spec, p = model.spec, model.get_params()
    dtype = torch.float32 if model.dtype == np.float32 else torch.float64
    module = TorchCharRNN(spec.vocab_size, spec.hidden_size, cell=spec.cell,
                          num_layers=spec.num_layers, dropout=spec.dropout,
                          nonlinearity=spec.nonlinearity, dtype=dtype,
                          device=device if device is not None else model.device)
    if spec.legacy:
        values = {"rnn.weight_ih_l0": p["Wxh"], "rnn.weight_hh_l0": p["Whh"],
                  "rnn.bias_ih_l0": p["bh"], "rnn.bias_hh_l0": np.zeros_like(p["bh"])}
    else:
        values = {f"rnn.{name}": v for name, v in p.items() if name not in ("Why", "by")}
    values.update({"head.weight": p["Why"], "head.bias": p["by"]})
    module.load_state_dict({k: torch.from_numpy(v) for k, v in values.items()})
    module.vocab = model.vocab
    return module.eval()


EXPORT_FORMAT = "fastrnn-torch"


def export_dict(model):
    """`fastrnn export --format torch`'s content: a dict of tensors and plain values only, so
    that torch.load(path, weights_only=True) reads it with no fastrnn installed:

        {"format": "fastrnn-torch", "format_version": 1,
         "state_dict": to_torch().state_dict(),     # rnn.weight_ih_l0, ..., head.weight/bias
         "model": {"cell", "vocab_size", "hidden_size", "num_layers", "nonlinearity",
                   "dropout", "dtype"},
         "vocab": {"chars": [one str per id], "byte_level": bool} or None}

    Decode ids with "".join(vocab["chars"][i] for i in ids) (a byte-level vocab's characters
    stand for the bytes of the same value). CharRNN.from_torch takes the dict back."""
    spec = model.spec
    module = to_torch(model, "cpu")
    vocab = None if model.vocab is None else {"chars": list(model.vocab.chars),
                                              "byte_level": model.vocab.byte_level}
    return {"format": EXPORT_FORMAT, "format_version": 1,
            "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
            "model": {"cell": spec.cell, "vocab_size": spec.vocab_size,
                      "hidden_size": spec.hidden_size, "num_layers": spec.num_layers,
                      "nonlinearity": spec.nonlinearity, "dropout": float(spec.dropout),
                      "dtype": model.dtype.name},
            "vocab": vocab}


def _from_export(obj):
    """(state dict, vocab or None, (cell, nonlinearity, dropout)) of an export_dict."""
    if obj.get("format_version") != 1:
        raise ValueError(f"this fastrnn reads {EXPORT_FORMAT} format_version 1, got "
                         f"{obj.get('format_version')!r}")
    sd, desc, v = obj.get("state_dict"), obj.get("model"), obj.get("vocab")
    if not isinstance(sd, Mapping) or not isinstance(desc, Mapping):
        raise ValueError(f"a {EXPORT_FORMAT} dict needs 'state_dict' and 'model' dicts")
    vocab = None
    if v is not None:
        if not isinstance(v, Mapping) or not isinstance(v.get("chars"), (list, tuple)) or \
                not all(isinstance(c, str) and len(c) == 1 for c in v["chars"]):
            raise ValueError("the export's vocab must hold 'chars', a list of one-character "
                             "strings")
        vocab = Vocab("".join(v["chars"]), byte_level=bool(v.get("byte_level", False)))
    try:
        facts = (str(desc["cell"]), str(desc["nonlinearity"]), float(desc["dropout"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the export's model description is incomplete ({exc!r})") from None
    return sd, vocab, facts


def _as_state_dict(part, kind, what):
    if isinstance(part, kind):
        return part.state_dict()
    if isinstance(part, Mapping):
        return part
    names = "nn.RNN, nn.LSTM or nn.GRU" if kind is nn.RNNBase else f"nn.{kind.__name__}"
    raise TypeError(f"{what} must be a torch.{names} or its state dict, got "
                    f"{type(part).__name__}")


def _module_facts(rnn):
    """(cell, nonlinearity, dropout) of an nn.RNN / nn.LSTM / nn.GRU, checked to be one that
    maps onto CharRNN."""
    cell = next((c for c, kind in MODULES.items() if type(rnn) is kind), None)
    if cell is None:
        raise TypeError(f"the rnn must be a torch.nn.RNN, nn.LSTM or nn.GRU, got "
                        f"{type(rnn).__name__}")
    if rnn.bidirectional or getattr(rnn, "proj_size", 0):
        raise ValueError(f"only a one-directional {type(rnn).__name__} without projections "
                         f"maps onto CharRNN; got bidirectional={rnn.bidirectional}, "
                         f"proj_size={getattr(rnn, 'proj_size', 0)}")
    return cell, getattr(rnn, "nonlinearity", "tanh"), float(rnn.dropout)


def split_torch(obj):
    """(rnn state dict, head state dict, vocab or None, (cell, nonlinearity, dropout) or None)
    from what from_torch accepts; the facts come from a module (None for a state dict)."""
    if isinstance(obj, (tuple, list)):
        if len(obj) != 2:
            raise ValueError(f"expected a pair (nn.RNN/LSTM/GRU, nn.Linear), got {len(obj)} "
                             f"items")
        facts = _module_facts(obj[0]) if isinstance(obj[0], nn.Module) else None
        return (_as_state_dict(obj[0], nn.RNNBase, "the first item"),
                _as_state_dict(obj[1], nn.Linear, "the second item"), None, facts)
    if isinstance(obj, nn.Module):
        if not (hasattr(obj, "rnn") and hasattr(obj, "head")):
            raise TypeError(f"a {type(obj).__name__} module must have attributes `rnn` "
                            f"(nn.RNN/LSTM/GRU) and `head` (nn.Linear), like model.to_torch()")
        facts = _module_facts(obj.rnn)
        vocab = getattr(obj, "vocab", None)
        return (_as_state_dict(obj.rnn, nn.RNNBase, "module.rnn"),
                _as_state_dict(obj.head, nn.Linear, "module.head"),
                vocab if isinstance(vocab, Vocab) else None, facts)
    if isinstance(obj, Mapping) and obj.get("format") == EXPORT_FORMAT:
        sd, vocab, facts = _from_export(obj)
        rnn, head, _, _ = split_torch(sd)
        return rnn, head, vocab, facts
    if isinstance(obj, Mapping):
        unknown = [k for k in obj if not isinstance(k, str) or not k.startswith(("rnn.", "head."))]
        if unknown:
            raise ValueError(f"a state dict must hold only rnn.* and head.* entries (as "
                             f"model.to_torch().state_dict()); unexpected {unknown}")
        return ({k[4:]: v for k, v in obj.items() if k.startswith("rnn.")},
                {k[5:]: v for k, v in obj.items() if k.startswith("head.")}, None, None)
    raise TypeError(f"from_torch takes a module with `rnn` and `head`, a pair (nn.RNN/LSTM/GRU, "
                    f"nn.Linear) or a state dict; got {type(obj).__name__}")


def _numpy(value, name):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must hold floating-point values, got {value.dtype}")
    return value.detach().to("cpu", torch.float64).numpy()


def _layers(rnn):
    """The number of layers a recurrent state dict holds (weight_ih_l0 .. l{L-1}, no gaps), after
    refusing entries that CharRNN has no place for."""
    pattern = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)")
    found = {}
    extra = []
    for key in rnn:
        match = pattern.fullmatch(key)
        if match is None:
            extra.append(key)
        else:
            found.setdefault(int(match.group(2)), set()).add(match.group(1))
    if extra:
        raise ValueError(f"unexpected entries {extra}: only a one-directional nn.RNN/LSTM/GRU "
                         f"without projections and an nn.Linear map onto CharRNN")
    L = max(found, default=-1) + 1
    for k in range(max(L, 1)):
        for w in ("weight_ih", "weight_hh"):
            if w not in found.get(k, ()):
                raise ValueError(f"the rnn's state lacks '{w}_l{k}'")
    return L


def params_from_torch(obj, nonlinearity=None, dropout=None):
    """(ModelSpec, dict of its named tensors as float64 numpy arrays, source dtype name, vocab
    or None). nonlinearity/dropout: for a state dict (defaults "tanh" and 0); for a module they
    must agree with it when given."""
    rnn, head, vocab, facts = split_torch(obj)
    L = _layers(rnn)
    extra = [f"head.{k}" for k in head if k not in ("weight", "bias")]
    if extra:
        raise ValueError(f"unexpected entries {extra}: the head must be an nn.Linear")
    if "weight" not in head:
        raise ValueError("the head's state lacks 'weight'")
    w_hh = _numpy(rnn["weight_hh_l0"], "weight_hh_l0")
    w_ih = _numpy(rnn["weight_ih_l0"], "weight_ih_l0")
    if w_hh.ndim != 2 or 0 in w_hh.shape or w_hh.shape[0] % w_hh.shape[1] \
            or w_hh.shape[0] // w_hh.shape[1] not in GATES_TO_CELL:
        raise ValueError(f"weight_hh_l0 must be a (G*hidden_size, hidden_size) matrix with G = "
                         f"1 (rnn), 3 (gru) or 4 (lstm), got shape {w_hh.shape}")
    H = w_hh.shape[1]
    G = w_hh.shape[0] // H
    if w_ih.ndim != 2 or w_ih.shape[0] != G * H or w_ih.shape[1] == 0:
        raise ValueError(f"weight_ih_l0 must be a non-empty ({G * H}, vocab_size) matrix for "
                         f"weight_hh_l0 of shape {w_hh.shape}, got shape {w_ih.shape}")
    cell = GATES_TO_CELL[G]
    if facts is not None:
        if facts[0] != cell:
            raise ValueError(f"the {facts[0]} module's weights have {G} gate blocks")
        for name, given, known in (("nonlinearity", nonlinearity, facts[1]),
                                   ("dropout", dropout, facts[2])):
            if given is not None and given != known:
                raise ValueError(f"{name}={given!r} disagrees with the module's {known!r}")
        nonlinearity, dropout = facts[1], facts[2]
    spec = ModelSpec(cell, w_ih.shape[1], H, L, "tanh" if nonlinearity is None else nonlinearity,
                     0.0 if dropout is None else dropout)
    V = spec.vocab_size
    tensors = {}
    for k in range(L):
        GH, In = G * H, spec.input_size(k)
        for key, shape in ((f"weight_ih_l{k}", (GH, In)), (f"weight_hh_l{k}", (GH, H)),
                           (f"bias_ih_l{k}", (GH,)), (f"bias_hh_l{k}", (GH,))):
            if key in rnn:
                tensors[key] = _numpy(rnn[key], key)
                if tensors[key].shape != shape:
                    raise ValueError(f"{key} has shape {tensors[key].shape}; expected {shape} "
                                     f"for weight_hh_l0 of shape {w_hh.shape} and "
                                     f"vocab_size={V}")
            else:
                tensors[key] = np.zeros(shape)   # a module built with bias=False
    for key, shape in (("weight", (V, H)), ("bias", (V,))):
        if key in head:
            tensors[f"head.{key}"] = _numpy(head[key], key)
            if tensors[f"head.{key}"].shape != shape:
                raise ValueError(f"{key} has shape {tensors[f'head.{key}'].shape}; expected "
                                 f"{shape} for weight_ih_l0 of shape {w_ih.shape}")
        else:
            tensors[f"head.{key}"] = np.zeros(shape)
    params = {"Why": tensors.pop("head.weight"), "by": tensors.pop("head.bias")}
    if spec.legacy:
        params.update(Wxh=tensors["weight_ih_l0"], Whh=tensors["weight_hh_l0"],
                      bh=tensors["bias_ih_l0"] + tensors["bias_hh_l0"])
    else:
        params.update(tensors)
    dtype = "float64" if rnn["weight_hh_l0"].dtype == torch.float64 else "float32"
    return spec, params, dtype, vocab
