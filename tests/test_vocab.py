import numpy as np
import pytest

import fastrnn


def test_sorted_vocab_and_round_trip():
    text = "the quick brown fox, ÆØÅ and 漢字 too\n"
    v = fastrnn.Vocab.from_text(text)
    assert v.chars == "".join(sorted(set(text))) and len(v) == len(set(text))
    ids = v.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert v.decode(ids) == text
    assert [v.chars[i] for i in ids] == list(text)
    assert fastrnn.Vocab(v.chars) == v


def test_encode_rejects_unknown_characters_and_bad_types():
    v = fastrnn.Vocab.from_text("abc")
    with pytest.raises(ValueError, match="not in the vocabulary.*'z'"):
        v.encode("abz")
    with pytest.raises(TypeError):
        v.encode(b"abc")
    with pytest.raises(ValueError, match="ids must lie in"):
        v.decode([0, 3])
    with pytest.raises(ValueError, match="at least one character"):
        fastrnn.Vocab.from_text("")
    with pytest.raises(ValueError, match="sorted"):
        fastrnn.Vocab("ba")
    assert v.encode("") .shape == (0,) and v.decode([]) == ""


def test_builtin_corpus_is_the_shipped_shakespeare(shakespeare):
    text = fastrnn.load_shakespeare()
    assert len(text) == 1099961 and text == shakespeare
    assert len(fastrnn.Vocab.from_text(text)) == 77
