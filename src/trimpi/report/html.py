"""A minimal markdown → HTML rendering for the self-contained report.html: headings, paragraphs, bullet lists,
tables, code blocks, images inlined as data URIs, and inline `code`, **bold** and *italic*."""

from __future__ import annotations

import html
import re

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")


def inline(text: str) -> str:
    """One line of Markdown text as escaped HTML with `code`, **bold** and *italic* rendered."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        code, bold, italic = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{inline(bold)}</strong>")
        else:
            out.append(f"<em>{inline(italic)}</em>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def to_html(md: str, images: dict[str, str | None]) -> str:
    """A minimal markdown → HTML rendering (headings, tables, code, images inlined as data URIs)."""
    body, in_code, in_table, in_list = [], False, False, False
    for line in md.splitlines():
        if in_list and not line.startswith("- "):
            body.append("</ul>")
            in_list = False
        if line.startswith("```"):
            body.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            body.append(html.escape(line))
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            tag = "td" if in_table else "th"
            body.append(("" if in_table else "<table>") + "<tr>" + "".join(
                f"<{tag}>{inline(c)}</{tag}>" for c in cells) + "</tr>")
            in_table = True
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1:line.index(")")].removesuffix(".png")
            if images.get(name):
                body.append(f'<img alt="{name}" src="data:image/png;base64,{images[name]}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(("" if in_list else "<ul>") + f"<li>{inline(line[2:])}</li>")
            in_list = True
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    if in_table:
        body.append("</table>")
    if in_list:
        body.append("</ul>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}pre{background:#f6f6f6;padding:8px;"
             "overflow-x:auto;font-size:12px}img{max-width:100%}code{background:#f1f1f1;padding:0 3px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>trimpi report</title><style>{style}</style>" \
           f"</head><body>\n" + "\n".join(body) + "\n</body></html>\n"


