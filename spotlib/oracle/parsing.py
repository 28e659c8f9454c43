"""Reading an Oracle's reply: thoughts apart, the text between the markers, no meta-phrases.

A reply is usable only when it holds a complete marked block; anything else is a
failure with a named reason, so the stage can count and report it rather than
train on a reply that says "Here is the corrected solution:".
"""
from __future__ import annotations

import re
from dataclasses import dataclass

CORRECTED = ("=== CORRECTED STARTED ===", "=== CORRECTED ENDED ===")
SOLUTION = ("=== SOLUTION STARTED ===", "=== SOLUTION ENDED ===")

_THINK_BLOCK = re.compile(r"<(think|thought|thinking)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(think|thought|thinking)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(think|thought|thinking)>", re.IGNORECASE)
# Lines an LLM wraps around an answer that are not part of the answer.
_META_LEAD = re.compile(
    r"^\s*(\*\*)?(here\s+is|here's|below\s+is|sure|certainly|okay|ok|of\s+course|"
    r"the\s+corrected|corrected\s+(solution|version|answer|response)|the\s+solution|solution)\b[^\n]*:\s*(\*\*)?\s*$",
    re.IGNORECASE)
_META_TRAIL = re.compile(
    r"^\s*(i\s+hope|hope\s+this|let\s+me\s+know|feel\s+free|note:\s*i\s+(kept|preserved|changed)|"
    r"i\s+(kept|preserved|have\s+kept|changed|corrected|fixed))\b.*$", re.IGNORECASE)
_FENCE = re.compile(r"^```[a-zA-Z]*\n(.*)\n```$", re.DOTALL)


@dataclass
class ParsedReply:
    text: str | None        # the marked block, cleaned; None when the reply is unusable
    thoughts: str           # reasoning kept apart (never part of the training text)
    failure: str | None     # why `text` is None: empty_reply | no_markers | no_end_marker | truncated | empty_block


def marker_pattern(marker: str) -> re.Pattern:
    """Tolerant form of a marker: any run of '=' and any spacing or case around the words."""
    words = marker.strip("= ").split()
    return re.compile(r"=+\s*" + r"\s+".join(map(re.escape, words)) + r"\s*=+", re.IGNORECASE)


def split_thoughts(reply: str) -> tuple[str, str]:
    """(thoughts, answer): `<think>` blocks (also `<thought>`) and an orphan `</think>` prefix."""
    thoughts = [m.group(2).strip() for m in _THINK_BLOCK.finditer(reply)]
    rest = _THINK_BLOCK.sub("", reply)
    close = _THINK_CLOSE.search(rest)
    if close and not _THINK_OPEN.search(rest[:close.start()]):
        # Some servers strip the opening tag: everything before the closing tag is thought.
        thoughts.append(rest[:close.start()].strip())
        rest = rest[close.end():]
    opened = _THINK_OPEN.search(rest)
    if opened:  # unterminated thinking (cut off): it is all thought
        thoughts.append(rest[opened.end():].strip())
        rest = rest[:opened.start()]
    return "\n\n".join(t for t in thoughts if t), rest


def strip_meta(text: str) -> str:
    """Drop wrapper lines (leading "Here is the corrected solution:", trailing "I hope this helps")."""
    for _ in range(2):  # wrapper lines may sit outside or inside a code fence
        lines = text.strip().split("\n")
        while lines and (not lines[0].strip() or _META_LEAD.match(lines[0])):
            lines.pop(0)
        while lines and (not lines[-1].strip() or _META_TRAIL.match(lines[-1])):
            lines.pop()
        text = "\n".join(lines).strip()
        fenced = _FENCE.match(text)
        if fenced:
            text = fenced.group(1)
    return text.strip()


def parse_reply(reply: str | None, markers: tuple[str, str] = CORRECTED, reasoning: str | None = None,
                finish_reason: str | None = None) -> ParsedReply:
    """Extract the last complete marked block of `reply`; `reasoning` is a server's separate thought field."""
    thoughts, body = split_thoughts(reply or "")
    if reasoning:
        thoughts = (reasoning.strip() + ("\n\n" + thoughts if thoughts else "")).strip()
    if not body.strip():
        return ParsedReply(None, thoughts, "truncated" if finish_reason == "length" else "empty_reply")
    starts = list(marker_pattern(markers[0]).finditer(body))
    if not starts:
        return ParsedReply(None, thoughts, "truncated" if finish_reason == "length" else "no_markers")
    tail = body[starts[-1].end():]
    end = marker_pattern(markers[1]).search(tail)
    if end is None:
        return ParsedReply(None, thoughts, "truncated" if finish_reason == "length" else "no_end_marker")
    text = strip_meta(tail[:end.start()])
    if not text:
        return ParsedReply(None, thoughts, "empty_block")
    return ParsedReply(text, thoughts, None)


def wrap(text: str, markers: tuple[str, str] = CORRECTED, thoughts: str = "") -> str:
    """A reply in the format `parse_reply` reads (what a well-behaved Oracle sends)."""
    head = f"<think>\n{thoughts}\n</think>\n\n" if thoughts else ""
    return f"{head}{markers[0]}\n{text}\n{markers[1]}"
