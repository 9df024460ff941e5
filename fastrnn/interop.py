"""PyTorch interop: a CharRNN as torch.nn.RNN + torch.nn.Linear, and back.

    module = model.to_torch()                # module.rnn: nn.RNN(V, H, nonlinearity="tanh")
    logits = module(ids)                     # ids (B,T) -> (B,T,V), equal to fastrnn's logits
    model2 = fastrnn.CharRNN.from_torch(module)                  # or module.state_dict(),
    model3 = fastrnn.CharRNN.from_torch((nn_rnn, nn_linear))     # or a pair of state dicts

The mapping: weight_ih_l0 = Wxh, weight_hh_l0 = Whh, bias_ih_l0 + bias_hh_l0 = bh (exported as
bh and zeros), head.weight = Why, head.bias = by.
"""
from collections.abc import Mapping

import numpy as np

from ._optional import require_torch
from .vocab import Vocab

torch = require_torch("fastrnn's PyTorch interop")
nn = torch.nn


class TorchCharRNN(nn.Module):
    """The CharRNN as plain PyTorch modules: `rnn` (batch_first nn.RNN over one-hot input) and
    `head` (nn.Linear from the hidden state to the logits)."""

    def __init__(self, vocab_size, hidden_size, *, dtype=None, device=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.rnn = nn.RNN(vocab_size, hidden_size, nonlinearity="tanh", batch_first=True, **kw)
        self.head = nn.Linear(hidden_size, vocab_size, **kw)
        self.vocab = None  # the fastrnn Vocab, when the model had one (not part of state_dict)

    def forward(self, ids, h0=None):
        """Logits (B,T,V) for int ids (B,T) (or (T,V) for ids (T,)); h0 (B,H) or (H,), zeros
        by default."""
        x = nn.functional.one_hot(ids.long(), self.rnn.input_size).to(self.head.weight.dtype)
        out, _ = self.rnn(x, None if h0 is None else h0.unsqueeze(0))
        return self.head(out)


def to_torch(model, device=None):
    """A TorchCharRNN holding copies of `model`'s parameters, in its dtype, on `device` (default:
    the model's device)."""
    p = model.get_params()
    dtype = torch.float32 if model.dtype == np.float32 else torch.float64
    module = TorchCharRNN(model.vocab_size, model.hidden_size, dtype=dtype,
                          device=device if device is not None else model.device)
    values = {"rnn.weight_ih_l0": p["Wxh"], "rnn.weight_hh_l0": p["Whh"],
              "rnn.bias_ih_l0": p["bh"], "rnn.bias_hh_l0": np.zeros_like(p["bh"]),
              "head.weight": p["Why"], "head.bias": p["by"]}
    module.load_state_dict({k: torch.from_numpy(v) for k, v in values.items()})
    module.vocab = model.vocab
    return module


def _as_state_dict(part, kind, what):
    if isinstance(part, kind):
        return part.state_dict()
    if isinstance(part, Mapping):
        return part
    raise TypeError(f"{what} must be a torch.nn.{kind.__name__} or its state dict, got "
                    f"{type(part).__name__}")


def _check_rnn_module(rnn):
    if not isinstance(rnn, nn.RNN):  # nn.GRU/nn.LSTM are RNNBase too but not this model
        raise TypeError(f"the rnn must be a torch.nn.RNN, got {type(rnn).__name__}")
    if rnn.nonlinearity != "tanh" or rnn.num_layers != 1 or rnn.bidirectional:
        raise ValueError(f"only a one-layer, one-directional tanh nn.RNN maps onto CharRNN; got "
                         f"nonlinearity={rnn.nonlinearity!r}, num_layers={rnn.num_layers}, "
                         f"bidirectional={rnn.bidirectional}")


def split_torch(obj):
    """(rnn state dict, head state dict, vocab or None) from what from_torch accepts. Modules
    are checked to be a one-layer, one-directional tanh nn.RNN; a state dict cannot say its
    nonlinearity and is taken to be tanh."""
    if isinstance(obj, (tuple, list)):
        if len(obj) != 2:
            raise ValueError(f"expected a pair (nn.RNN, nn.Linear), got {len(obj)} items")
        if isinstance(obj[0], nn.Module):
            _check_rnn_module(obj[0])
        return (_as_state_dict(obj[0], nn.RNN, "the first item"),
                _as_state_dict(obj[1], nn.Linear, "the second item"), None)
    if isinstance(obj, nn.Module):
        if not (hasattr(obj, "rnn") and hasattr(obj, "head")):
            raise TypeError(f"a {type(obj).__name__} module must have attributes `rnn` "
                            f"(nn.RNN) and `head` (nn.Linear), like model.to_torch()")
        _check_rnn_module(obj.rnn)
        vocab = getattr(obj, "vocab", None)
        return (_as_state_dict(obj.rnn, nn.RNN, "module.rnn"),
                _as_state_dict(obj.head, nn.Linear, "module.head"),
                vocab if isinstance(vocab, Vocab) else None)
    if isinstance(obj, Mapping):
        unknown = [k for k in obj if not k.startswith(("rnn.", "head."))]
        if unknown:
            raise ValueError(f"a state dict must hold only rnn.* and head.* entries (as "
                             f"model.to_torch().state_dict()); unexpected {unknown}")
        return ({k[4:]: v for k, v in obj.items() if k.startswith("rnn.")},
                {k[5:]: v for k, v in obj.items() if k.startswith("head.")}, None)
    raise TypeError(f"from_torch takes a module with `rnn` and `head`, a pair (nn.RNN, "
                    f"nn.Linear) or a state dict; got {type(obj).__name__}")


def _numpy(value, name):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must hold floating-point values, got {value.dtype}")
    return value.detach().to("cpu", torch.float64).numpy()


def params_from_torch(obj):
    """(dict of the five tensors as float64 numpy arrays, source dtype name, vocab or None)."""
    rnn, head, vocab = split_torch(obj)
    extra = [k for k in rnn if k not in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                         "bias_hh_l0")]
    extra += [f"head.{k}" for k in head if k not in ("weight", "bias")]
    if extra:
        raise ValueError(f"unexpected entries {extra}: only a one-layer, one-directional "
                         f"nn.RNN and an nn.Linear map onto CharRNN")
    for key in ("weight_ih_l0", "weight_hh_l0"):
        if key not in rnn:
            raise ValueError(f"the rnn's state lacks {key!r}")
    if "weight" not in head:
        raise ValueError("the head's state lacks 'weight'")
    Wxh = _numpy(rnn["weight_ih_l0"], "weight_ih_l0")
    if Wxh.ndim != 2 or 0 in Wxh.shape:
        raise ValueError(f"weight_ih_l0 must be a non-empty (hidden_size, vocab_size) matrix, "
                         f"got shape {Wxh.shape}")
    H, V = Wxh.shape
    expected = {"weight_hh_l0": (rnn, (H, H)), "bias_ih_l0": (rnn, (H,)),
                "bias_hh_l0": (rnn, (H,)), "weight": (head, (V, H)), "bias": (head, (V,))}
    found = {}
    for key, (state, shape) in expected.items():
        if key in state:
            found[key] = _numpy(state[key], key)
            if found[key].shape != shape:
                raise ValueError(f"{key} has shape {found[key].shape}; expected {shape} for "
                                 f"weight_ih_l0 of shape {(H, V)}")
    bh = found.get("bias_ih_l0", np.zeros(H)) + found.get("bias_hh_l0", np.zeros(H))
    params = {"Wxh": Wxh, "Whh": found["weight_hh_l0"], "Why": found["weight"], "bh": bh,
              "by": found.get("bias", np.zeros(V))}
    dtype = "float64" if rnn["weight_hh_l0"].dtype == torch.float64 else "float32"
    return params, dtype, vocab
