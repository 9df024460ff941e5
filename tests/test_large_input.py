"""A large corpus trains without holding more than a small multiple of it in memory (issue 6):
the file is read and encoded in chunks, never held whole as text, and its ids are kept one byte
a character (uint8 for up to 256 symbols). Peak memory is measured in a fresh process, against
the same run on a tiny file."""
import subprocess
import sys

import numpy as np

import fastrnn
from fastrnn.trainer import compact_ids, ids_dtype

PEAK = """
import resource, sys
import fastrnn.cli
code = fastrnn.cli.main(sys.argv[1:])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def peak_rss_mb(cwd, data):
    out = subprocess.run([sys.executable, "-c", PEAK, "train", "--data", str(data),
                          "--iterations", "5", "--hidden-size", "32", "--sample-length", "0",
                          "--eval-every", "100", "--checkpoint-dir", "ck", "--threads", "1"],
                         capture_output=True, text=True, timeout=300, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split("PEAK_KB")[-1]) / 1024


def test_a_20_mb_corpus_costs_a_small_multiple_of_its_size(tmp_path):
    text = fastrnn.load_shakespeare()  # 1.1 MB
    big = tmp_path / "big.txt"
    with open(big, "w", encoding="utf-8") as f:
        for _ in range(19):
            f.write(text)
    size_mb = big.stat().st_size / 2**20
    small = tmp_path / "small.txt"
    small.write_text(text[:20000])
    base = peak_rss_mb(tmp_path, small)  # the interpreter, numpy, scipy, the model
    peak = peak_rss_mb(tmp_path, big)
    print(f"peak RSS {peak:.0f} MB for {size_mb:.0f} MB of text ({base:.0f} MB for 20 kB)")
    # before issue 6 this was ~18x the file (text, UTF-32 copy, int64 and int32 ids)
    assert peak - base < 2.5 * size_mb, (peak, base, size_mb)


def test_ids_are_kept_in_the_smallest_type():
    assert [ids_dtype(v) for v in (1, 256, 257, 65536, 65537)] == \
        [np.uint8, np.uint8, np.uint16, np.uint16, np.int32]
    vocab = fastrnn.Vocab.from_text("abcdef")
    ids = vocab.encode("abcdef" * 10, dtype=vocab.dtype)
    assert ids.dtype == np.uint8
    assert compact_ids(ids, 6, "ids") is ids  # no copy
    model = fastrnn.CharRNN(vocab, 4)
    tr = fastrnn.Trainer(model, np.arange(60) % 6, seq_length=5, batch_size=2,
                         val_ids=np.arange(20) % 6)
    assert tr.ids.dtype == np.uint8 and tr.val_ids.dtype == np.uint8
    # the fingerprint is that of the ids as int32, as before (old checkpoints still resume)
    import hashlib
    assert tr.data_fingerprint() == hashlib.sha256(
        (np.arange(60) % 6).astype(np.int32).tobytes()).hexdigest()
    tr.fit(3)
