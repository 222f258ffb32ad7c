"""HTML pieces of the report: one self-contained page (inline CSS, figures as data URIs, no network)."""

from __future__ import annotations

import base64
from html import escape

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1a202c;
background:#f7f8fa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:18px 28px 60px;background:#fff;min-height:100vh}
h1{font-size:1.6em;margin:.3em 0 .1em}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #e2e8f0;
padding-bottom:.2em}
nav{font-size:.9em;margin:.4em 0 1em}nav a{margin-right:.9em;color:#2b6cb0;text-decoration:none}
table{border-collapse:collapse;font-size:.86em;margin:.4em 0}td,th{border:1px solid #e2e8f0;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#edf2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.meta td:first-child{color:#4a5568;white-space:nowrap}
.kv{display:inline-block;margin:0 .7em 0 0;white-space:nowrap}.kv b{font-weight:500;color:#4a5568}
figure{margin:.6em 0 1.2em}figure img{max-width:100%;height:auto;border:1px solid #edf2f7}
figcaption{font-size:.85em;color:#4a5568}
.missing{color:#744210;background:#fffbeb;border-left:4px solid #d69e2e;padding:6px 10px;font-size:.9em}
.problem{color:#742a2a;background:#fff5f5;border-left:4px solid #c53030;padding:8px 12px}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:10px;font-size:.82em;overflow:auto;max-height:520px}
.reason{color:#9b2c2c;font-family:ui-monospace,monospace;font-size:.95em}
footer{margin-top:3em;font-size:.8em;color:#718096}
"""

# When the page has loaded, sets data-images / data-broken-images / data-errors / data-checked on <html> and
# shows a banner if a figure failed to load or decode (the headless-browser test reads these attributes).
SCRIPT = """(function(){var h=document.documentElement,errs=[];h.setAttribute("data-errors","");
window.addEventListener("error",function(e){var t=e.target;errs.push(t&&t.tagName?("cannot load "+
(t.getAttribute("alt")||t.tagName)):String(e.message));h.setAttribute("data-errors",errs.join("; "));},true);
window.addEventListener("load",function(){var bad=[],imgs=document.images;for(var i=0;i<imgs.length;i++){
var m=imgs[i];if(!(m.complete&&m.naturalWidth>0)){bad.push(m.getAttribute("alt")||("image "+i));}}
h.setAttribute("data-images",String(imgs.length));h.setAttribute("data-broken-images",bad.join("; "));
h.setAttribute("data-checked","1");if(bad.length){var w=document.getElementById("broken");
w.textContent=bad.length+" figure(s) failed to load: "+bad.join(", ");w.hidden=false;}});})();"""


def esc(x) -> str:
    return escape(str(x), quote=True)


def img(data: bytes, alt: str, caption: str = "") -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def missing(reason: str) -> str:
    return f'<p class="missing">Not shown: {esc(reason)}</p>'


def table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), cls: str = "") -> str:
    """``rows`` hold ready HTML; ``numeric`` column indexes are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table{f" class={cls!r}" if cls else ""}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def meta(rows: list[tuple[str, str]]) -> str:
    return '<table class="meta"><tbody>' + "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in rows) \
        + "</tbody></table>"


def params_cell(params: dict) -> str:
    return "".join(f'<span class="kv"><b>{esc(k)}</b>={esc(_short(v))}</span>' for k, v in params.items())


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def page(title: str, nav: list[tuple[str, str]], body: str, footer: str) -> str:
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style><script>{SCRIPT}</script></head>\n"
            f'<body><main><h1>{esc(title)}</h1><nav>{links}</nav>'
            f'<p id="broken" class="problem" hidden></p>\n{body}\n<footer>{footer}</footer></main></body></html>\n')
