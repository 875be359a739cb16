"""The contract's text limits: slugs, and ids and names free of control characters."""

from __future__ import annotations

import re

SLUG = r"[a-z0-9][a-z0-9-]{0,63}"
SLUG_HINT = "1 to 64 lowercase letters, digits or hyphens, not starting with a hyphen"
MAX_ID_LENGTH = 128

_SLUG = re.compile(SLUG)
# C0 and C1 controls, and surrogates: a decoded str holds a surrogate only when it is lone.
# NUL cannot go into a PostgreSQL text column, and the others garble terminals and logs.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def is_slug(value: object) -> bool:
    """Whether `value` is a slug: a site, campaign or supplier id."""
    return isinstance(value, str) and _SLUG.fullmatch(value) is not None


def is_clean(text: str) -> bool:
    """Whether `text` has no control characters (U+0000-U+001F, U+007F-U+009F) and no lone
    surrogates."""
    return _FORBIDDEN.search(text) is None


def is_identifier(value: object) -> bool:
    """Whether `value` is an order or buyer id: 1 to 128 clean characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and is_clean(value)
