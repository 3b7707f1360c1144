"""Public identifiers in OpenAI's shapes: a prefix and 24 random base62 characters."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


def random_base62(length: int) -> str:
    """Return `length` cryptographically random base62 characters."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str) -> str:
    """Return a fresh id such as `ftjob-UiaiLwGdGBfdLQDBAoQheufN` for prefix `ftjob-`."""
    return prefix + random_base62(24)


def now() -> int:
    """Current time in Unix seconds, the unit of every timestamp on the wire."""
    return int(time.time())
