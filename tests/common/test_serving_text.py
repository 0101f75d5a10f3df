"""common/serving/text.py: incremental detokenization never emits a broken character and adds up to the whole
text; stop strings cut at their first occurrence, across pieces, holding back only a possible beginning."""

import pytest

from common.serving.text import REPLACEMENT, IncrementalDetokenizer, StopStrings

TEXT = "Zoë says 🙂 — 世界! ok"


class ByteTokenizer:
    """One token per UTF-8 byte: every multi-byte character is split over tokens."""

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def pieces(tokenizer, ids, prompt=()):
    detok = IncrementalDetokenizer(tokenizer, prompt)
    out = [detok.add(t) for t in ids]
    return out + [detok.flush()]


def test_bytes_of_a_character_are_held_back_until_it_is_complete():
    tok = ByteTokenizer()
    out = pieces(tok, tok.encode(TEXT), prompt=tok.encode("prompt "))
    assert "".join(out) == TEXT
    assert not any(REPLACEMENT in p for p in out)
    assert out.count("") >= len(TEXT.encode()) - len(TEXT)  # a piece only when a character completes


def test_a_sequence_that_ends_inside_a_character_flushes_its_replacement_character():
    tok = ByteTokenizer()
    ids = tok.encode("ab") + tok.encode("🙂")[:2]
    out = pieces(tok, ids)
    assert out[:2] == ["a", "b"] and out[2:4] == ["", ""] and out[-1] == REPLACEMENT


def test_a_real_byte_level_tokenizer_adds_up_to_its_decode(smollm2_tokenizer):
    tok = smollm2_tokenizer
    prompt = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    ids = tok.encode(TEXT + " and more   spaces", add_special_tokens=False)
    out = pieces(tok, ids, prompt)
    assert "".join(out) == tok.decode(ids, skip_special_tokens=True)
    assert not any(REPLACEMENT in p for p in out)


def feed(stop, parts, final=True):
    s = StopStrings(stop)
    out = [s.add(p) for p in parts[:-1]] + [s.add(parts[-1], final=final)]
    return out, s


def test_stop_strings_cut_at_the_first_occurrence_across_pieces():
    out, s = feed(["END", "##"], ["hello E", "N", "D world ##"])
    assert "".join(out) == "hello " and s.stopped and s.text == "hello "
    assert out == ["hello ", "", ""]  # "E", then "EN", held as the beginning of "END"
    out, s = feed(["xyz", "b"], ["aaxy", "ab"])
    assert "".join(out) == "aaxya" and s.stopped  # the earlier of two stop strings


def test_a_held_beginning_that_is_not_a_stop_string_is_sent_later():
    out, s = feed(["END"], ["abcE", "Nx", "yz"])
    assert out == ["abc", "ENx", "yz"] and not s.stopped
    out, s = feed(["END"], ["abEN"], final=True)
    assert out == ["abEN"]  # the end: nothing held back
    assert feed([], ["a", "b"])[0] == ["a", "b"]


@pytest.mark.parametrize("stop", [["\n"], ["ab", "b"], ["aaa"]])
def test_stop_strings_agree_with_cutting_the_whole_text(stop):
    text = "xaab\nyaaab"
    for size in (1, 2, 3):
        parts = [text[i:i + size] for i in range(0, len(text), size)]
        out, _ = feed(stop, parts)
        cut = min((text.find(s) for s in stop if s in text), default=len(text))
        assert "".join(out) == text[:cut], (stop, size)
