"""Keeping user-provided text's writing direction to itself (Unicode bidi isolation, UAX #9).

A name holding an unterminated right-to-left override (U+202E) reverses whatever follows it on the line: a page
header read "6202 raM 11 deW". HTML wraps such text in <bdi>; text-only places (titles, SVG labels, plain e-mail)
wrap it in FIRST STRONG ISOLATE … POP DIRECTIONAL ISOLATE. Either way the text's own isolates are balanced first, so
that a stray U+2069 cannot close ours early, nor an unclosed U+2066-8 swallow what follows; embeddings and overrides
(U+202A-E) end with the isolate around them.
"""

from __future__ import annotations

from markupsafe import Markup, escape

_OPENS = frozenset("\u2066\u2067\u2068")  # LRI, RLI, FSI
_CLOSE = "\u2069"  # PDI
FSI = "\u2068"


def balanced(text: str) -> str:
    """`text` with every isolate it opens closed, and closings without an opening dropped."""
    if not any(ch in _OPENS or ch == _CLOSE for ch in text):
        return text
    out, depth = [], 0
    for ch in text:
        if ch in _OPENS:
            depth += 1
        elif ch == _CLOSE:
            if not depth:
                continue
            depth -= 1
        out.append(ch)
    return "".join(out) + _CLOSE * depth


def isolated(text: object) -> str:
    """Plain text that keeps its direction to itself wherever it is put."""
    return f"{FSI}{balanced(str(text))}{_CLOSE}"


def bdi(text: object) -> Markup:
    """HTML: the escaped text in a <bdi> element."""
    return Markup("<bdi>") + escape(balanced(str(text))) + Markup("</bdi>")
