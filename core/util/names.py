"""Names people give things (classes, datasets, purposes): one line of visible text, or a sentence saying why not.

    names.problem("ants")            # None: fine
    names.problem("ants\u2028bees")  # "a line separator (U+2028)": a class folder so named is refused
    names.check("a\x07b", "The class folder")   # UserError: "The class folder 'a�b' contains a control ..."

A class name becomes a line of ``labels.txt`` in every export and a label on every page: a line break inside it
(``\\n``, U+0085, U+2028, U+2029, ...) would shift every label after it by one, a control character or a
bidirectional override (U+202E) would show one name as another. Such names are refused in words rather than
changed silently, so what a user sees is what was saved. Letters, digits, punctuation, symbols, emoji (with their
joiners) and spaces of any script are fine.
"""

from __future__ import annotations

import unicodedata

from core.util.errors import UserError

# Format characters that reorder or hide text: bidirectional embeddings, overrides and isolates, and the BOM.
_HIDING = {*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)), "\u200e", "\u200f", "\ufeff"}


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "").lower()
    if ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029":
        kind = "a line break"
    elif ch in _HIDING:
        kind = "a character that reorders or hides text"
    else:
        kind = "a control character"
    return f"{kind} (U+{ord(ch):04X}{' ' + name.upper() if name else ''})"


def problem(name: str, lines: bool = False) -> str | None:
    """What makes ``name`` unusable as a name, or None. ``lines=True``: line breaks are allowed (a paragraph)."""
    for ch in str(name):
        if lines and ch == "\n":
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Zl", "Zp", "Cs") or ch in _HIDING:
            return _describe(ch)
    return None


def check(name: str, what: str, lines: bool = False) -> str:
    """``name`` unchanged when it is usable, else ``UserError``: "<what> 'x' has <problem>: rename it ..."."""
    found = problem(name, lines)
    if found is not None:
        shown = "".join(ch if problem(ch) is None else "\ufffd" for ch in str(name))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise UserError(f"{what} '{shown}' contains {found}: remove it and try again.")
    return name
