"""Strings that match a regular expression, for JSON Schema's `pattern`.

`pattern_sample` parses the pattern (the subset `schema_instance` documents) and
samples strings from the parse until one matches with `re.search` within the length
limits.

Pure module: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, Final

from gateway.providers.mock.schema_keywords import SchemaInstanceError

_PRINTABLE: Final = [chr(c) for c in range(0x20, 0x7F)]
_DIGITS: Final = ((ord("0"), ord("9")),)
_WORD: Final = (
    (ord("0"), ord("9")),
    (ord("A"), ord("Z")),
    (ord("_"), ord("_")),
    (ord("a"), ord("z")),
)
_SPACE: Final = ((ord(" "), ord(" ")), (ord("\t"), ord("\r")))
_CLASS_ESCAPES: Final[dict[str, tuple[tuple[tuple[int, int], ...], bool]]] = {
    "d": (_DIGITS, False),
    "D": (_DIGITS, True),
    "w": (_WORD, False),
    "W": (_WORD, True),
    "s": (_SPACE, False),
    "S": (_SPACE, True),
}
_CHAR_ESCAPES: Final = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "0": "\0"}
_ANCHOR_ESCAPES: Final = frozenset("bBAZz")

# A parsed pattern: ("lit", str) | ("set", list[str]) | ("seq", list) | ("alt", list)
# | ("rep", node, min, max-or-None).
_Node = tuple[Any, ...]


def _char_set(ranges: Sequence[tuple[int, int]], negated: bool) -> _Node:
    """A "set" node listing printable ASCII members (or one member when none is printable)."""

    def inside(c: str) -> bool:
        return any(lo <= ord(c) <= hi for lo, hi in ranges)

    members = [c for c in _PRINTABLE if inside(c) != negated]
    if not members and not negated:
        members = [chr(lo) for lo, _ in ranges[:1] if not 0xD800 <= lo <= 0xDFFF]
    if not members:
        raise SchemaInstanceError("pattern: a character class matches nothing printable")
    return ("set", members)


class _PatternParser:
    """Recursive-descent parser for the regular-expression subset described above."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0

    def parse(self) -> _Node:
        node = self._alternation()
        if self.pos != len(self.text):
            raise SchemaInstanceError(f"pattern: unbalanced ')' at {self.pos}")
        return node

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _take(self) -> str:
        if self.pos >= len(self.text):
            raise SchemaInstanceError("pattern: unexpected end")
        char = self.text[self.pos]
        self.pos += 1
        return char

    def _alternation(self) -> _Node:
        branches = [self._sequence()]
        while self._peek() == "|":
            self.pos += 1
            branches.append(self._sequence())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def _sequence(self) -> _Node:
        items: list[_Node] = []
        while self._peek() not in ("", "|", ")"):
            atom = self._atom()
            items.append(self._quantified(atom))
        return ("seq", items)

    def _quantified(self, atom: _Node) -> _Node:
        char = self._peek()
        bounds: tuple[int, int | None] | None = None
        if char in ("*", "+", "?"):
            self.pos += 1
            bounds = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
        elif char == "{":
            match = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.text, self.pos)
            if match:
                self.pos = match.end()
                low = int(match.group(1))
                high = low if not match.group(2) else int(match.group(3) or -1)
                bounds = (low, None if high == -1 else high)
        if bounds is None:
            return atom
        if self._peek() in ("?", "+"):  # lazy or possessive: same strings
            self.pos += 1
        if self._peek() in ("*", "+", "?"):
            raise SchemaInstanceError("pattern: repeated quantifier")
        return ("rep", atom, bounds[0], bounds[1])

    def _atom(self) -> _Node:
        char = self._take()
        if char == "(":
            return self._group()
        if char == "[":
            return self._class()
        if char == ".":
            return ("set", list(_PRINTABLE))
        if char in ("^", "$"):
            return ("seq", [])
        if char == "\\":
            return self._escape(in_class=False)
        if char in ("*", "+", "?"):
            raise SchemaInstanceError("pattern: nothing to repeat")
        return ("lit", char)

    def _group(self) -> _Node:
        if self.text.startswith("?:", self.pos):
            self.pos += 2
        elif self.text.startswith(("?P<", "?<"), self.pos) and not self.text.startswith(
            ("?<=", "?<!"), self.pos
        ):
            end = self.text.find(">", self.pos)
            if end < 0:
                raise SchemaInstanceError("pattern: unterminated group name")
            self.pos = end + 1
        elif self._peek() == "?":
            raise SchemaInstanceError("pattern: lookarounds and inline flags are unsupported")
        node = self._alternation()
        if self._take() != ")":
            raise SchemaInstanceError("pattern: missing ')'")
        return node

    def _escape(self, *, in_class: bool) -> _Node:
        char = self._take()
        if char in _CLASS_ESCAPES:
            ranges, negated = _CLASS_ESCAPES[char]
            return _char_set(ranges, negated)
        if char in _CHAR_ESCAPES:
            return ("lit", _CHAR_ESCAPES[char])
        if char in ("x", "u"):
            digits = self.text[self.pos : self.pos + (2 if char == "x" else 4)]
            if len(digits) not in (2, 4) or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise SchemaInstanceError(f"pattern: bad \\{char} escape")
            self.pos += len(digits)
            return ("lit", chr(int(digits, 16)))
        if char in _ANCHOR_ESCAPES and not in_class:
            return ("seq", [])
        if char.isdigit() or char in ("p", "P", "k", "c"):
            raise SchemaInstanceError(f"pattern: \\{char} is unsupported")
        return ("lit", char)

    def _class(self) -> _Node:
        negated = self._peek() == "^"
        if negated:
            self.pos += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while first or self._peek() != "]":
            first = False
            low = self._class_member(ranges)
            if low is None:
                continue
            if self._peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self._class_member(ranges)
                if high is None or high < low:
                    raise SchemaInstanceError("pattern: bad range in a character class")
                ranges.append((low, high))
            else:
                ranges.append((low, low))
        self.pos += 1  # the closing ']'
        return _char_set(ranges, negated)

    def _class_member(self, ranges: list[tuple[int, int]]) -> int | None:
        """One class member's code point; escapes like \\d add their ranges and return None."""
        char = self._take()
        if char != "\\":
            return ord(char)
        node = self._escape(in_class=True)
        if node[0] == "lit":
            return ord(node[1])
        if node[0] == "set":
            ranges.extend((ord(c), ord(c)) for c in node[1])
            return None
        raise SchemaInstanceError("pattern: unsupported escape in a character class")


def _sample(node: _Node, repeat: int, choice: int, counter: Iterator[int]) -> str:
    """One string matching `node`: quantifiers repeat `repeat` times where allowed,
    alternations take branch `choice`, set members rotate with `counter`."""
    kind = node[0]
    if kind == "lit":
        return str(node[1])
    if kind == "set":
        members: list[str] = node[1]
        return members[next(counter) % len(members)]
    if kind == "seq":
        return "".join(_sample(child, repeat, choice, counter) for child in node[1])
    if kind == "alt":
        branches: list[_Node] = node[1]
        return _sample(branches[choice % len(branches)], repeat, choice, counter)
    _, child, low, high = node
    times = max(low, repeat) if high is None else min(max(low, repeat), high)
    return "".join(_sample(child, repeat, choice, counter) for _ in range(times))


def pattern_sample(pattern: str, low: int, high: int | None, h: int) -> str:
    """A string with `re.search(pattern, s)` and a length in [low, high]."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise SchemaInstanceError(f"pattern {pattern!r} does not compile: {exc}") from exc
    tree = _PatternParser(pattern).parse()
    repeats = list(dict.fromkeys((3, 1, 0, 2, 5, 8, low, high if high is not None else low)))
    for choice in range(4):
        for repeat in repeats:
            sample = _sample(tree, repeat, choice, _counter(h))
            pad = "a" * max(0, low - len(sample))
            for candidate in (sample, sample + pad, pad + sample):
                fits = low <= len(candidate) and (high is None or len(candidate) <= high)
                if fits and compiled.search(candidate):
                    return candidate
    raise SchemaInstanceError(f"pattern {pattern!r}: no sample fits the length limits")


def _counter(start: int) -> Iterator[int]:
    while True:
        yield start >> 32  # the high bits of a linear congruential sequence
        start = (start * 6364136223846793005 + 1442695040888963407) % 2**64
