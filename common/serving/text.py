"""Token ids to the text a client sees, piece by piece: incremental detokenization that never emits a broken
character, and stop strings that cut the text (and end the sequence) where they first occur.

A byte-level tokenizer spells one character over several tokens (an emoji, a CJK character): decoding the
tokens so far then ends in U+FFFD, and that piece is held back until the character is complete. A piece that
could be the beginning of a stop string is held back too, until it is clear either way.
"""

from __future__ import annotations

from typing import Sequence

REPLACEMENT = "\ufffd"  # what decoding gives for an incomplete UTF-8 sequence
PROMPT_CONTEXT = 5  # prompt tokens decoded before the first generated one (a SentencePiece leading space)


class IncrementalDetokenizer:
    """The text of a growing list of generated token ids, as new pieces.

    Decodes only a window: the tokens since the last emitted piece, after the tokens of the piece before it
    (their text is subtracted), so a token's text can depend on its neighbours (merged spaces) at no more than
    constant cost per token. prompt: the prompt's ids (its last few are the first window's context)."""

    def __init__(self, tokenizer, prompt: Sequence[int] = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids = list(prompt[-PROMPT_CONTEXT:])
        self.prefix = 0  # the window's context starts here
        self.read = len(self.ids)  # ...and its new tokens here

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=self.skip_special_tokens)

    def add(self, token: int) -> str:
        """Text that the token completes ("" while it ends inside a character)."""
        self.ids.append(int(token))
        return self._advance(final=False)

    def flush(self) -> str:
        """What is held back, at the end of the sequence (an incomplete character there decodes to U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        before = self._decode(self.ids[self.prefix:self.read])
        text = self._decode(self.ids[self.prefix:])
        if len(text) <= len(before) or (text.endswith(REPLACEMENT) and not final):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(before):]


class StopStrings:
    """The text of one choice, cut before the first occurrence of any stop string.

    `add(piece)` returns the part that is safe to send: everything but a tail that is the beginning of a stop
    string. Once a stop string is found, `stopped` is True and nothing more is returned."""

    def __init__(self, stop: Sequence[str] = ()):
        self.stop = [s for s in stop if s]
        self.longest = max((len(s) for s in self.stop), default=0)
        self.text = ""  # all text so far (up to the stop string, once found)
        self.sent = 0  # characters of `text` returned
        self.stopped = False

    def add(self, piece: str, final: bool = False) -> str:
        """The newly safe text after `piece`; final: the choice ends here, nothing is held back."""
        if self.stopped:
            return ""
        start = max(0, len(self.text) - self.longest + 1)  # a stop string may straddle the old text and the piece
        self.text += piece
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text, self.stopped = self.text[:min(hits)], True
            safe = len(self.text)
        else:
            safe = len(self.text) if final else len(self.text) - self._held()
        out = self.text[self.sent:safe]
        self.sent = max(self.sent, safe)
        return out

    def _held(self) -> int:
        """Length of the longest tail of the text that is a proper beginning of a stop string."""
        for n in range(min(self.longest - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self.stop):
                return n
        return 0
