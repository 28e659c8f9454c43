"""The README is a front door (at most 300 lines) and every relative link in the documentation resolves:
to a file that exists and, when it names a heading (`page.md#heading`), to a heading of that page."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from spotlib.config import REPO_ROOT

README_MAX_LINES = 300
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def pages() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "benchmarks" / "README.md"]


def unfenced_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            out.append((number, line))
    return out


def prose_lines(text: str) -> list[tuple[int, str]]:
    """Lines outside fenced code blocks, with inline code spans removed (a link there is code)."""
    return [(number, re.sub(r"`[^`]*`", "", line)) for number, line in unfenced_lines(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for _, line in unfenced_lines(path.read_text()):
        match = re.match(r"^#{1,6} (.+?)\s*#*\s*$", line)
        if match:
            base = slug(match[1])
            count = seen.get(base, 0)
            found.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for number, line in prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(REPO_ROOT)}:{number}: {target}"
            if not resolved.exists():
                broken.append(f"{where} (no file {resolved})")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{where} (no heading #{anchor} in {resolved.name})")
    return broken


def test_readme_is_a_front_door():
    lines = (REPO_ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}: move detail to docs/)"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page):
    assert page.is_file()
    assert not broken_links(page), "\n".join(broken_links(page))


def test_the_checker_finds_a_broken_link_and_a_missing_heading(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Title — `make x` (stage 05)\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md) [ok](other.md#title--make-x-stage-05) [ok](other.md#twice-1)\n"
                    "![gone](figures/none.png) [bad](other.md#nothing)\n"
                    "`[in code](nowhere.md)` [web](https://example.org/x.md)\n"
                    "```\n[fenced](nowhere.md)\n```\n")
    found = broken_links(page)
    assert len(found) == 2, found
    assert "figures/none.png" in found[0] and "#nothing" in found[1]
