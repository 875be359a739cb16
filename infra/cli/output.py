"""Values as people read them in a terminal: plain text, never markup or control codes."""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text

# C0 and C1 control characters (ESC among them) and the Unicode ones that break or reorder a
# line: what a site or a record wrote is shown, never obeyed by the terminal.
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def plain(value: Any, style: str = "") -> Text:
    """A value as a person reads it in a table: text, never rich markup, with control
    characters as visible escapes (`\\x1b`); None as a dash."""
    shown = "-" if value is None else str(value)
    return Text(CONTROLS.sub(_escape, shown), style=style)


def _escape(control: re.Match[str]) -> str:
    return control.group().encode("unicode_escape").decode("ascii")
