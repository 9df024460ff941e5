"""The model description and the one flat layout of its parameters, read by every backend, the
compiled kernels, the checkpoints and PyTorch interop. Nothing else restates a shape or offset.

A model is a `ModelSpec`: cell ("rnn", "lstm", "gru"), vocab_size V, hidden_size H, num_layers L,
nonlinearity (rnn only) and dropout. Its parameters live in one flat buffer, slot after slot:

  min-char-rnn's model (rnn, tanh, one layer):  Wxh (H,V) | Whh (H,H) | Why (V,H) | bh (H,) | by (V,)
  every other model, per layer k = 0..L-1:      weight_ih_l{k} (G*H, V if k == 0 else H)
                                                weight_hh_l{k} (G*H, H)
                                                bias_ih_l{k} (G*H,)  bias_hh_l{k} (G*H,)
                                  then the head: Why (V,H) | by (V,)

with G = 1, 4, 3 for rnn, lstm, gru and PyTorch's gate order (lstm i, f, g, o; gru r, z, n), so
tensors move to and from torch.nn.RNN/LSTM/GRU unchanged. The first layout is min-char-rnn's and
the compiled vanilla kernels' (unchanged, unpadded); in the second every slot starts at a multiple
of ALIGN_VALUES values, so each matrix starts a 64-byte line in an aligned buffer. The padding
values stay zero: their gradients are zero and every optimizer leaves a zero there.
"""
import math
import numbers
from dataclasses import dataclass

import numpy as np

CELLS = {"rnn": 1, "lstm": 4, "gru": 3}   # cell -> gates G
NONLINEARITIES = ("tanh", "relu")
ALIGN_VALUES = 16                          # slot offsets of the stacked layout: 64 bytes of float32
LEGACY_NAMES = ("Wxh", "Whh", "Why", "bh", "by")


@dataclass(frozen=True)
class Slot:
    """One named tensor of the flat buffer: values [offset, offset + size) are `shape`,
    row-major."""
    name: str
    shape: tuple
    offset: int

    @property
    def size(self):
        return math.prod(self.shape)


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: everything needed to lay out, build, save and convert it."""
    cell: str
    vocab_size: int
    hidden_size: int
    num_layers: int = 1
    nonlinearity: str = "tanh"
    dropout: float = 0.0

    def __post_init__(self):
        if not isinstance(self.cell, str) or self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}, "
                             f"got {self.cell!r}")
        object.__setattr__(self, "vocab_size", _positive_int(self.vocab_size, "vocab_size"))
        object.__setattr__(self, "hidden_size", _positive_int(self.hidden_size, "hidden_size"))
        object.__setattr__(self, "num_layers", _positive_int(self.num_layers, "num_layers"))
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}")
        if self.cell != "rnn" and self.nonlinearity != "tanh":
            raise ValueError(f"nonlinearity={self.nonlinearity!r} is for cell='rnn' only "
                             f"(an {self.cell} has fixed gate nonlinearities)")
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {p!r}")
        object.__setattr__(self, "dropout", float(p))

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def gates(self):
        """G: the gate blocks of each layer's matrices (1, 4, 3)."""
        return CELLS[self.cell]

    @property
    def legacy(self):
        """Whether this is min-char-rnn's model, kept with its names, layout and kernels."""
        return self.cell == "rnn" and self.num_layers == 1 and self.nonlinearity == "tanh"

    @property
    def state_count(self):
        """Arrays of carried state: (h, c) for lstm, h otherwise."""
        return 2 if self.cell == "lstm" else 1

    def input_size(self, k):
        return self.vocab_size if k == 0 else self.hidden_size

    def layer_names(self, k):
        """The four names of layer k's tensors: (weight_ih, weight_hh, bias_ih, bias_hh);
        min-char-rnn's model has no separate recurrent bias (None)."""
        if self.legacy:
            return ("Wxh", "Whh", "bh", None)
        return (f"weight_ih_l{k}", f"weight_hh_l{k}", f"bias_ih_l{k}", f"bias_hh_l{k}")

    # -- the layout ----------------------------------------------------------------------------
    def shapes(self):
        """{name: shape} in layout order."""
        V, H, GH = self.vocab_size, self.hidden_size, self.gates * self.hidden_size
        if self.legacy:
            return {"Wxh": (H, V), "Whh": (H, H), "Why": (V, H), "bh": (H,), "by": (V,)}
        out = {}
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_names(k)
            out[w_ih] = (GH, self.input_size(k))
            out[w_hh] = (GH, H)
            out[b_ih] = (GH,)
            out[b_hh] = (GH,)
        out["Why"] = (V, H)
        out["by"] = (V,)
        return out

    def layout(self):
        """The slots, in buffer order."""
        slots, offset = [], 0
        for name, shape in self.shapes().items():
            if not self.legacy:
                offset = -(-offset // ALIGN_VALUES) * ALIGN_VALUES
            slots.append(Slot(name, tuple(shape), offset))
            offset += math.prod(shape)
        return tuple(slots)

    @property
    def names(self):
        return tuple(self.shapes())

    @property
    def num_params(self):
        """Length of the flat buffer (padding included)."""
        last = self.layout()[-1]
        return last.offset + last.size

    @property
    def num_weights(self):
        """Trainable values (padding excluded)."""
        return sum(s.size for s in self.layout())

    def offsets(self):
        """The kernels' table: int64 [w_ih, w_hh, b_ih, b_hh] offsets per layer (b_hh -1 when
        there is none), then Why's and by's."""
        at = {s.name: s.offset for s in self.layout()}
        table = []
        for k in range(self.num_layers):
            table += [at[n] if n is not None else -1 for n in self.layer_names(k)]
        table += [at["Why"], at["by"]]
        return np.array(table, dtype=np.int64)

    def describe(self):
        """A short human description, e.g. "2-layer lstm, 128 units"."""
        layers = f"{self.num_layers}-layer " if self.num_layers > 1 else ""
        kind = "rnn (relu)" if self.cell == "rnn" and self.nonlinearity == "relu" else self.cell
        return f"{layers}{kind}, {self.hidden_size} units"

    def as_dict(self):
        return {"cell": self.cell, "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "nonlinearity": self.nonlinearity,
                "dropout": self.dropout}


def unflatten(flat, spec):
    """Named views (no copies) into a flat buffer, in layout order."""
    return {s.name: flat[s.offset:s.offset + s.size].reshape(s.shape) for s in spec.layout()}
