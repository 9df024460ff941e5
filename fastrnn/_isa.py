"""Which hot module (the kernels built for one instruction set, see setup.py) runs here.

fastrnn._kernels, the kernels' Python wrappers, binds to hot_module() at import; the cython
backend's load_kernels(isa) binds them to another one on request.
"""
import importlib
import os

# Instruction-set variants of the kernels, best first, with the CPU features each needs as numpy
# names them, and their modules. "baseline" is also the module of the one-module builds
# (FASTRNN_NATIVE, FASTRNN_DEBUG, FASTRNN_ASAN).
ISA_VARIANTS = {"avx512": ("AVX512_SKX",), "avx2": ("AVX2", "FMA3"), "baseline": ()}
HOT_MODULES = {"avx512": "fastrnn._hot_avx512", "avx2": "fastrnn._hot_avx2",
               "baseline": "fastrnn._hot"}


def _cpu_features():
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return __cpu_features__


def hot_module(isa=None):
    """The fastest hot module this CPU runs, or the one named by isa / $FASTRNN_ISA ("avx512",
    "avx2", "baseline"). Raises ImportError if none (or not that one) loads."""
    isa = isa or os.environ.get("FASTRNN_ISA") or "auto"
    if isa != "auto" and isa not in ISA_VARIANTS:
        raise ImportError(f"FASTRNN_ISA={isa!r}: choose one of auto, {', '.join(ISA_VARIANTS)}")
    features = _cpu_features()
    errors = []
    for name, needs in ISA_VARIANTS.items():
        if isa not in ("auto", name) or not all(features.get(f) for f in needs):
            continue
        try:
            return importlib.import_module(HOT_MODULES[name])
        except ImportError as exc:  # not built here (other CPU family, native or debug build)
            errors.append(exc)
    if not errors:
        raise ImportError(f"this CPU lacks the instructions of the {isa} kernels")
    raise errors[-1]
