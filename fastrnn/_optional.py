"""Optional dependencies, looked up once and only when first asked for.

This is the one place that tries `import torch`: `import fastrnn` never imports it; the torch
backend, the PyTorch interop and the distributed trainer ask `require_torch()` for it.
"""
import functools
import sys

INSTALL_TORCH = '`pip install torch` (or `pip install "fastrnn[torch]"`)'


@functools.lru_cache(maxsize=None)
def _torch():
    """(the torch module, None) or (None, the import error)."""
    try:
        import torch
    except (ImportError, OSError) as exc:  # OSError: a torch whose shared libraries are broken
        return None, exc
    return torch, None


def require_torch(feature="this feature"):
    """The torch module, or an ImportError that says how to install it."""
    torch, exc = _torch()
    if torch is None:
        raise ImportError(f"{feature} needs PyTorch, which could not be imported ({exc}). "
                          f"Install it with {INSTALL_TORCH}.")
    return torch


def loaded_torch():
    """The torch module if it has been imported already, else None (never imports it)."""
    return sys.modules.get("torch")


@functools.lru_cache(maxsize=None)
def cuda_available():
    """Whether PyTorch is installed and sees a usable CUDA device (for backend='torch')."""
    torch = _torch()[0]
    return torch is not None and bool(torch.cuda.is_available())
