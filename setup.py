"""Declares the compiled kernels; all metadata lives in pyproject.toml.

Environment switches (read at build time):
  FASTRNN_NATIVE=1  add -march=native (faster on the build machine, not portable)
  FASTRNN_DEBUG=1   compile the kernels with bounds checking and without -O3
  FASTRNN_ASAN=1    compile and link the kernels with AddressSanitizer (-fsanitize=address);
                    the module then only imports into a Python started with the ASan runtime
                    preloaded (see "Memory checks" in README.md)
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

native = os.environ.get("FASTRNN_NATIVE", "0") == "1"
debug = os.environ.get("FASTRNN_DEBUG", "0") == "1"
asan = os.environ.get("FASTRNN_ASAN", "0") == "1"

# -fno-math-errno only drops errno writes from libm calls (results are unchanged), which lets
# loops around sqrt vectorise; no -ffast-math.
compile_args = ["-O0", "-g"] if debug else ["-O3", "-fno-math-errno"]
if native:
    compile_args.append("-march=native")
link_args = []
if asan:
    # same optimisation level as a normal build, so the code that ships is what gets checked;
    # -g and the frame pointer give ASan reports with file:line stack traces
    compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"]
    link_args += ["-fsanitize=address"]

ext = Extension(
    "fastrnn._kernels",
    sources=["src/fastrnn/_kernels.pyx"],
    include_dirs=["src"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    define_macros=[
        ("FASTRNN_BUILD_NATIVE", int(native)),
        ("FASTRNN_BUILD_DEBUG", int(debug)),
        ("FASTRNN_BUILD_ASAN", int(asan)),
    ],
)

setup(
    ext_modules=cythonize(
        [ext],
        include_path=["src"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": False,
            "initializedcheck": debug,
            "cdivision": True,
        },
    )
)
