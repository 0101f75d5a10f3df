"""The host's book of the page pool: a free list, reference counts, and a cache of full prompt pages keyed by
the tokens that produced them, so prompts with a common prefix share its pages instead of copying them.

A page's key is a digest of its tokens and of the key of the page before it: the keys and values in a page
depend on every token up to its end, and nothing else. Pages are shared only when full and never written
again (a sequence writes at positions past what it matched), so no copy-on-write is needed (a prompt's partial
last page is copied whole instead, from a sequence that computed it: `Scheduler`). A cached page
whose last user released it stays cached, and is reused first in least-recently-released order when the
free list runs out. A page being prefilled is cached at once but "pending": a sequence that would share it
waits until the prefill that fills it has run (`PageCache.ready`).
"""

from __future__ import annotations

import collections
import hashlib
from typing import Sequence

import numpy as np

from common.paged_kv import NULL_PAGE


class OutOfPages(RuntimeError):
    """Not enough free pages for a request (the scheduler then waits or preempts)."""


def page_keys(tokens: Sequence[int], page_size: int, parent: bytes = b"") -> list[bytes]:
    """The keys of the full pages of `tokens` (len // page_size of them): key i digests page i's tokens and
    key i - 1 (`parent` for the first)."""
    keys = []
    for i in range(len(tokens) // page_size):
        parent = tokens_key(tokens[i * page_size:(i + 1) * page_size], parent)
        keys.append(parent)
    return keys


def tokens_key(tokens: Sequence[int], parent: bytes = b"") -> bytes:
    """A digest of `parent` and a token sequence (a page's under its predecessor's key, `page_keys`; a whole
    prompt's, to find another sequence with the same one)."""
    return hashlib.blake2b(parent + np.asarray(tokens, np.int64).tobytes(), digest_size=16).digest()


class PageCache:
    """Pages 1..num_pages-1 of a pool (page 0 is the null page). Every page is free, in use (a reference count
    > 0), or cached and unused (kept for a later match, reclaimed when needed)."""

    def __init__(self, num_pages: int, page_size: int):
        if num_pages < 2:
            raise ValueError(f"a page pool needs at least 2 pages (page 0 is the null page), got {num_pages}")
        self.page_size = page_size
        self.num_pages = num_pages
        self._free = collections.deque(p for p in range(num_pages) if p != NULL_PAGE)
        self._refs = np.zeros(num_pages, np.int64)
        self._key_of: dict[int, bytes] = {}  # cached page -> key
        self._page_of: dict[bytes, int] = {}  # key -> cached page
        self._pending: set[int] = set()  # cached pages whose prefill has not run yet
        self._unused = collections.OrderedDict()  # cached pages with no user, least recently released first

    # ---- counts ---------------------------------------------------------------------------------

    @property
    def available(self) -> int:
        """Pages an allocation can take now: free ones and cached ones nobody uses."""
        return len(self._free) + len(self._unused)

    @property
    def in_use(self) -> int:
        return int(np.count_nonzero(self._refs))

    def refs(self, page: int) -> int:
        return int(self._refs[page])

    # ---- allocation -----------------------------------------------------------------------------

    def allocate(self, n: int) -> list[int]:
        """n pages for one user each. Raises OutOfPages (taking nothing) when fewer are available."""
        if n > self.available:
            raise OutOfPages(f"{n} pages asked, {self.available} available of {self.num_pages - 1}")
        pages = []
        for _ in range(n):
            if self._free:
                page = self._free.popleft()
            else:  # reclaim the least recently released cached page
                page, _ = self._unused.popitem(last=False)
                self._forget(page)
            self._refs[page] = 1
            pages.append(page)
        return pages

    def release(self, pages: Sequence[int]) -> None:
        """One user fewer for each page; an unused page goes back to the free list, or stays cached. A sequence's
        pages are released last first, so that its later pages are reclaimed before the earlier ones that a
        match needs first."""
        for page in reversed(pages):
            if self._refs[page] <= 0:
                raise ValueError(f"page {page} released more often than it was taken")
            self._refs[page] -= 1
            if self._refs[page] == 0:
                if page in self._key_of and page not in self._pending:
                    self._unused[page] = None
                else:
                    self._forget(page)
                    self._free.append(page)

    def _forget(self, page: int) -> None:
        key = self._key_of.pop(page, None)
        if key is not None:
            del self._page_of[key]
        self._pending.discard(page)

    # ---- the prefix cache -----------------------------------------------------------------------

    def match(self, keys: Sequence[bytes]) -> tuple[list[int], bool]:
        """The cached pages of the longest run of `keys` from the first, each taken for one more user, and
        whether all of them are ready (False: one is still pending: the caller should release them and wait)."""
        pages = []
        for key in keys:
            page = self._page_of.get(key)
            if page is None:
                break
            pages.append(page)
        for page in pages:
            if self._refs[page] == 0:
                self._unused.pop(page, None)
            self._refs[page] += 1
        return pages, not any(p in self._pending for p in pages)

    def publish(self, page: int, key: bytes) -> None:
        """Cache `page` (in use, about to be filled) under `key`, pending until `ready`. A key already cached
        keeps its page (this one then stays private)."""
        if key in self._page_of or page in self._key_of:
            return
        self._key_of[page], self._page_of[key] = key, page
        self._pending.add(page)

    def ready(self, page: int) -> None:
        """The prefill that fills `page` has run: sharing it is safe now."""
        self._pending.discard(page)
