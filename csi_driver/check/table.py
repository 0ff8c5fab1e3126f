"""Plain-text tables and paragraphs that fit a terminal width, wrapping instead of cutting."""

from __future__ import annotations

from collections.abc import Sequence

WIDTH = 80
GAP = 2
_BREAK_AFTER = "/-, "


def wrap(text: str, width: int, indent: str = "") -> list[str]:
    """``text`` in lines of at most ``width``, broken after a space, slash, dash or comma when
    one is near, continuation lines starting with ``indent``."""
    lines: list[str] = []
    first = True
    while True:
        room = width - (0 if first else len(indent))
        prefix = "" if first else indent
        if len(text) <= room or room < 1:
            lines.append(prefix + text)
            return lines
        cut = _cut(text, room)
        lines.append((prefix + text[:cut]).rstrip())
        text = text[cut:].lstrip()
        first = False


def _cut(text: str, room: int) -> int:
    """Where to end a line: at the last space that leaves it at least half full, else after the
    last slash, dash or comma that does, else at ``room``."""
    cut = max((i for i, char in enumerate(text[:room + 1]) if char == " "), default=0)
    if cut < room // 2:
        cut = max((i + 1 for i, char in enumerate(text[:room]) if char in _BREAK_AFTER), default=0)
    return cut if cut >= room // 2 else room


def _longest_word(text: str, cap: int = 22) -> int:
    """The longest run a line break would split, so a column is never narrower (up to ``cap``)."""
    for char in _BREAK_AFTER:
        text = text.replace(char, char + "\n")
    return min(max((len(word.strip()) for word in text.split("\n")), default=0), cap)


def _widths(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    widths = [max([len(h), *(len(line) for r in rows for line in r[i].split("\n"))]) for i, h in enumerate(headers)]
    floor = [max([len(h), 6, *(_longest_word(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    budget = width - GAP * (len(headers) - 1)
    while sum(widths) > budget:
        shrinkable = [i for i, w in enumerate(widths) if w > floor[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int = WIDTH) -> list[str]:
    """Rows under their headers; a cell too long for its column continues on the next lines, as
    does each line of a cell after a newline."""
    widths = _widths(headers, rows, width)
    lines = []
    for row in [list(headers), *rows]:
        cells = [[line for part in cell.split("\n") for line in wrap(part, w)]
                 for cell, w in zip(row, widths, strict=True)]
        for n in range(max(len(c) for c in cells)):
            parts = [(c[n] if n < len(c) else "").ljust(w) for c, w in zip(cells, widths, strict=True)]
            lines.append((" " * GAP).join(parts).rstrip())
    return lines
