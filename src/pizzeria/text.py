"""Free text from outside: what it may hold, and how a terminal is shown it.

A name, an address line, a cancel reason or a repair note ends up in the workflow's
history, the ledger, the Web UI and the operator's terminal. A terminal *acts* on some
characters instead of showing them: ESC starts a sequence that can recolour the screen,
retitle the window, write a clickable link (OSC 8) or, on some terminals, answer back into
the shell; U+202E turns the rest of the line around; U+2028 breaks a line where no line
break is expected. So every free-text field refuses the characters of the Unicode
categories Cc (controls: ESC, NUL, newline, tab...), Cf (format: the bidi overrides,
zero-width characters), Zl and Zp (line and paragraph separators), and Cs (a lone
surrogate, which no UTF-8 payload can carry). Accents, other scripts and emoji are welcome:
the one format character kept is a zero-width joiner or non-joiner (U+200D, U+200C)
*between two visible characters*, which emoji sequences (a cook, U+1F469 U+200D U+1F373)
and Persian or Indic writing need and no terminal acts on; anywhere else it is refused.

`check_text` is the one rule, for every field: menu.validate_order (an order, in the API,
the CLI and the workflow), the API's bodies, the workflow's Update validators and our
clients all call it. `for_terminal` is the one way to print text that came from outside:
whatever a terminal would interpret is shown as a visible escape (``\\x1b``, ``\\u202e``).

Orders started before format characters were refused replay under the rule they ran
with: the workflow validates them inside `old_rule()` (see workflows.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import unicodedata
from collections.abc import Iterator

#: The categories no free-text field may hold, and a terminal must never be sent raw.
REFUSED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
#: What was refused before format characters and separators were: the rule old orders ran under.
REFUSED_BEFORE = frozenset({"Cc", "Cs"})
#: Zero-width joiner and non-joiner: kept between two visible characters (see above).
JOINERS = frozenset({"\u200c", "\u200d"})
_WHY = {
    "Cc": "holds control characters",
    "Cs": "holds a lone surrogate (half of a character, not text)",
    "Cf": "holds invisible format characters (such as U+202E or U+200B)",
    "Zl": "holds a line separator (U+2028)",
    "Zp": "holds a paragraph separator (U+2029)",
}
_old_rule: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pizzeria_text_old_rule", default=False
)


class TextRefused(ValueError):
    """A free-text field holds characters no field may hold. The message names the field
    (``customer.name holds control characters``) and never repeats the value."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


def text_problem(value: str) -> str | None:
    """What is wrong with the text's characters, if anything (None when it is fine)."""
    refused = REFUSED_BEFORE if _old_rule.get() else REFUSED
    # The common case first: printable ASCII holds none of these.
    if value.isascii() and value.isprintable():
        return None
    found = {
        unicodedata.category(ch)
        for index, ch in enumerate(value)
        if _refused_at(value, index, refused)
    }
    for category in ("Cc", "Cs", "Cf", "Zl", "Zp"):
        if category in found:
            return _WHY[category]
    return None


def _refused_at(value: str, index: int, refused: frozenset[str]) -> bool:
    ch = value[index]
    if unicodedata.category(ch) not in refused:
        return False
    if ch not in JOINERS or index == 0 or index == len(value) - 1:
        return True
    return not (_visible(value[index - 1]) and _visible(value[index + 1]))


def _visible(ch: str) -> bool:
    return not ch.isspace() and unicodedata.category(ch) not in REFUSED


def check_text(field: str, value: str) -> str:
    """``value``, unless it holds a refused character: then `TextRefused` naming ``field``."""
    if not isinstance(value, str):
        raise TextRefused(field, "must be text")
    problem = text_problem(value)
    if problem:
        raise TextRefused(field, problem)
    return value


#: Letters and symbols that show as blank space: the Hangul fillers, the blank braille
#: pattern. A name of only these (or of private-use characters, which no font agrees on)
#: reads as nothing on a receipt, a terminal or the Web UI.
BLANK_LOOKING = frozenset({"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"})
#: The general categories a reader can see: letters, digits, punctuation and symbols.
_SEEN = frozenset("LNPS")


def unreadable_problem(value: str) -> str | None:
    """What makes non-blank ``value`` unreadable, if anything (None when it is fine): a
    noncharacter (U+FFFF, U+FDD0...: code points Unicode keeps out of text), nothing a
    reader can see in it (only blank-looking, private-use or combining characters), or
    more than `MAX_MARKS` combining marks on one character.

    A stricter rule than `text_problem`, for what is written now (a new order's fields):
    the workflow keeps the older rule, as orders were started under it."""
    if value.isascii():  # ASCII has no noncharacter, and anything but spaces shows
        return None
    if any(_noncharacter(ch) for ch in value):
        return "holds a noncharacter (such as U+FFFF), which is not text"
    if value.strip() and not any(_seen(ch) for ch in value):
        return "holds nothing visible (only blank-looking or private-use characters)"
    if _longest_mark_run(value) > MAX_MARKS:
        return (
            f"stacks more than {MAX_MARKS} combining marks on one character, which spill "
            "over the lines around it"
        )
    return None


#: Combining marks one character may carry (a script's own need is two or three; more is
#: "Zalgo" text, drawn over its neighbours' lines in a terminal, a table, the Web UI).
MAX_MARKS = 6


def _longest_mark_run(value: str) -> int:
    longest = run = 0
    for ch in value:
        run = run + 1 if unicodedata.category(ch)[0] == "M" else 0
        longest = max(longest, run)
    return longest


def _noncharacter(ch: str) -> bool:
    code = ord(ch)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def _seen(ch: str) -> bool:
    return ch not in BLANK_LOOKING and unicodedata.category(ch)[0] in _SEEN


def refused_characters_in(value: object, *, depth: int = 0) -> bool:
    """Whether any string inside ``value`` (a dataclass, a list, a dict, a string) holds a
    character refused now but not by the old rule: such an order is the only one whose
    verdict differs between the two rules."""
    if depth > 8:
        return False
    if isinstance(value, str):
        if value.isascii():  # ASCII has no format character and no separator (Cf, Zl, Zp)
            return False
        newly = REFUSED - REFUSED_BEFORE
        return any(_refused_at(value, index, newly) for index in range(len(value)))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts: list[object] = [getattr(value, f.name, None) for f in dataclasses.fields(value)]
    elif isinstance(value, dict):
        parts = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        return False
    return any(refused_characters_in(part, depth=depth + 1) for part in parts)


@contextlib.contextmanager
def old_rule() -> Iterator[None]:
    """Check text as before format characters and separators were refused (replay only)."""
    token = _old_rule.set(True)
    try:
        yield
    finally:
        _old_rule.reset(token)


def for_terminal(value: object) -> str:
    """``value`` as text a terminal shows and never acts on: every character of a refused
    category (ESC, the C1 controls, U+202E, U+2028, a lone surrogate...) becomes its visible
    escape, ``\\x1b`` or ``\\u202e``. Everything else (accents, scripts, emoji) is kept."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        _escaped(ch) if _refused_at(text, index, REFUSED) else ch for index, ch in enumerate(text)
    )


def _escaped(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 violation``, ``3 violations``: a count and its noun, in the number it takes."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
