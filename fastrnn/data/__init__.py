"""The built-in corpus (see README.md beside this file for its provenance)."""
import gzip
from importlib import resources


def load_shakespeare() -> str:
    """The ~1.1 MB Shakespeare text shipped with fastrnn (public domain), as a str."""
    with resources.files(__name__).joinpath("shakespeare_1mb.txt.gz").open("rb") as f:
        return gzip.decompress(f.read()).decode("utf-8")
