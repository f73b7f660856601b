"""A minimal markdown → HTML rendering for the self-contained report.html."""

from __future__ import annotations

import html


def to_html(md: str, images: dict[str, str | None]) -> str:
    """A minimal markdown → HTML rendering (headings, tables, code, images inlined as data URIs)."""
    body, in_code, in_table = [], False, False
    for line in md.splitlines():
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
                f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
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
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}pre{background:#f6f6f6;padding:8px;"
             "overflow-x:auto;font-size:12px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>trimpi report</title><style>{style}</style>" \
           f"</head><body>\n" + "\n".join(body) + "\n</body></html>\n"


