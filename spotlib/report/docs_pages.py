"""Write the tiny study's result tables into the documentation pages from a run's files.

A page marks each table it quotes from a run as a region:

    <!-- generated: main-table from outputs/tiny/05_eval_forgetting/table.md -->

    ...the file's text...

    <!-- end generated -->

The path after `from` names the file under the study's output folder (`outputs/<profile>/` then
the file); `§ heading` after it takes one section of a markdown file (the text under that heading,
up to the next heading of the same or a higher level); a whole file loses its title line (`# ...`),
since the page's own heading names the region. A `.json` source is rendered by the region's
named renderer. Everything outside the regions is left byte for byte as it is, and a region whose
source is missing is left as it is and reported (the sweep and calibration are separate, long
commands). `--check` writes nothing and exits 1 naming each region that differs from its source.

    python -m spotlib.report.docs_pages [--profile tiny] [--outputs DIR] [--check]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from spotlib.config import REPO_ROOT
PAGES = ("README.md", "docs/tiny-study.md")
# The figures the pages show, copied from the run into docs/figures/ (source under the output folder).
FIGURES = {"frontier.png": "sweep/frontier.png", "scores_bar.png": "05_eval_forgetting/scores_bar.png",
           "proximity.png": "03_filter/proximity.png"}
END = "<!-- end generated -->"
BEGIN = re.compile(r"^<!-- generated: (?P<name>[a-z0-9-]+) from (?P<source>\S+)(?: § (?P<section>.+?))? -->$")


@dataclass(frozen=True)
class Region:
    page: str        # the page's path as given (for messages)
    name: str
    source: str      # as the marker writes it: outputs/<profile>/<file>
    section: str | None
    body_start: int  # line index after the begin marker
    body_end: int    # line index of the end marker

    def where(self) -> str:
        return f"{self.page}: region {self.name}"


class PageError(ValueError):
    """A page's markers do not pair up or name a source the generator cannot read."""


def find_regions(page: str, lines: list[str]) -> list[Region]:
    regions, open_at = [], None
    for i, line in enumerate(lines):
        stripped = line.rstrip("\n")
        if stripped.startswith("<!-- generated:"):
            match = BEGIN.match(stripped)
            if not match:
                raise PageError(f"{page}:{i + 1}: a generated-region marker must read "
                                "'<!-- generated: NAME from outputs/<profile>/FILE [§ heading] -->'")
            if open_at is not None:
                raise PageError(f"{page}:{i + 1}: region {match['name']} starts inside region "
                                f"{open_at[1]['name']} (line {open_at[0] + 1}) without its '{END}'")
            open_at = (i, match)
        elif stripped == END:
            if open_at is None:
                raise PageError(f"{page}:{i + 1}: '{END}' without a region started above it")
            start, match = open_at
            source = match["source"]
            if not source.startswith("outputs/") or source.count("/") < 2:
                raise PageError(f"{page}:{start + 1}: region {match['name']}: source {source!r} is not "
                                "outputs/<profile>/FILE")
            regions.append(Region(page, match["name"], source, match["section"], start + 1, i))
            open_at = None
    if open_at is not None:
        raise PageError(f"{page}:{open_at[0] + 1}: region {open_at[1]['name']} has no '{END}'")
    return regions


def source_path(region: Region, outputs: Path) -> Path:
    """The file under this run's output folder: the marker's path less its `outputs/<profile>/`."""
    return outputs.joinpath(*region.source.split("/")[2:])


def markdown_section(text: str, heading: str) -> str | None:
    """The text under `heading` (any level) up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(#+) (.*)$", line)
        if match and match[2].strip() == heading:
            level = len(match[1])
            body = []
            for following in lines[i + 1:]:
                other = re.match(r"^(#+) ", following)
                if other and len(other[1]) <= level:
                    break
                body.append(following)
            return "\n".join(body)
    return None


def base_model_table(manifest: dict) -> str:
    """The base model's held-out scores per family, one row per sampling temperature."""
    scores = {k: v for k, v in (manifest.get("heldout_scores") or {}).items() if k.startswith("T=")}
    if not scores:
        raise PageError("base_model/manifest.json has no heldout_scores")
    families = list(next(iter(scores.values())))
    lines = ["| sampling | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for key, row in scores.items():
        temperature = float(key[2:])
        label = "greedy" if temperature == 0 else f"T = {temperature:g}"
        lines.append(f"| {label} | " + " | ".join(f"{100 * row[f]:.1f}%" for f in families) + " |")
    return "\n".join(lines)


RENDERERS = {"base-model": base_model_table}


def region_text(region: Region, outputs: Path) -> tuple[str | None, str]:
    """What the region should hold, from its source; (None, why) when the run has not made it."""
    path = source_path(region, outputs)
    if not path.is_file():
        return None, f"no source {path}"
    if path.suffix == ".json":
        render = RENDERERS.get(region.name)
        if render is None:
            raise PageError(f"{region.where()}: no renderer for a .json source (known: {', '.join(RENDERERS)})")
        text = render(json.loads(path.read_text()))
    else:
        text = path.read_text()
        if region.section:   # a report gains its sections as commands run (the sweep's, for one)
            text = markdown_section(text, region.section)
            if text is None:
                return None, f"no heading '{region.section}' in {path} yet"
        elif text.startswith("# "):   # the file's own title: the page's heading names the region
            text = text.partition("\n")[2]
    return text.strip("\n"), ""


def body_lines(text: str) -> list[str]:
    """A region's lines between its markers: a blank line, the text, a blank line."""
    return ["\n"] + [line + "\n" for line in text.split("\n")] + ["\n"]


@dataclass
class PageResult:
    text: str
    stale: list[Region]
    missing: list[tuple[Region, str]]   # (region, why it was left as it is)


def render_page(page: str, text: str, outputs: Path) -> PageResult:
    lines = text.splitlines(keepends=True)
    regions = find_regions(page, lines)
    stale, missing = [], []
    # From the last region to the first, so earlier indices stay valid while replacing.
    for region in reversed(regions):
        fresh, why = region_text(region, outputs)
        if fresh is None:
            missing.append((region, why))
            continue
        new = body_lines(fresh)
        if lines[region.body_start:region.body_end] != new:
            stale.append(region)
            lines[region.body_start:region.body_end] = new
    return PageResult("".join(lines), stale[::-1], missing[::-1])


def copy_figures(outputs: Path, root: Path, check: bool) -> tuple[list[str], list[str]]:
    """Copy the run's figures into docs/figures/; (changed, missing) by name."""
    changed, missing = [], []
    for name, rel in FIGURES.items():
        src, dst = outputs / rel, root / "docs" / "figures" / name
        if not src.is_file():
            missing.append(f"{name} ({src})")
            continue
        if dst.is_file() and dst.read_bytes() == src.read_bytes():
            continue
        changed.append(f"docs/figures/{name}")
        if not check:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return changed, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", help="the study whose outputs fill the pages (outputs/<profile>/)")
    parser.add_argument("--outputs", type=Path, help="the study's output folder (default outputs/<profile>/)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="the repository whose pages are written")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming every region or figure that differs from the outputs")
    args = parser.parse_args(argv)
    outputs = args.outputs or args.root / "outputs" / args.profile
    if not outputs.is_dir():
        print(f"error: no study outputs at {outputs} (run `make reproduce PROFILE={args.profile}` first)",
              file=sys.stderr)
        return 2
    results = {}
    try:   # every page rendered before any is written: a bad marker leaves all of them as they were
        for page in PAGES:
            results[page] = render_page(page, (args.root / page).read_text(), outputs)
    except PageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stale_all = []
    for page, result in results.items():
        for region, why in result.missing:
            print(f"{region.where()}: left as it is, {why}")
        for region in result.stale:
            print(f"{region.where()}: {'differs from' if args.check else 'written from'} "
                  f"{source_path(region, outputs)}")
        stale_all += [r.where() for r in result.stale]
        if result.stale and not args.check:
            (args.root / page).write_text(result.text)
    changed, missing = copy_figures(outputs, args.root, args.check)
    for name in missing:
        print(f"figure {name}: left as it is, not made yet")
    for name in changed:
        print(f"{name}: {'differs from the run' if args.check else 'copied from the run'}")
    stale_all += changed
    if args.check and stale_all:
        print(f"stale: {', '.join(stale_all)} (run `make docs PROFILE={args.profile}`)", file=sys.stderr)
        return 1
    if not stale_all:
        left = any(result.missing for result in results.values()) or missing
        print(("every region and figure the run has made agrees with " if left else "pages agree with ")
              + str(outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
