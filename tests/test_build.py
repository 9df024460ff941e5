"""The compiled module under test is the build the caller meant to test.

.ci/run's checked pass sets FASTRNN_EXPECT_BUILD to the switches it built with ("debug",
"debug,asan", or "release" for the installed package), so a wrong import path (say, the
release build from site-packages instead of the debug copy) fails instead of passing quietly.
"""
import os

import pytest

from fastrnn import _kernels as K

EXPECTED = os.environ.get("FASTRNN_EXPECT_BUILD")


@pytest.mark.skipif(EXPECTED is None, reason="FASTRNN_EXPECT_BUILD is not set")
def test_the_kernels_are_the_expected_build():
    want = set(EXPECTED.split(",")) - {""}
    assert want <= {"release", "debug", "asan", "native"}, EXPECTED
    assert K.BUILD_DEBUG is ("debug" in want)
    assert K.BUILD_ASAN is ("asan" in want)
    if "native" in want:
        assert K.BUILD_NATIVE



def test_kernels_bound_to_another_hot_module_run_on_it():
    """load_kernels(isa) for another instruction set than the one fastrnn._kernels bound to at
    import runs its calls on that hot module: its bf16 path (a setting each hot module keeps)
    is its own, set and read through it, while the module's calls stay on their own."""
    from fastrnn.backends.cython_backend import load_kernels
    assert K.bound(K.HOT) is K
    others = []
    for isa in ("baseline", "avx2", "avx512"):
        try:
            kernels = load_kernels(isa)
        except ImportError:
            continue
        if kernels is not K:
            others.append(kernels)
    if not others:
        pytest.skip("only one hot module is built here")
    saved = [k.bf16_path() for k in [K] + others]
    try:
        for other in others:
            assert other.HOT is not K.HOT and other.BUILD_ISA != K.BUILD_ISA
            for mine, theirs in [("emulated", "fp32"), ("fp32", "emulated")]:
                K.set_bf16_path(mine)
                other.set_bf16_path(theirs)
                assert (K.bf16_path(), other.bf16_path()) == (mine, theirs)
    finally:
        for k, path in zip([K] + others, saved):
            k.set_bf16_path(path)
