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

