"""A model's single stateful step as an ONNX graph (`fastrnn export --format onnx`), built node
by node with onnx.helper, so that it needs neither torch nor its exporter.

The graph (opset 17, float32 whatever the model's dtype):
    inputs   char  int64 (1,)        the input character's id
             h     float32 (L,1,H)   each layer's hidden state (min-char-rnn's model: L = 1)
             c     float32 (L,1,H)   lstm only: each layer's cell state
    outputs  logits  float32 (1,V)   the next character's logits (softmax: its probabilities)
             h_out, c_out             the new states, in the order of the state inputs
Per layer k, PyTorch's equations (see fastrnn.backends.numpy_backend): layer 0's input product
is a Gather of one row of W_ih^T (the input is one-hot), the others Gemm; then the cell.
"""
import json
import os
import tempfile

import numpy as np

OPSET = 17
IR_VERSION = 8  # the oldest that carries opset 17: loadable by older runtimes too


def _require_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"export --format onnx needs the onnx package ({exc}); install it with "
                          f'`pip install onnx` (or pip install "fastrnn[onnx]")') from None
    return onnx


def state_names(spec):
    """The state inputs' names, in order: ("h",) or ("h", "c") for lstm."""
    return ("h", "c") if spec.cell == "lstm" else ("h",)


def build_step_graph(model):
    """The onnx.ModelProto of `model`'s one step (see the module docstring)."""
    onnx = _require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    spec = model.spec
    V, H, L, cell = spec.vocab_size, spec.hidden_size, spec.num_layers, spec.cell
    relu = spec.nonlinearity == "relu"
    params = {k: np.asarray(v, dtype=np.float32) for k, v in model.get_params().items()}
    nodes, inits = [], []
    count = [0]

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, **attrs):
        count[0] += 1
        out = f"{op.lower()}_{count[0]}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def gates(x, n):  # x (1, n*H) split into n (1,H) blocks
        count[0] += 1
        outs = [f"split_{count[0]}_{i}" for i in range(n)]
        nodes.append(helper.make_node("Split", [x, const(f"split_sizes_{count[0]}",
                                                         np.full(n, H, np.int64))],
                                      outs, axis=1))
        return outs

    const("axis0", np.array([0], np.int64))
    zero_bias = np.zeros(spec.gates * H, np.float32)
    x, h_new, c_new = None, [], []
    for k in range(L):
        w_ih, w_hh, b_ih, b_hh = spec.layer_names(k)
        bih, bhh = params[b_ih], (params[b_hh] if b_hh is not None else zero_bias)
        # the recurrent bias goes inside r's product for gru; elsewhere it joins the input's
        b_in = bih if cell == "gru" else bih + bhh
        b_rec = bhh if cell == "gru" else zero_bias
        if k == 0:  # one-hot input: a row of W_ih^T, with the bias added to every row
            table = const(f"l{k}_wih_t_plus_b", (params[w_ih].T + b_in).astype(np.float32))
            gx = node("Gather", [table, "char"], axis=0)                      # (1, G*H)
        else:
            gx = node("Gemm", [x, const(f"l{k}_wih", params[w_ih]), const(f"l{k}_bih", b_in)],
                      transB=1)
        h_prev = node("Gather", ["h", const(f"l{k}", np.array(k, np.int64))], axis=0)  # (1,H)
        gh = node("Gemm", [h_prev, const(f"l{k}_whh", params[w_hh]),
                           const(f"l{k}_bhh", b_rec)], transB=1)
        if cell == "rnn":
            h = node("Relu" if relu else "Tanh", [node("Add", [gx, gh])])
        elif cell == "lstm":
            i, f, g, o = gates(node("Add", [gx, gh]), 4)
            c_prev = node("Gather", ["c", f"l{k}"], axis=0)
            c = node("Add", [node("Mul", [node("Sigmoid", [f]), c_prev]),
                             node("Mul", [node("Sigmoid", [i]), node("Tanh", [g])])])
            h = node("Mul", [node("Sigmoid", [o]), node("Tanh", [c])])
            c_new.append(node("Unsqueeze", [c, "axis0"]))
        else:  # gru: h = (1 - z) * n + z * h_prev, written n + z * (h_prev - n)
            xr, xz, xn = gates(gx, 3)
            hr, hz, hn = gates(gh, 3)
            r = node("Sigmoid", [node("Add", [xr, hr])])
            z = node("Sigmoid", [node("Add", [xz, hz])])
            n = node("Tanh", [node("Add", [xn, node("Mul", [r, hn])])])
            h = node("Add", [n, node("Mul", [z, node("Sub", [h_prev, n])])])
        h_new.append(node("Unsqueeze", [h, "axis0"]))
        x = h
    nodes.append(helper.make_node("Gemm", [x, const("why", params["Why"]),
                                           const("by", params["by"])], ["logits"], transB=1))
    outputs = [("h_out", h_new)] + ([("c_out", c_new)] if cell == "lstm" else [])
    for name, parts in outputs:
        nodes.append(helper.make_node("Concat", parts, [name], axis=0))

    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("char", TensorProto.INT64, [1])]
    inputs += [helper.make_tensor_value_info(s, f32, [L, 1, H]) for s in state_names(spec)]
    outs = [helper.make_tensor_value_info("logits", f32, [1, V])]
    outs += [helper.make_tensor_value_info(f"{s}_out", f32, [L, 1, H])
             for s in state_names(spec)]
    graph = helper.make_graph(nodes, "fastrnn_step", inputs, outs, initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="fastrnn")
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto)
    return proto


def vocab_json(model):
    """What a sampler needs besides the graph: the characters (id order), the state inputs'
    names and shape."""
    spec = model.spec
    return {"format": "fastrnn-onnx-step", "chars": list(model.vocab.chars),
            "byte_level": model.vocab.byte_level, "cell": spec.cell,
            "num_layers": spec.num_layers, "hidden_size": spec.hidden_size,
            "vocab_size": spec.vocab_size, "inputs": ["char", *state_names(spec)],
            "state_shape": [spec.num_layers, 1, spec.hidden_size]}


def vocab_path(path):
    """step.onnx -> step.vocab.json (the name's last suffix replaced)."""
    root, ext = os.path.splitext(os.fspath(path))
    return (root if ext else os.fspath(path)) + ".vocab.json"


def _write_atomic(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def export_onnx(model, path):
    """Writes `model`'s step to `path` (ONNX) and, when it has a vocab, the JSON of vocab_json
    beside it (vocab_path). Returns the paths written."""
    proto = build_step_graph(model)
    _write_atomic(os.fspath(path), proto.SerializeToString())
    written = [os.fspath(path)]
    if model.vocab is not None:
        side = vocab_path(path)
        _write_atomic(side, json.dumps(vocab_json(model), ensure_ascii=False).encode("utf-8"))
        written.append(side)
    return written
