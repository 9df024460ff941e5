"""Bad input to every public entry point raises a clear Python exception, never a crash."""
import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels as K
from conftest import CPU_BACKENDS

H, V, B, T = 8, 6, 2, 5


@pytest.fixture(params=CPU_BACKENDS)
def model(request):
    return fastrnn.CharRNN(V, H, backend=request.param, dtype="float64")


@pytest.mark.parametrize("kwargs,match", [
    (dict(vocab_size=0), "vocab_size"), (dict(vocab_size=-3), "vocab_size"),
    (dict(vocab_size=2.5), "vocab_size"), (dict(hidden_size=0), "hidden_size"),
    (dict(hidden_size=True), "hidden_size"), (dict(dtype="int32"), "dtype"),
    (dict(dtype="float16"), "dtype"), (dict(backend="tensorflow"), "unknown backend"),
    (dict(device="cuda"), "CPU only"),
])
def test_constructor(kwargs, match):
    args = {"vocab_size": V, "hidden_size": H, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        fastrnn.CharRNN(args.pop("vocab_size"), args.pop("hidden_size"), **args)


def test_set_params(model):
    good = model.get_params()
    with pytest.raises(ValueError, match="keys"):
        model.set_params({k: v for k, v in good.items() if k != "by"})
    with pytest.raises(ValueError, match=r"Whh.*shape"):
        model.set_params({**good, "Whh": np.zeros((H, H + 1))})
    with pytest.raises(ValueError, match="NaN"):
        model.set_params({**good, "bh": np.full(H, np.nan)})
    with pytest.raises(TypeError):
        model.set_params({**good, "by": np.array(["a"] * V)})
    with pytest.raises(TypeError):
        model.set_params([1, 2])
    np.testing.assert_array_equal(model.get_params()["Whh"], good["Whh"])  # nothing changed


@pytest.mark.parametrize("x,y,h0,exc,match", [
    (np.zeros((B, T), np.float64), np.zeros((B, T), int), None, TypeError, "integer"),
    (np.zeros((B, T), bool), np.zeros((B, T), int), None, TypeError, "integer"),
    (np.zeros((B, T, 1), int), np.zeros((B, T, 1), int), None, ValueError, "dimension"),
    (np.zeros((B, 0), int), np.zeros((B, 0), int), None, ValueError, "empty"),
    (np.full((B, T), V), np.zeros((B, T), int), None, ValueError, r"\[0, 6\)"),
    (np.zeros((B, T), int), np.full((B, T), -1), None, ValueError, r"\[0, 6\)"),
    (np.zeros((B, T), int), np.zeros((B, T + 1), int), None, ValueError, "does not match"),
    (np.zeros(T, int), np.zeros((1, T), int), None, ValueError, "does not match"),
    (np.zeros((B, T), int), np.zeros((B, T), int), np.zeros(H), ValueError, "h0 has shape"),
    (np.zeros((B, T), int), np.zeros((B, T), int), np.zeros((B, H + 1)), ValueError, "h0"),
    (np.zeros((B, T), int), np.zeros((B, T), int), np.full((B, H), np.inf), ValueError, "NaN"),
    (np.zeros((B, T), int), None, None, ValueError, "targets"),
])
@pytest.mark.parametrize("method", ["loss_and_grads", "loss"])
def test_loss_and_grads(model, x, y, h0, exc, match, method):
    with pytest.raises(exc, match=match):
        getattr(model, method)(x, y, h0)


def test_non_contiguous_and_readonly_inputs_are_fine_at_the_api(model):
    x = np.arange(2 * B * T).reshape(B, 2 * T)[:, ::2] % V  # strided view
    y = np.asfortranarray(np.ones((B, T), dtype=np.int64))
    y.flags.writeable = False
    loss, _, h = model.loss_and_grads(x, y)
    assert np.isfinite(loss) and h.shape == (B, H)


def test_generate_and_optimizer(model):
    with pytest.raises(ValueError, match="n must"):
        model.generate(-1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(5, temperature=-1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(5, temperature=float("nan"))
    with pytest.raises(ValueError, match="prime_ids"):
        model.generate(5, prime_ids=[0, V])
    with pytest.raises(ValueError, match="h0"):
        model.generate(5, h0=np.zeros(H + 1))
    for kw in [dict(lr=0), dict(lr=-1), dict(lr=float("nan")), dict(eps=0), dict(clip=0),
               dict(clip=-5), dict(lr=float("inf"))]:
        with pytest.raises(ValueError):
            fastrnn.Adagrad(model, **kw)
    opt = fastrnn.Adagrad(model)
    with pytest.raises(ValueError, match="keys"):
        opt.step({"Wxh": np.zeros((H, V))})
    with pytest.raises(ValueError, match="shape"):
        opt.step({**model.get_params(), "by": np.zeros(V + 1)})


BAD_SIZES = [0, -1, 2.0, 1.5, float("nan"), float("inf"), True, None, "8"]


@pytest.mark.parametrize("value", BAD_SIZES)
def test_bad_sizes_at_the_api(value):
    with pytest.raises(ValueError, match="hidden_size"):
        fastrnn.CharRNN(V, value)
    with pytest.raises(ValueError, match="vocab_size"):
        fastrnn.CharRNN(value, H)
    m = fastrnn.CharRNN(V, H, backend="numpy")
    ids = np.arange(100) % V
    with pytest.raises(ValueError, match="seq_length"):
        fastrnn.Trainer(m, ids, seq_length=value)
    with pytest.raises(ValueError, match="batch_size"):
        fastrnn.Trainer(m, ids, batch_size=value)
    if value != 0:  # generate(0) is fine: no ids
        with pytest.raises(ValueError, match="n must"):
            m.generate(value)


def test_numpy_integer_sizes_are_fine():
    m = fastrnn.CharRNN(np.int64(V), np.int32(H), backend="cython")
    assert (m.vocab_size, m.hidden_size) == (V, H)
    t = fastrnn.Trainer(m, np.arange(100) % V, seq_length=np.int16(5), batch_size=np.uint8(2))
    assert np.isfinite(t.step())
    assert m.generate(np.int64(4), seed=0).shape == (4,)


@pytest.mark.parametrize("key,value", [
    (k, v) for k in ("lr", "eps", "clip")
    for v in [0, 0.0, -1.0, float("nan"), -float("inf"), "0.1", True]
] + [("lr", float("inf")), ("eps", float("inf")), ("lr", None), ("eps", None)])
def test_bad_optimizer_hyperparameters_at_the_api(model, key, value):
    with pytest.raises(ValueError, match=key):
        fastrnn.Adagrad(model, **{key: value})


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_clip_inf_means_no_clipping(backend):
    rng = np.random.default_rng(0)
    grads = {k: rng.normal(0, 50, v.shape) for k, v in
             fastrnn.CharRNN(V, H, backend=backend).get_params().items()}
    results = []
    for clip in (float("inf"), None):
        m = fastrnn.CharRNN(V, H, backend=backend, dtype="float64", seed=3)
        fastrnn.Adagrad(m, clip=clip).step(grads)
        results.append(m.get_params())
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("key,value", [("lr", 1e-50), ("eps", 1e-50), ("lr", 1e300),
                                       ("eps", 1e300), ("clip", 1e-50)])
def test_hyperparameters_that_float32_cannot_hold(backend, key, value):
    """1e-50 is 0 and 1e300 is inf as a float32: the step is refused (on every backend alike)
    before anything changes, rather than filling the parameters with NaN."""
    m = fastrnn.CharRNN(V, H, backend=backend, dtype="float32", seed=1)
    before = m.get_params()
    opt = fastrnn.Adagrad(m, **{key: value})
    trainer = fastrnn.Trainer(m, np.arange(60) % V, seq_length=5, optimizer=opt)
    with pytest.raises(ValueError, match=f"{key}=.*float32"):
        trainer.step()
    with pytest.raises(ValueError, match=f"{key}=.*float32"):
        opt.step(m.loss_and_grads([0, 1], [1, 2])[1])
    assert all(np.array_equal(v, before[k]) for k, v in m.get_params().items())
    assert not trainer.h.any()  # the trainer's state did not move either
    m64 = fastrnn.CharRNN(V, H, backend=backend, dtype="float64", seed=1)  # float64 holds them
    fastrnn.Trainer(m64, np.arange(60) % V, seq_length=5,
                    optimizer=fastrnn.Adagrad(m64, **{key: value})).step()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_temperature_edges(backend):
    m = fastrnn.CharRNN(V, H, backend=backend, dtype="float32", seed=1)
    m.set_params({k: np.random.default_rng(2).normal(0, 1, v.shape)
                  for k, v in m.get_params().items()})
    for bad in [-1, -1e-300, float("nan"), float("inf"), -float("inf"), "1", True, None]:
        with pytest.raises(ValueError, match="temperature"):
            m.generate(5, temperature=bad)
    greedy = m.generate(20, greedy=True)
    # 0, and anything that is 0 as a float32, is the greedy limit
    for t in (0, 0.0, 1e-50, 1e-300):
        np.testing.assert_array_equal(m.generate(20, temperature=t, seed=3), greedy)
    with pytest.raises(ValueError, match="overflows float32"):
        m.generate(5, temperature=1e300)
    ids = m.generate(200, temperature=1e30, seed=0)  # effectively uniform, and in range
    assert ids.min() >= 0 and ids.max() < V and len(set(ids.tolist())) == V


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_values_that_overflow_float32_are_refused(backend):
    m = fastrnn.CharRNN(V, H, backend=backend, dtype="float32")
    good = m.get_params()
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.set_params({**good, "Why": np.full((V, H), 1e300)})
    np.testing.assert_array_equal(m.get_params()["Why"], good["Why"])
    for h0 in (np.full(H, 1e39), np.full(H, -1e300)):
        with pytest.raises(ValueError, match="h0"):
            m.loss_and_grads([0, 1], [1, 2], h0)
        with pytest.raises(ValueError, match="h0"):
            m.generate(3, h0=h0)
    m64 = fastrnn.CharRNN(V, H, backend=backend, dtype="float64")
    assert np.isfinite(m64.loss_and_grads([0, 1], [1, 2], np.full(H, 1e300))[0])


def test_trainer(model):
    ids = np.arange(100) % V
    with pytest.raises(ValueError, match="seq_length"):
        fastrnn.Trainer(model, ids, seq_length=0)
    with pytest.raises(ValueError, match="batch_size"):
        fastrnn.Trainer(model, ids, batch_size=-2)
    with pytest.raises(ValueError, match="needs at least"):
        fastrnn.Trainer(model, ids[:10], seq_length=25)
    with pytest.raises(ValueError, match="empty"):
        fastrnn.Trainer(model, [])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        fastrnn.Trainer(model, ids + 1)
    with pytest.raises(ValueError, match="another model"):
        fastrnn.Trainer(model, ids, optimizer=fastrnn.Adagrad(fastrnn.CharRNN(V, H)))
    with pytest.raises(ValueError, match="iterations"):
        fastrnn.Trainer(model, ids).fit(-1)


def test_divergence_is_reported():
    m = fastrnn.CharRNN(V, H, backend="cython")
    opt = fastrnn.Adagrad(m, lr=1e38)  # float32 weights of 1e38 overflow the logits
    with pytest.raises(FloatingPointError, match="diverged"):
        fastrnn.Trainer(m, np.arange(60) % V, seq_length=5, optimizer=opt).fit(5)


# -- the compiled kernels' own wrappers check everything before releasing the GIL -------------

def kernel_args(dtype=np.float64, B=B, T=T):
    P = np.zeros(K.num_params(H, V), dtype)
    return dict(params=P, grads=np.zeros_like(P), inputs=np.zeros((B, T), np.int32),
                targets=np.zeros((B, T), np.int32), h=np.zeros((B, H), dtype),
                work=np.zeros(K.work_size(B, T, H, V), dtype))


def call(**over):
    a = {**kernel_args(), **over}
    return K.loss_and_grads(a["params"], a["grads"], a["inputs"], a["targets"], a["h"],
                            a["work"], H, V)


@pytest.mark.parametrize("over,exc", [
    (dict(inputs=np.full((B, T), V, np.int32)), ValueError),
    (dict(inputs=np.full((B, T), -1, np.int32)), ValueError),
    (dict(targets=np.full((B, T), 2**31 - 1, np.int32)), ValueError),
    (dict(inputs=np.zeros((B, T), np.int64)), ValueError),          # wrong id dtype
    (dict(inputs=np.zeros((B, 2 * T), np.int32)[:, ::2]), ValueError),  # non-contiguous
    (dict(inputs=np.zeros((B, 0), np.int32), targets=np.zeros((B, 0), np.int32)), ValueError),
    (dict(targets=np.zeros((B, T + 1), np.int32)), ValueError),
    (dict(params=np.zeros(7)), ValueError),
    (dict(grads=np.zeros(3)), ValueError),
    (dict(params=np.zeros(K.num_params(H, V), np.float32)), (ValueError, TypeError)),
    (dict(h=np.zeros((B + 1, H))), ValueError),
    (dict(h=np.zeros((B, H))[:, ::-1]), ValueError),
    (dict(work=np.zeros(10)), ValueError),
    (dict(targets=None), ValueError),
])
def test_kernel_wrapper_rejects(over, exc):
    with pytest.raises(exc):
        call(**over)


def test_kernel_wrapper_readonly_and_ok():
    a = kernel_args()
    a["h"].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        call(h=a["h"])
    assert np.isfinite(call())


def test_other_kernel_wrappers_reject():
    P = np.zeros(K.num_params(H, V))
    with pytest.raises(ValueError):
        K.adagrad_update(P, np.zeros(3), np.zeros_like(P), 0.1, 1e-8, 5.0)
    with pytest.raises(ValueError):
        K.adagrad_update(P, P.copy(), np.zeros_like(P), -0.1, 1e-8, 5.0)
    with pytest.raises(ValueError):
        K.adagrad_update(P, P.copy(), np.zeros_like(P), 0.1, 1e-8, float("nan"))
    args = dict(params=P, h=np.zeros(H), uniforms=np.zeros(10), temperature=1.0, greedy=False,
                out=np.zeros(10, np.int32), work=np.zeros(K.sample_work_size(H, V)), hidden_size=H, vocab_size=V)
    for over in [dict(h=np.zeros(H + 1)), dict(uniforms=np.zeros(3)), dict(work=np.zeros(2)),
                 dict(temperature=0.0), dict(hidden_size=H + 1), dict(vocab_size=0)]:
        with pytest.raises(ValueError):
            K.sample(**{**args, **over})
    with pytest.raises(ValueError):
        K.train_step(P, P.copy(), P.copy(), np.zeros((1, 3), np.int32), np.zeros((1, 3), np.int32),
                     np.zeros((1, H)), np.zeros(K.work_size(1, 3, H, V)), H, V, 99, 0.1, 1e-8, 5.0)


def test_missing_compiled_module_gives_one_clear_error(monkeypatch):
    from fastrnn.backends import cython_backend
    monkeypatch.setattr(cython_backend, "_kernels", None)
    monkeypatch.setattr(cython_backend, "_IMPORT_ERROR", ImportError("no module"))
    with pytest.raises(ImportError, match="pip install"):
        fastrnn.CharRNN(V, H, backend="cython")
    assert "cython" not in fastrnn.available_backends()
    assert fastrnn.CharRNN(V, H, backend="numpy").loss_and_grads([1, 2], [2, 3])[0] > 0


def test_threads_setting():
    before = fastrnn.get_num_threads()
    try:
        assert fastrnn.set_num_threads(1) == 1 and fastrnn.get_num_threads() == 1
        for bad in (0, -1, 1.5, "2"):
            with pytest.raises(ValueError, match="threads"):
                fastrnn.set_num_threads(bad)
        with pytest.warns(UserWarning, match="cores"):
            fastrnn.set_num_threads(10_000)
    finally:
        fastrnn.set_num_threads(before)


def test_the_default_threads_come_from_the_environment_read_once():
    """Before any set_num_threads: $FASTRNN_NUM_THREADS, else the cores; read at the first call
    (every training step asks), and read again by set_num_threads()."""
    import os
    import subprocess
    import sys
    code = ("import os, fastrnn; a = fastrnn.get_num_threads(); "
            "os.environ['FASTRNN_NUM_THREADS'] = '1'; b = fastrnn.get_num_threads(); "
            "c = fastrnn.set_num_threads(); print(a, b, c, fastrnn.get_num_threads())")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for env, want in (("2", (2, 2, 1, 1)), (None, (cores, cores, 1, 1))):
        environ = {k: v for k, v in os.environ.items() if k != "FASTRNN_NUM_THREADS"}
        if env is not None:
            environ["FASTRNN_NUM_THREADS"] = env
        out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                             text=True, check=True).stdout.split()
        assert tuple(map(int, out)) == want, (env, out)


def test_a_bad_thread_count_in_the_environment_is_refused(tmp_path):
    """$FASTRNN_NUM_THREADS that is not a positive integer (issue 17: -5 was taken) is refused
    with one line, by whichever call reads it first, and by the command line."""
    import os
    import subprocess
    import sys
    code = ("import fastrnn\n"
            "for call in (fastrnn.get_num_threads, fastrnn.set_num_threads,\n"
            "             lambda: fastrnn.CharRNN(4, 3).loss([1, 2], [2, 3])):\n"
            "    try:\n"
            "        call()\n"
            "    except ValueError as exc:\n"
            "        print(exc)\n")
    (tmp_path / "d.txt").write_text("abcd" * 20)
    for env in ("-5", "0", "1.5", "two", ""):
        environ = dict(os.environ, FASTRNN_NUM_THREADS=env)
        out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                             text=True, check=True, cwd=tmp_path).stdout.splitlines()
        assert out == [f"FASTRNN_NUM_THREADS must be a positive integer, got {env!r}"] * 3, out
        cli = subprocess.run([sys.executable, "-m", "fastrnn", "train", "--data", "d.txt",
                              "--iterations", "1", "--seq-length", "4", "--sample-length", "0"],
                             env=environ, cwd=tmp_path, capture_output=True, text=True)
        assert cli.returncode == 2 and cli.stderr == (
            f"fastrnn: error: FASTRNN_NUM_THREADS must be a positive integer, got {env!r}\n")


def test_the_thread_setting_reaches_the_kernels():
    """A model's batched step runs on the threads set: bit for bit the kernel call with that
    many threads, and (the split sums gradients in another order) not the one-thread result."""
    from fastrnn.backends.cython_backend import _kernels as CK
    B, T, H, V = 16, 50, 64, 20
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    before = fastrnn.get_num_threads()
    try:
        grads = {}
        for n in (1, 2):
            fastrnn.set_num_threads(n)
            model = fastrnn.CharRNN(V, H, backend="cython", dtype="float32", seed=0)
            _, g, _ = model.loss_and_grads(x, y, np.zeros((B, H), np.float32))
            flat = np.concatenate([g[k].ravel() for k in ("Wxh", "Whh", "Why", "bh", "by")])
            ref = np.empty_like(flat)
            CK.loss_and_grads(model._backend.flat, ref, x.astype(np.intc), y.astype(np.intc),
                              np.zeros((B, H), np.float32),
                              np.empty(CK.work_size(B, T, H, V, n), np.float32), H, V,
                              threads=n)
            assert np.array_equal(flat, ref), n
            grads[n] = flat
        assert CK.chunk_parts(B, T, H, V, 2) == 2
        assert not np.array_equal(grads[1], grads[2])
        assert np.allclose(grads[1], grads[2], rtol=1e-4, atol=1e-6)
    finally:
        fastrnn.set_num_threads(before)


# -- every kernel wrapper x every buffer argument x every kind of damage ----------------------
# (tests/kernelspec.py restates the wrappers' contract; `run_and_check` holds each call to it:
# refused with a Python exception and nothing written, or accepted and equal to the reference)

import kernelspec as S  # noqa: E402

KB, KT, KH, KV, KN = 2, 3, 4, 5, 3  # every axis > 1, so strided/reversed/Fortran views are not
#                                     C-contiguous and must be refused


def _damage_cases():
    for name in S.WRAPPERS:
        written = S.WRAPPERS[name][1]
        for arg in S.buffers(name):
            for damage in S.DAMAGE:
                if damage == "alias":
                    if arg not in S.float_buffers(name):
                        continue
                    for partner in S.float_buffers(name):
                        if partner != arg and (arg in written or partner in written):
                            yield name, arg, damage, partner
                elif damage == "dtype":
                    for other in S.OTHER_DTYPES:
                        yield name, arg, damage, other
                else:
                    yield name, arg, damage, None


def _must_refuse(name, arg, damage, other):
    """Damage that no call can survive (the rest is judged by S.verdict)."""
    written = S.WRAPPERS[name][1]
    if damage == "dtype":
        want = (S.ID if arg in ("inputs", "targets", "out") else S.U if arg == "uniforms"
                else None)
        return want is not None and np.dtype(other) != want
    if damage in ("ndim_up", "ndim_down", "strided", "reversed", "alias"):
        return True
    if damage == "fortran":
        return arg in ("inputs", "targets", "h", "dh0") and name != "sample"
    if damage == "readonly":
        return arg in written
    if damage == "none":  # optional, and not a state buffer the default optimizer (Adam) uses
        return arg not in S.WRAPPERS[name][2] or arg in S.STATES
    if damage in ("short", "long"):
        return arg not in ("work", "uniforms", "out") and not (damage == "long" and arg == "out")
    return False


def _run_all(cases):
    """Runs S.run_and_check on each (label, name, call args, must_refuse) and reports every
    failure at once."""
    failures = []
    for label, name, a, must_refuse in cases:
        try:
            if must_refuse:
                assert S.verdict(name, a) == "invalid", "the contract should refuse this"
            exc = S.run_and_check(name, a)
            if must_refuse:
                assert exc is not None
        except AssertionError as err:
            failures.append(f"{label}: {err}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name,arg", [(n, a) for n in S.WRAPPERS for a in S.buffers(n)])
def test_kernel_wrappers_with_one_damaged_buffer(name, arg):
    cases = []
    for dtype in ("float32", "float64"):
        for _, _, damage, other in (c for c in _damage_cases() if c[:2] == (name, arg)):
            a = S.make_call(name, dtype, KB, KT, KH, KV, KN, seed=1,
                            damage=[(arg, damage, other)], with_dh0=True)
            must = _must_refuse(name, arg, damage, other) and not (
                damage == "dtype" and arg not in ("inputs", "targets", "out", "uniforms"))
            cases.append((f"{damage}/{getattr(other, '__name__', other)}/{dtype}", name, a, must))
    _run_all(cases)


@pytest.mark.parametrize("name", ["loss_and_grads", "forward_loss", "train_step"])
def test_kernel_wrappers_refuse_ids_out_of_range(name):
    for dtype in ("float32", "float64"):
        for arg in ("inputs", "targets"):
            for value in (-1, KV, KV + 1, -2**31, 2**31 - 1):
                for pos in (0, KB * KT - 1):
                    a = S.make_call(name, dtype, KB, KT, KH, KV, seed=2,
                                    bad_ids=[(arg, pos, value)])
                    exc = S.run_and_check(name, a)
                    assert isinstance(exc, ValueError) and f"[0, {KV})" in str(exc), (arg, value)


def test_float_dtype_mismatch_between_buffers_is_refused():
    for name in S.WRAPPERS:
        for arg in S.float_buffers(name):
            if arg == "params":
                continue
            a = S.make_call(name, "float64", KB, KT, KH, KV, damage=[(arg, "dtype", np.float32)],
                            with_dh0=True)
            assert isinstance(S.run_and_check(name, a), (ValueError, TypeError)), (name, arg)


HYPER_VALUES = [0, 0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e-50, 1e300, "0.1",
                None, True, 1e-3, 2.5]
UPDATERS = ["train_step", "optimizer_update", "adagrad_update"]


@pytest.mark.parametrize("name", UPDATERS)
def test_kernel_wrappers_optimizer_hyperparameters(name):
    cases = []
    optimizers = list(S.OPTIMIZER_NAMES) if name != "adagrad_update" else [S.ADAGRAD]
    keys = [k for k in ("lr", "eps", "clip", "clip_norm", "grad_scale") if k in S.WRAPPERS[name][0]]
    for dtype in ("float32", "float64"):
        for opt in optimizers:
            for key in keys:
                for value in HYPER_VALUES:
                    a = S.make_call(name, dtype, KB, KT, KH, KV, seed=3,
                                    scalars={"optimizer": opt, key: value})
                    must = value in (0, -1.0, "0.1") or value != value or (
                        value is None and key in ("lr", "eps", "grad_scale"))
                    cases.append((f"opt={opt}/{key}={value!r}/{dtype}", name, a, must))
    _run_all(cases)
    # 1e-50 is 0 and 1e300 is inf as a float32: refused, naming the type
    for key, value in [("lr", 1e-50), ("eps", 1e-50), ("lr", 1e300), ("eps", 1e300),
                       ("clip", 1e-50), ("clip_norm", 1e-50), ("grad_scale", 1e-50),
                       ("grad_scale", 1e300)]:
        if key in S.WRAPPERS[name][0]:
            a = S.make_call(name, "float32", KB, KT, KH, KV, seed=3, scalars={key: value})
            with pytest.raises(ValueError, match=f"{key}=.*float32"):
                S.call(name, a)


@pytest.mark.parametrize("name", ["train_step", "optimizer_update"])
def test_kernel_wrappers_betas_and_step(name):
    cases = []
    values = {"beta1": [0, 0.0, 0.5, 0.999999, 1, 1.0, -0.1, 1.5, float("nan"), float("inf"),
                        None, "0.9", True, False],
              "beta2": [0, 0.9, 0.999999, 1.0, -1e-300, float("nan"), None, "0.9"],
              "step": [1, 2, 1e6, 2**40, 0, -1, 1.5, float("nan"), float("inf"), None, "1",
                       True]}
    for dtype in ("float32", "float64"):
        for opt in S.OPTIMIZER_NAMES:
            for key, vals in values.items():
                for value in vals:
                    a = S.make_call(name, dtype, KB, KT, KH, KV, seed=7,
                                    scalars={"optimizer": opt, key: value})
                    cases.append((f"opt={opt}/{key}={value!r}/{dtype}", name, a, False))
    _run_all(cases)


@pytest.mark.parametrize("name", ["train_step", "optimizer_update"])
def test_kernel_wrappers_state_buffers_of_each_optimizer(name):
    """Adagrad and RMSprop need state 1, Adam states 1 and 2, SGD none: a needed one missing or
    of another size is refused; one not needed may be None or anything of the right type, and
    is left alone."""
    s1, s2 = S.STATE_ARGS[name]
    cases = []
    for dtype in ("float32", "float64"):
        for opt in S.OPTIMIZER_NAMES:
            for d1 in (None, "none", "short", "long", "alias"):
                for d2 in (None, "none", "short", "long", "alias"):
                    damage = [(arg, d, "params" if d == "alias" else None)
                              for arg, d in ((s1, d1), (s2, d2)) if d is not None]
                    a = S.make_call(name, dtype, KB, KT, KH, KV, seed=8, damage=damage,
                                    scalars={"optimizer": opt})
                    must = any(d is not None and S.state_used(name, arg, opt)
                               for arg, d in ((s1, d1), (s2, d2)))
                    cases.append((f"opt={opt}/{s1}:{d1}/{s2}:{d2}/{dtype}", name, a, must))
    _run_all(cases)


def test_kernel_sample_temperature():
    cases = []
    for dtype in ("float32", "float64"):
        for greedy in (False, True):
            for value in HYPER_VALUES:
                a = S.make_call("sample", dtype, KB, KT, KH, KV, 6, seed=4,
                                scalars={"temperature": value, "greedy": greedy})
                must = (not greedy and (value in (0, -1.0, float("inf"), -float("inf"))
                                        or value != value)) or value in ("0.1", None)
                cases.append((f"T={value!r}/greedy={greedy}/{dtype}", "sample", a, must))
    _run_all(cases)


def test_kernel_sample_top_k_and_top_p():
    cases = []
    for dtype in ("float32", "float64"):
        for greedy in (False, True):
            for top_k in (0, 1, 2, KV - 1, KV, KV + 7, 2**31 - 1, -1, -2**31, 2**31, 1.5, 2.0, None):
                for top_p in (1.0, 1, 0.5, 0.9, 1e-300, 0.0, -0.5, 1.0000001, float("nan"),
                              float("inf"), None, "0.5"):
                    a = S.make_call("sample", dtype, KB, KT, KH, KV, 8, seed=9,
                                    scalars={"greedy": greedy, "top_k": top_k, "top_p": top_p})
                    must = (top_k is None or isinstance(top_k, float)
                            or top_k in (-1, -2**31, 2**31)
                            or top_p in (0.0, -0.5, 1.0000001, float("inf"), None, "0.5")
                            or top_p != top_p)
                    cases.append((f"top_k={top_k!r}/top_p={top_p!r}/greedy={greedy}/{dtype}",
                                  "sample", a, must))
    _run_all(cases)


@pytest.mark.parametrize("name", list(S.WRAPPERS))
def test_kernel_wrappers_sizes_and_codes(name):
    cases = []
    for key, value in [("hidden_size", KH + 1), ("hidden_size", 0), ("hidden_size", -1),
                       ("hidden_size", 2**31), ("vocab_size", KV - 1), ("vocab_size", -KV),
                       ("vocab_size", 2**40), ("optimizer", 4), ("optimizer", -1),
                       ("optimizer", 2**31), ("optimizer", None), ("optimizer", 1.0),
                       ("optimizer", 0.0), ("hidden_size", float(KH)), ("vocab_size", KV + 0.5)]:
        if key in S.WRAPPERS[name][0]:
            a = S.make_call(name, "float64", KB, KT, KH, KV, seed=5, scalars={key: value})
            cases.append((f"{key}={value}", name, a, True))
    _run_all(cases)


def test_kernel_work_sizes_follow_the_block_rule():
    """work is exactly enough at the size the spec restates (one element less is refused), for
    chunks taken whole and chunks split into blocks of time steps."""
    for B, T, H, V in [(1, 1, 1, 1), (2, 3, 4, 5), (8, 40, 6, 3), (32, 64, 8, 2), (3, 50, 2, 2),
                       (1, 3, 512, 2), (1, 2, 800, 3)]:
        assert K.work_size(B, T, H, V) == S.work_size(B, T, H, V)
        for threads in (1, 2, 3, 100):
            assert K.chunk_parts(B, T, H, V, threads) == S.chunk_parts(B, T, H, V, threads)
            assert K.work_size(B, T, H, V, threads) == S.work_size(B, T, H, V, threads)
        steps = S.block_steps(B, T, H, V)
        assert 1 <= steps <= T
        for dtype in ("float32", "float64"):
            for extra in (0, -1):
                a = S.make_call("train_step", dtype, B, T, H, V, seed=10)
                a["work"] = a["work"][:a["work"].size + extra] if extra else a["work"]
                exc = S.run_and_check("train_step", a)
                assert (exc is None) == (extra == 0), (B, T, H, V, extra, exc)
    assert any(S.block_steps(B, T, H, V) < T for B, T, H, V in [(32, 64, 8, 2), (3, 50, 2, 2)])
    assert S.chunk_parts(1, 2, 800, 3, 3) == 3 and S.chunk_parts(1, 2, 511, 3, 3) == 1
    for H, V in [(1, 1), (4, 5), (100, 77)]:
        assert K.sample_work_size(H, V) == S.sample_work_size(H, V)
        a = S.make_call("sample", "float64", 1, 1, H, V, 4, seed=11)
        a["work"] = a["work"][:-1]
        assert isinstance(S.run_and_check("sample", a), ValueError)


def test_kernel_work_check_follows_the_shape_from_call_to_call():
    """The wrappers remember the last chunk's work size: a call of another shape is checked
    against its own, so a buffer that was enough for the last call's shape is refused for a
    larger one, whichever shape came before."""
    small, large = (2, 3, 4, 5), (2, 9, 4, 5)
    assert K.work_size(*small) < K.work_size(*large)
    for before in (small, large):
        for shape in (before, small, large, small):
            a = S.make_call("train_step", "float64", *shape, seed=3)
            assert S.run_and_check("train_step", a) is None, shape
        S.run_and_check("train_step", S.make_call("train_step", "float64", *before, seed=3))
        a = S.make_call("train_step", "float64", *large, seed=3)
        a["work"] = a["work"][:K.work_size(*small)]
        assert isinstance(S.run_and_check("train_step", a), ValueError), before


def test_kernel_size_helpers_do_not_overflow():
    for H, V in [(1, 1), (100, 77), (2**31 - 1, 2**31 - 1), (2**31 - 1, 1)]:
        assert K.num_params(H, V) == S.num_params(H, V)
        assert K.sample_work_size(H, V) == S.sample_work_size(H, V)
    for B, T, H, V in [(1, 1, 1, 1), (16, 25, 100, 77), (2**31 - 1,) * 4, (1, 2**31 - 1, 1, 1)]:
        assert K.work_size(B, T, H, V) == S.work_size(B, T, H, V)


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-3, ValueError), (1.5, TypeError),
                                     ("2", TypeError), (None, TypeError),
                                     (10**12, OverflowError)])
def test_kernel_threads_argument_is_checked(bad, exc):
    """threads= of the chunk wrappers: a positive C int, checked before any work."""
    B, T, H, V = 2, 3, 4, 5
    rng = np.random.default_rng(0)
    P = rng.normal(0, 0.1, K.num_params(H, V))
    x = rng.integers(0, V, (B, T)).astype(np.intc)
    h = np.zeros((B, H))
    work = np.zeros(K.work_size(B, T, H, V))
    before = P.copy()
    with pytest.raises(exc, match="threads"):
        K.loss_and_grads(P, np.zeros_like(P), x, x, h, work, H, V, threads=bad)
    with pytest.raises(exc, match="threads"):
        K.forward_loss(P, x, x, h, work, H, V, threads=bad)
    with pytest.raises(exc, match="threads"):
        K.train_step(P, np.zeros_like(P), np.zeros_like(P), x, x, h, work, H, V, 0, 0.1, 1e-8,
                     5.0, threads=bad)
    with pytest.raises(exc, match="threads"):
        K.work_size(B, T, H, V, bad)
    assert np.array_equal(P, before) and not h.any()
