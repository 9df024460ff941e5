"""Divergence (issue 6, item 8): a step whose loss is not finite, or whose update would leave a
NaN or infinity in the parameters or the optimizer state, is never taken. nan_policy="raise" (the
default) stops with a clear error and the model as before that step; "skip" goes on without it.
On every CPU backend, the fused compiled step included."""
import json
import math
import re

import numpy as np
import pytest

import fastrnn
from fastrnn.checkpoint import read_npz
from fastrnn.trainer import MAX_SKIPS_IN_A_ROW, DivergedError
from test_cli import cli

V, H = 7, 6
IDS = np.arange(300) % V
# runs of 30 equal characters: a chunk of 5 within a run has a large output-bias gradient
# (-5 * (1 - p)), so an lr of 3e38 makes SGD's float32 update overflow
RUNS = np.tile(np.repeat(np.arange(V), 30), 2)
OPTIMIZERS = [("adagrad", {}), ("sgd", dict(clip=None)), ("rmsprop", {}), ("adam", {})]


def snapshot(trainer):
    """Everything a refused step must leave as it was (copies)."""
    opt = trainer.optimizer
    return (trainer.model.get_params(), {k: np.array(v) for k, v in opt.state.items()},
            opt.steps, trainer.h.copy())


def assert_same(a, b):
    params_a, state_a, steps_a, h_a = a
    params_b, state_b, steps_b, h_b = b
    for k in params_a:
        assert np.array_equal(params_a[k], params_b[k]), k
    for k in state_a:
        assert np.array_equal(state_a[k], state_b[k]), k
    assert steps_a == steps_b
    assert np.array_equal(h_a, h_b)


def all_finite(trainer):
    return (all(np.isfinite(v).all() for v in trainer.model.get_params().values())
            and all(np.isfinite(np.asarray(v)).all()
                    for v in trainer.optimizer.state.values()))


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_raise_stops_with_the_parameters_of_the_last_good_step(tmp_path, backend):
    model = fastrnn.CharRNN(V, H, backend=backend)
    opt = fastrnn.Adagrad(model, lr=1e38)  # step 1: weights of 1e38; step 2: logits overflow
    tr = fastrnn.Trainer(model, IDS, seq_length=5, optimizer=opt)
    with pytest.raises(DivergedError, match=r"at iteration \d+: the loss became (nan|inf).*"
                                            r"smaller learning rate") as err:
        tr.fit(10, checkpoint_dir=tmp_path, checkpoint_every=1)
    bad = err.value.iteration
    assert isinstance(err.value, FloatingPointError) and f"iteration {bad}:" in str(err.value)
    assert bad >= 2 and tr.iteration == bad - 1 and opt.steps == bad - 1 and all_finite(tr)
    saved = read_npz(tmp_path / "latest.npz")  # the last good checkpoint, intact
    assert int(saved["trainer/iteration"]) == bad - 1
    for k, v in model.get_params().items():
        assert np.array_equal(saved[k], v) and np.isfinite(saved[k]).all()
    assert tr.position == 5 * (bad - 1)  # the refused chunk comes next


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_an_update_that_overflows_is_undone(backend):
    """SGD with a huge lr: the loss is finite but lr * g overflows float32."""
    model = fastrnn.CharRNN(V, H, backend=backend)
    tr = fastrnn.Trainer(model, RUNS, seq_length=5, optimizer=fastrnn.SGD(model, lr=3e38,
                                                                          clip=None))
    before = snapshot(tr)
    with pytest.raises(DivergedError, match="iteration 1: its update would have left NaN"):
        tr.step()
    assert_same(snapshot(tr), before)
    assert tr.iteration == 0 and tr.position == 0


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("name,kw", OPTIMIZERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_refused_step_leaves_every_buffer_bit_for_bit(backend, name, kw, dtype):
    """Every optimizer, both dtypes, no clipping: a gradient scale near the dtype's largest
    value (3e38 in float32, 1.7e308 in float64) turns the larger gradients into inf, whose
    update is NaN or inf; it is undone exactly."""
    model = fastrnn.CharRNN(V, H, backend=backend, dtype=dtype)
    kw = dict(kw, clip=None) if name != "adam" else dict(clip_norm=None)
    tr = fastrnn.Trainer(model, RUNS, seq_length=5,
                         optimizer=fastrnn.make_optimizer(name, model, **kw))
    tr.fit(3)  # non-trivial optimizer state
    x, y = tr.next_chunk()
    be = model._backend
    before = snapshot(tr)
    with np.errstate(over="ignore", invalid="ignore"):
        loss, taken = be.train_step_guarded(x, y, tr.h, tr.optimizer,
                                            3e38 if dtype == "float32" else 1.7e308)
    assert math.isfinite(loss) and not taken
    assert_same(snapshot(tr), before)
    loss, taken = be.train_step_guarded(x, y, tr.h, tr.optimizer, 1.0)  # a sane one is taken
    assert taken and tr.optimizer.steps == before[2] + 1 and all_finite(tr)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_guarded_steps_compute_what_unguarded_ones_do(backend):
    a, b = (fastrnn.CharRNN(V, H, backend=backend, seed=3) for _ in range(2))
    oa, ob = fastrnn.Adam(a), fastrnn.Adam(b)
    ha, hb = np.zeros((2, H), np.float32), np.zeros((2, H), np.float32)
    x = (IDS[:20].reshape(2, 10)).astype(np.int32)
    y = (IDS[1:21].reshape(2, 10)).astype(np.int32)
    for _ in range(4):
        la = a._backend.train_step(x, y, ha, oa, 0.5)
        lb, taken = b._backend.train_step_guarded(x, y, hb, ob, 0.5)
        assert taken and la == lb
    assert np.array_equal(ha, hb) and oa.steps == ob.steps == 4
    for k, v in a.get_params().items():
        assert np.array_equal(v, b.get_params()[k]), k


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_skip_goes_on_without_the_bad_step(tmp_path, backend):
    model = fastrnn.CharRNN(V, H, backend=backend)
    tr = fastrnn.Trainer(model, RUNS, seq_length=5, nan_policy="skip",
                         optimizer=fastrnn.SGD(model, lr=0.1, clip=None))

    def one_bad_step(trainer, loss):  # lr absurd for iteration 4 only
        trainer.optimizer.lr = 3e38 if trainer.iteration == 3 else 0.1

    seen = {}

    def watch(trainer, loss):
        if trainer.iteration == 3:
            seen["before"] = snapshot(trainer)
        if trainer.iteration == 4:
            seen["after"] = snapshot(trainer)
            seen["position"] = trainer.position
        one_bad_step(trainer, loss)

    result = tr.fit(10, callback=watch, print_every=1, file=open(tmp_path / "out.txt", "w"),
                    log=tmp_path / "log.jsonl")
    assert result.skipped_steps == 1 and tr.skipped_steps == 1 and tr.iteration == 10
    params_b, state_b, steps_b, _ = seen["before"]
    params_a, state_a, steps_a, h_a = seen["after"]
    assert_same((params_a, state_a, steps_a, h_a), (params_b, state_b, steps_b, h_a))
    assert not h_a.any()  # the carried state is reset
    assert seen["position"] == 20  # the walk moved past the skipped chunk
    assert tr.optimizer.steps == 9 and all_finite(tr) and math.isfinite(tr.smooth_loss)
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [r["iteration"] for r in records if r.get("skipped")] == [4]
    assert "1 step(s) skipped" in (tmp_path / "out.txt").read_text()


def test_skip_gives_up_when_nothing_is_taken_any_more():
    model = fastrnn.CharRNN(V, H)
    tr = fastrnn.Trainer(model, IDS, seq_length=5, nan_policy="skip",
                         optimizer=fastrnn.Adagrad(model, lr=1e38))
    with pytest.raises(DivergedError, match=f"{MAX_SKIPS_IN_A_ROW} steps in a row"):
        tr.fit(MAX_SKIPS_IN_A_ROW + 50)
    assert tr.skipped_steps == MAX_SKIPS_IN_A_ROW and all_finite(tr)


def test_the_policy_and_the_count_are_checked_and_saved(tmp_path):
    model = fastrnn.CharRNN(V, H)
    with pytest.raises(ValueError, match="nan_policy must be one of raise, skip"):
        fastrnn.Trainer(model, IDS, nan_policy="ignore")
    tr = fastrnn.Trainer(model, IDS, seq_length=5, nan_policy="skip",
                         optimizer=fastrnn.Adagrad(model, lr=1e38))
    tr.fit(6)
    assert 1 <= tr.skipped_steps <= 5
    tr.save(tmp_path / "ck.npz")
    back = fastrnn.Trainer.load(tmp_path / "ck.npz", IDS)
    assert back.nan_policy == "skip" and back.skipped_steps == tr.skipped_steps


def test_cli_diverging_run_names_the_iteration_and_keeps_the_last_checkpoint(tmp_path):
    (tmp_path / "data.txt").write_text("to be or not to be, that is the question. " * 20)
    common = ["train", "--data", "data.txt", "--hidden-size", "8", "--optimizer", "adagrad",
              "--lr", "3e37", "--checkpoint-every", "1", "--sample-length", "0",
              "--print-every", "1"]
    err = cli(*common, "--iterations", "50", cwd=tmp_path, ok=False).stderr_text
    found = re.match(r"fastrnn: error: training diverged at iteration (\d+): the loss became", err)
    assert found, err
    bad = int(found.group(1))
    assert "smaller --lr" in err and "--nan-policy skip" in err
    assert f"checkpoints/latest.npz, is from iteration {bad - 1}" in err
    saved = read_npz(tmp_path / "checkpoints" / "latest.npz")
    assert int(saved["trainer/iteration"]) == bad - 1
    assert all(np.isfinite(saved[k]).all() for k in ("Wxh", "Whh", "Why", "bh", "by"))
    out = cli(*common, "--iterations", "30", "--nan-policy", "skip", cwd=tmp_path).stdout_text
    skipped = int(re.search(r"; (\d+) non-finite steps skipped", out).group(1))
    ck = read_npz(tmp_path / "checkpoints" / "latest.npz")
    assert int(ck["trainer/iteration"]) == 30 and int(ck["trainer/skipped_steps"]) == skipped
    assert 0 < skipped < 30
