"""report.md -> one self-contained HTML file that opens offline.

Markdown is rendered with markdown-it-py (installed with transformers, through rich); images
are embedded as base64 data URIs; `$…$` and `$$…$$` are drawn as SVG by matplotlib's mathtext,
so no script or font is fetched from the network.
"""
from __future__ import annotations

import base64
import html
import io
import mimetypes
import re
from functools import lru_cache
from pathlib import Path

_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)")
# TeX spellings mathtext does not know, and their equivalents
_TEX_ALIASES = {r"\le ": r"\leq ", r"\ge ": r"\geq ", r"\ne ": r"\neq "}

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:60rem;
margin:2rem auto;padding:0 1rem;line-height:1.5;color:#222}
table{border-collapse:collapse;margin:0.8rem 0;font-size:0.9rem;display:block;max-width:100%;overflow-x:auto}th,td{border:1px solid #ccc;padding:0.2rem 0.5rem}
th{background:#f3f3f3}img{max-width:100%}code{background:#f4f4f4;padding:0 0.2rem}
.math-display{text-align:center;margin:0.8rem 0}h2{border-bottom:1px solid #ddd;margin-top:2.5rem}"""


@lru_cache(maxsize=512)
def math_svg(tex: str, display: bool = False) -> str:
    """An <img> holding `tex` drawn by mathtext (the TeX itself in <code> if mathtext cannot parse it)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    source = tex.strip()
    for old, new in _TEX_ALIASES.items():
        source = source.replace(old, new)
    buf = io.BytesIO()
    try:
        depth = mathtext.math_to_image(f"${source}$", buf, prop=FontProperties(size=15 if display else 13),
                                       dpi=72, format="svg")
    except Exception:  # noqa: BLE001 - show the source rather than lose the formula
        return f"<code>{html.escape(tex)}</code>"
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<img class="math" alt="{html.escape(tex, quote=True)}" '
            f'style="vertical-align:-{depth:.1f}px" src="data:image/svg+xml;base64,{data}">')


def _embed_images(text: str, base_dir: Path) -> str:
    def embed(match: re.Match) -> str:
        src = html.unescape(match.group(1))
        path = base_dir / src
        if src.startswith(("data:", "http:", "https:")) or not path.is_file():
            return match.group(0)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f'src="data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"'

    return re.sub(r'src="([^"]+)"', embed, text)


def markdown_to_html(text: str, base_dir: Path, title: str = "report") -> str:
    from markdown_it import MarkdownIt

    math: list[str] = []

    def hold(rendered: str) -> str:
        math.append(rendered)
        return f"MATHSPAN{len(math) - 1}END"

    # Math first, so markdown never sees its underscores and stars.
    text = _DISPLAY_MATH.sub(lambda m: hold(f'<div class="math-display">{math_svg(m.group(1), True)}</div>'), text)
    text = _INLINE_MATH.sub(lambda m: hold(math_svg(m.group(1))), text)
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    body = re.sub(r"MATHSPAN(\d+)END", lambda m: math[int(m.group(1))], body)
    body = _embed_images(body, Path(base_dir))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}</body></html>\n")
