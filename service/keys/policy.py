"""Which secrets may be API keys in production: none of the well-known development keys,
and none with less than 128 bits of estimated entropy.

Generated keys (``ulk_<prefix>_<secret>``) carry 256 random bits. An operator-chosen key
(``UNLEARN_BOOTSTRAP_ADMIN_KEY``) is estimated: length x log2(size of the character classes
it uses), and refused outright when its characters repeat so much that their empirical
entropy is under 3 bits each (``aaaa...``, ``abab...``). An estimate cannot prove a
string random; it catches the careless choices. ``secrets.token_urlsafe(32)`` passes.
"""

from __future__ import annotations

import math
import string
from collections import Counter

__all__ = ["DEVELOPMENT_KEYS", "MIN_BITS", "estimated_bits", "weakness"]

# Keys published in this repository (README, Makefile) or typical placeholders.
DEVELOPMENT_KEYS = frozenset(
    {"changeme", "change-me", "secret", "unlearnd-dev-admin-key-for-make-run"}
)
MIN_BITS = 128
MIN_BITS_PER_CHARACTER = 3.0

_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits, string.punctuation)


def estimated_bits(secret: str) -> float:
    used = sum(len(c) for c in _CLASSES if any(ch in c for ch in secret))
    other = any(not any(ch in c for c in _CLASSES) for ch in secret)
    pool = used + (64 if other else 0)
    return len(secret) * math.log2(pool) if pool > 1 else 0.0


def _bits_per_character(secret: str) -> float:
    counts = Counter(secret)
    return -sum(n / len(secret) * math.log2(n / len(secret)) for n in counts.values())


def weakness(secret: str) -> str | None:
    """Why ``secret`` is not fit for production, or None. Never quotes the secret."""
    if secret in DEVELOPMENT_KEYS:
        return "it is a published development key"
    if not secret or _bits_per_character(secret) < MIN_BITS_PER_CHARACTER:
        return "its characters repeat too much to be random"
    bits = estimated_bits(secret)
    if bits < MIN_BITS:
        return f"it has about {bits:.0f} bits of entropy; at least {MIN_BITS} are needed"
    return None
