"""Which secrets may be API keys in production: none of the well-known development keys
(nor one of them with up to three letters or digits changed, its case or separators
changed, or inside a longer string), and none with less than 128 bits of estimated entropy.

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
NEAR_DEVELOPMENT_KEY = 3  # edits (case folded) within which a key counts as a published one
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


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, or ``limit + 1`` once it is known to exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def _near_development_key(secret: str) -> bool:
    """A published key with a few characters changed, or inside a longer string, is as
    guessable as the key itself: its entropy estimate would not see that."""
    folded = _fold(secret)
    return any(
        _edit_distance(folded, key, NEAR_DEVELOPMENT_KEY) <= NEAR_DEVELOPMENT_KEY
        or (len(key) >= 16 and key in folded)
        for key in map(_fold, DEVELOPMENT_KEYS)
    )


def _fold(text: str) -> str:
    """Letters and digits only, lower case: `Un_learnd dev` and `unlearnd-dev` fold alike."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def weakness(secret: str) -> str | None:
    """Why ``secret`` is not fit for production, or None. Never quotes the secret."""
    if secret in DEVELOPMENT_KEYS:
        return "it is a published development key"
    if _near_development_key(secret):
        return "it is a published development key with a few characters changed"
    if not secret or _bits_per_character(secret) < MIN_BITS_PER_CHARACTER:
        return "its characters repeat too much to be random"
    bits = estimated_bits(secret)
    if bits < MIN_BITS:
        return f"it has about {bits:.0f} bits of entropy; at least {MIN_BITS} are needed"
    return None
