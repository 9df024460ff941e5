"""Backends by name: each is one small module holding one class.

`numpy` is the readable math and the test oracle; `cython` overrides its hot paths with the
compiled kernels; `torch` runs the same model on PyTorch (CPU or CUDA).
"""
from importlib import import_module

BACKENDS = {
    "numpy": ("fastrnn.backends.numpy_backend", "NumpyBackend"),
    "cython": ("fastrnn.backends.cython_backend", "CythonBackend"),
    "torch": ("fastrnn.backends.torch_backend", "TorchBackend"),
}


def get_backend(name):
    """The backend class for `name`; raises a clear error for unknown or unusable backends."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name]
    backend = getattr(import_module(module), cls)
    backend.check_available()
    return backend


def available_backends():
    """Names of the backends that can run here, in BACKENDS order."""
    names = []
    for name in BACKENDS:
        try:
            get_backend(name)
        except ImportError:
            continue
        names.append(name)
    return names
