"""Declares the compiled kernels; all metadata lives in pyproject.toml.

The kernels are two kinds of Cython module. The hot modules (src/fastrnn/_hot.pyx and the .pxi
files it includes: the nogil kernels only) are built per instruction set on x86-64: `_hot` for
the baseline (runs anywhere) and `_hot_avx2` / `_hot_avx512` with those instruction sets. The
wrapper module `_kernels` (src/fastrnn/_kernels.pyx: the Python-visible functions and their
checks, with Cython's memoryview code, most of the C) is built once, and calls the kernels of
the hot module it binds to at import, the best one the CPU supports (see fastrnn/_isa.py). That
keeps the wheel portable without -march=native, yet vectorises the kernels 8 or 16 floats wide
where the CPU can, and compiles the wrappers once instead of once per instruction set.

Environment switches (read at build time):
  FASTRNN_NATIVE=1  compile one hot module with -march=native instead (fastest on the build
                    machine, not portable)
  FASTRNN_DEBUG=1   compile one hot module and the wrappers with Cython bounds checking on and
                    -O0 -g
  FASTRNN_ASAN=1    compile and link the kernels with AddressSanitizer (-fsanitize=address), as
                    one hot module and the wrappers; they then only import into a Python started
                    with the ASan runtime preloaded (see "Checked builds" in docs/development.md)
  FASTRNN_OPENMP=0  build without OpenMP (by default it is used when the compiler accepts
                    -fopenmp); the kernels then run the parts of a split batch one after another
  FASTRNN_BUILD_JOBS=N  translate and compile at most N modules at once (default: all of them)
  FASTRNN_DEBUG_INFO=1  keep debug information (-g) in the optimised build, for gdb or perf
"""
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import Cython
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.modified import newer_group

native = os.environ.get("FASTRNN_NATIVE", "0") == "1"
debug = os.environ.get("FASTRNN_DEBUG", "0") == "1"
asan = os.environ.get("FASTRNN_ASAN", "0") == "1"

# No -ffast-math: -fno-math-errno and -fno-trapping-math only drop errno writes and the promise
# of floating-point exception flags (IEEE results are unchanged); they let the compiler vectorise
# loops that hold sqrt or a branch-free select. -g0 overrides the -g in Python's own CFLAGS:
# debug information costs a quarter of the compile time and most of each module's size, and
# leaves the machine code unchanged (FASTRNN_DEBUG_INFO=1 keeps it, for a profiler or gdb).
# Not -O2: it builds in half the time, but the kernels run several times slower (measured in
# docs/development.md, "Build time").
debug_info = os.environ.get("FASTRNN_DEBUG_INFO", "0") == "1"
compile_args = ["-O0", "-g"] if debug else \
    ["-O3", "-g" if debug_info else "-g0", "-fno-math-errno", "-fno-trapping-math"]
if native:
    compile_args.append("-march=native")
link_args = []
if asan:
    # same optimisation level as a normal build, so the code that ships is what gets checked;
    # -g and the frame pointer give ASan reports with file:line stack traces
    compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"]
    link_args += ["-fsanitize=address"]



def openmp_flags():
    """-fopenmp if the C compiler Python was built with compiles and links an OpenMP program."""
    if os.environ.get("FASTRNN_OPENMP", "1") == "0":
        return []
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "omp.c")
        src.write_text("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            ok = subprocess.run(cc + ["-fopenmp", str(src), "-o", str(Path(tmp, "omp"))],
                                capture_output=True).returncode == 0
        except OSError:
            ok = False
    if not ok:
        print("fastrnn: the C compiler does not take -fopenmp; building without OpenMP "
              "(batches then run on one thread)", file=sys.stderr)
    return ["-fopenmp"] if ok else []


openmp = openmp_flags()
compile_args += openmp
link_args += openmp

macros = [("FASTRNN_BUILD_NATIVE", int(native)), ("FASTRNN_BUILD_DEBUG", int(debug)),
          ("FASTRNN_BUILD_ASAN", int(asan))]
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": False,
    "initializedcheck": debug,
    "cdivision": True,
}
# The wrapper module at -O2: its functions check arguments and call into a hot module, and ran
# as fast as at -O3 (docs/development.md, "Build time"). -Wno-unused-function: it holds the
# kernels' code unused (see _kernels.pyx), which the compiler drops.
wrapper_args = [("-O2" if a == "-O3" else a) for a in compile_args] + ["-Wno-unused-function"]

# The kernels are two kinds of module. A hot module (_hot.pyx: the nogil kernels, about a third
# of the C) is built per instruction set; the wrapper module fastrnn._kernels (_kernels.pyx: the
# Python-visible functions that check their arguments, with Cython's memoryview code, the rest)
# is built once and calls the kernels of the hot module it binds to (see _table.pxi).
def _extension(name, source, args, extra_macros=()):
    return Extension(name, sources=[source], include_dirs=["src", "src/fastrnn"],
                     extra_compile_args=args, extra_link_args=link_args,
                     define_macros=macros + list(extra_macros))


extensions = [_extension("fastrnn._kernels", "src/fastrnn/_kernels.pyx", wrapper_args)]

# Instruction-set variants of the hot module (x86-64 with gcc/clang only): the same .pyx/.pxd,
# copied under the variant's module name into build/ (Cython bakes a module's name into its C),
# then compiled with those instruction sets enabled.
VARIANTS = {
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mfma"],
}
x86_variants = not (native or debug or asan) and os.name == "posix" and \
    platform.machine().lower() in ("x86_64", "amd64")
extensions.append(_extension("fastrnn._hot", "src/fastrnn/_hot.pyx", compile_args))
if x86_variants:
    generated = Path("build", "fastrnn_variants")
    (generated / "fastrnn").mkdir(parents=True, exist_ok=True)
    for isa, flags in VARIANTS.items():
        for ext in ("pyx", "pxd"):
            src = Path("src", "fastrnn", f"_hot.{ext}").read_text()
            dst = generated / "fastrnn" / f"_hot_{isa}.{ext}"
            if not dst.exists() or dst.read_text() != src:  # keep timestamps when unchanged
                dst.write_text(src)
        extensions.append(_extension(
            f"fastrnn._hot_{isa}", str(generated / "fastrnn" / f"_hot_{isa}.pyx"),
            compile_args + flags, [("FASTRNN_BUILD_ISA", f'"{isa}"')]))

# The builds are independent: Cython translates them in processes of its own and the C
# compiler runs for all of them at once (build_ext's `parallel` option, a thread per extension),
# so they overlap on every core instead of queuing one after another. FASTRNN_BUILD_JOBS=1 (or
# `build_ext -j 1`) builds them one by one.
jobs = int(os.environ.get("FASTRNN_BUILD_JOBS") or len(extensions))

# C that Cython generated before is reused when it is newer than every source of ours and came
# from this Cython with these directives (a stamp in build/ records both). cythonize alone would
# regenerate it, and then every module would compile again, whenever pip builds in a fresh
# isolated environment (`pip install .` and then `pip install ".[test]"`): it counts Cython's own
# bundled .pxd files, new in each such environment, among the module's dependencies.
OWN = sorted(Path("src", "fastrnn").glob("*.p*")) + sorted(Path("src", "fastrnn").glob("*.h"))
STAMPS = Path("build", "fastrnn_stamps")
KEY = f"Cython {Cython.__version__}; directives {sorted(directives.items())}"


def _reusable_c(ext):
    """The C generated for `ext` when it can be reused (see above), else None."""
    c = Path(ext.sources[0]).with_suffix(".c")
    stamp = STAMPS / f"{ext.name}.txt"
    if not (c.exists() and stamp.exists()) or stamp.read_text() != KEY:
        return None
    newest = max(p.stat().st_mtime for p in OWN + [Path(ext.sources[0])])
    return c if c.stat().st_mtime > newest else None


for ext in extensions:
    ext.depends = [str(p) for p in OWN]  # a changed header compiles the module again
reused = [e for e in extensions if _reusable_c(e) is not None]
for ext in reused:
    ext.sources = [str(_reusable_c(ext))]
fresh = [e for e in extensions if e not in reused]
if fresh:
    # the variants' copies `include` the .pxi files from src/fastrnn (include_path)
    fresh = cythonize(fresh, include_path=["src", "src/fastrnn",
                                           str(Path("build", "fastrnn_variants"))],
                      compiler_directives=directives, nthreads=jobs if jobs > 1 else 0)
    STAMPS.mkdir(parents=True, exist_ok=True)
    for ext in fresh:
        (STAMPS / f"{ext.name}.txt").write_text(KEY)


def _say(message):
    """One line on stderr in one write, so that the lines of modules built in parallel threads
    do not run into each other."""
    sys.stderr.write(f"fastrnn: {message}\n")
    sys.stderr.flush()


class timed_build_ext(build_ext):
    """build_ext that says which modules it compiles and how long each took: pip shows these
    lines (with the compiler's) under `pip install -v .`; without -v it shows only a spinner."""

    def build_extensions(self):
        # here, not in run(): for --inplace setuptools builds in build/ and then copies, and
        # only from here on does get_ext_fullpath name the file in build/
        stale = [e.name for e in self.extensions if self._stale(e)]
        if stale:
            _say(f"compiling {', '.join(stale)} ({min(jobs, len(stale))} at once)")
        super().build_extensions()

    def _stale(self, ext):
        """What build_ext itself asks before compiling a module."""
        return self.force or newer_group(list(ext.sources) + list(ext.depends),
                                         self.get_ext_fullpath(ext.name), "newer")

    def build_extension(self, ext):
        if not self._stale(ext):
            _say(f"{ext.name} is up to date")
            return super().build_extension(ext)
        t0 = time.perf_counter()
        super().build_extension(ext)
        _say(f"{ext.name} compiled in {time.perf_counter() - t0:.0f} s")


setup(ext_modules=reused + fresh, cmdclass={"build_ext": timed_build_ext},
      options={"build_ext": {"parallel": jobs}})
