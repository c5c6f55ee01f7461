"""The report as one HTML page that opens from disk: figures, captions, clips, tables, configuration.

Nothing is fetched from the network and every link is relative, so the report folder can be moved,
zipped or opened with file://. Every value shown comes from the data (file names, labels, sites) and
is escaped: a recording called `<img src=x onerror=...>.wav` is shown as text, never run.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote

from schemas.names import html_id
from tasks.report.content import AudioClip, FigureRef, ReportContent, ReportSection

ASSETS = Path(__file__).parent / "assets"
ASSET_FILES = ("report.css", "explorer.css", "explorer.js", "unit.js")
EXPLORER_PAGE = "explorer.html"
LONG_TABLE_ROWS = 18  # key/value tables longer than this are split into side-by-side columns
FOLD_CLIPS = 24  # more clips than this start folded (and load only when played)


def esc(value: object) -> str:
    """Text for element content and quoted attribute values."""
    return html.escape(_text(value), quote=True)


def href(path: str) -> str:
    """A relative path as an attribute value: percent-encoded (spaces, '#', '?', ':' in file names), then escaped.

    Encoding ':' also keeps a hostile 'javascript:...' path a harmless relative file name."""
    return html.escape(quote(path.replace(os.sep, "/"), safe="/"), quote=True)


def anchor(key: str) -> str:
    return html_id(key)


def _text(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a" if math.isnan(value) else str(value)
        return f"{value:.4g}" if value != int(value) or abs(value) >= 1e6 else str(int(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        return _text(value.tolist())
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) or (
        hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iuf")


def install_assets(out_dir: Path) -> None:
    """Copy the vendored CSS and JavaScript beside the pages (no CDN, no fonts to fetch)."""
    target = out_dir / "assets"
    target.mkdir(parents=True, exist_ok=True)
    for name in ASSET_FILES:
        shutil.copyfile(ASSETS / name, target / name)


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside, then rename: a reader (or a browser reload) never sees half a page."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def table_html(rows: list[dict], caption: str | None = None, css_class: str = "data") -> str:
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    numeric = {c for c in columns if all(_is_number(r.get(c)) for r in rows if r.get(c) is not None)
               and any(r.get(c) is not None for r in rows)}
    head = "".join(f'<th scope="col"{" class=num" if c in numeric else ""}>{esc(c)}</th>' for c in columns)
    body = "\n".join(
        "<tr>" + "".join(f'<td{" class=num" if c in numeric else ""}>{prose(_text(r.get(c)))}</td>' for c in columns) + "</tr>"
        for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="table-wrap"><table class="{css_class}">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>\n{body}\n</tbody></table></div>")


def key_value_html(pairs: list[tuple[str, object]], caption: str | None = None) -> str:
    """Settings as two-column tables; long lists split into side-by-side tables that print well."""
    if not pairs:
        return ""
    parts = max(1, min(2, math.ceil(len(pairs) / LONG_TABLE_ROWS)))
    per = math.ceil(len(pairs) / parts)
    tables = []
    for i in range(parts):
        chunk = pairs[i * per:(i + 1) * per]
        body = "\n".join(f'<tr><th scope="row">{esc(k)}</th><td>{prose(_text(v))}</td></tr>' for k, v in chunk)
        tables.append(f'<table class="kv"><tbody>\n{body}\n</tbody></table>')
    cap = f"<h3>{esc(caption)}</h3>" if caption else ""
    return f'{cap}<div class="kv-grid kv-{parts}">{"".join(tables)}</div>'


def flatten(mapping: dict, prefix: str = "") -> list[tuple[str, object]]:
    pairs: list[tuple[str, object]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            pairs += flatten(value, name + ".")
        else:
            pairs.append((name, value))
    return pairs


def prose(text: str) -> str:
    """Escaped text in which `command` spans become <code>: the report's own prose names commands in
    backticks, and a reader should see code, not backticks."""
    parts = esc(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick is data, shown as it is
        return esc(text)
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def paragraphs(text: str) -> str:
    return "".join(f"<p>{prose(p.strip())}</p>" for p in re.split(r"\n\s*\n", text or "") if p.strip())


def verdict_html(verdict) -> str:
    """The first screen: the plain-words verdict, the figures it rests on beside their chance levels,
    and the scorecard."""
    if verdict is None:
        return ""
    details = "".join(f"<li>{prose(d)}</li>" for d in verdict.details)
    parts = [f'<section id="verdict" class="verdict verdict-{esc(verdict.level)}" aria-label="Verdict">',
             '<h2>Verdict</h2>', f'<p class="headline">{prose(verdict.headline)}</p>',
             f"<ul>{details}</ul>" if details else ""]
    if verdict.scorecard:
        parts.append(table_html(verdict.scorecard, "Scorecard (ceta2vec evaluate): 95% bootstrap intervals over "
                                                   "recordings, beside the baselines and what the labels alone give"))
    else:
        parts.append("<p>No scorecard: this model was not evaluated against labels "
                     "(<code>ceta2vec evaluate --label-column COLUMN</code>).</p>")
    if verdict.training:
        parts.append(table_html(verdict.training, "Training at the embedded checkpoint, beside chance"))
    if verdict.figure is not None:
        parts.append(figure_html(verdict.figure, 0).replace('<span class="fig-no">Figure 0.</span> ', ""))
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def figure_html(figure: FigureRef, number: int) -> str:
    return (
        f'<figure id="fig-{anchor(figure.key)}" class="figure">'
        f'<a href="{href(figure.svg)}" title="Open the vector (SVG) version">'
        f'<img src="{href(figure.png)}" alt="{esc(figure.title)}"></a>'
        f'<figcaption><span class="fig-no">Figure {number}.</span> <strong>{esc(figure.title)}.</strong> '
        f'{esc(figure.caption)} <span class="fig-links"><a href="{href(figure.svg)}">SVG</a> · '
        f'<a href="{href(figure.png)}">PNG</a></span></figcaption></figure>'
    )


def clip_html(clip: AudioClip, show_caption: bool = True, preload: str = "metadata") -> str:
    title = clip.title
    if clip.group and title.startswith(clip.group) and len(title) > len(clip.group):
        title = title[len(clip.group):].lstrip(" ,;:-")  # the group heading says it already
    caption = f'<p class="clip-caption">{esc(clip.caption)}</p>' if clip.caption and show_caption else ""
    return (f'<div class="clip"><p class="clip-title" title="{esc(clip.title)}">{esc(title)}</p>'
            f'<audio controls preload="{preload}" src="{href(clip.wav)}"></audio>{caption}</div>')


def clips_html(clips: list[AudioClip]) -> str:
    """Players in a grid, one row block per group (e.g. per unit); a caption every clip shares is said once;
    a long list starts folded and loads each clip only when played."""
    if not clips:
        return ""
    shared = clips[0].caption if len(clips) > 1 and all(c.caption == clips[0].caption for c in clips) else ""
    many = len(clips) > FOLD_CLIPS
    preload = "none" if many else "metadata"
    groups: dict[str, list[AudioClip]] = {}
    for clip in clips:
        groups.setdefault(clip.group, []).append(clip)
    blocks = []
    for group, members in groups.items():
        grid = '<div class="clips">' + "".join(clip_html(c, not shared, preload) for c in members) + "</div>"
        blocks.append(f'<div class="clip-group"><h4>{esc(group)}</h4>{grid}</div>' if group else grid)
    note = f'<p class="clips-note">{esc(shared)}</p>' if shared else ""
    if many:
        return (f'<details class="clips-fold"><summary>Listen: {len(clips)} audio clips'
                f'{f" in {len(groups)} groups" if len(groups) > 1 else ""}</summary>{note}{"".join(blocks)}</details>')
    return note + "".join(blocks)


def links_html(links: list) -> str:
    """Lists of links to pages of their own (per unit), one list per group."""
    groups: dict[str, list] = {}
    for link in links:
        groups.setdefault(link.group, []).append(link)
    blocks = []
    for group, members in groups.items():
        items = "".join(f'<li><a href="{href(m.href)}">{esc(m.title)}</a> <span class="note">{esc(m.note)}</span></li>'
                        for m in members)
        blocks.append((f"<h3>{esc(group)}</h3>" if group else "") + f'<ul class="unit-links">{items}</ul>')
    return "".join(blocks)


def section_html(section: ReportSection, first_figure: int) -> tuple[str, int]:
    parts = [f'<section id="sec-{anchor(section.key)}"><h2>{esc(section.title)}</h2>', paragraphs(section.intro)]
    number = first_figure
    for figure in section.figures:
        parts.append(figure_html(figure, number))
        number += 1
    parts.append(clips_html(section.clips))
    parts.append(links_html(section.links))
    parts += [table_html(rows) for rows in section.tables]
    parts.append("</section>")
    return "\n".join(p for p in parts if p), number


def readable(key: str) -> str:
    """A settings name as words: 'steps_per_chunk' -> 'steps per chunk'."""
    return key.replace("_", " ")


def configuration_html(configuration: dict) -> str:
    plain = [(readable(k), v) for k, v in configuration.items() if not isinstance(v, dict)]
    parts = [key_value_html(plain)] if plain else []
    parts += [key_value_html([(readable(name), value) for name, value in flatten(v)], caption=readable(k))
              for k, v in configuration.items() if isinstance(v, dict)]
    return "\n".join(parts)


def explorer_blurb(content: ReportContent) -> str:
    data = content.explorer
    if data is None:
        return ""
    layers = ", ".join(str(layer) for layer in sorted(data.coords))
    return (f'<p class="explorer-link"><a class="button" href="{EXPLORER_PAGE}">Open the interactive explorer</a> '
            f'<span>{len(data.segment_id):,} segments on a UMAP map (layers {esc(layers)}): hover for the '
            "spectrogram, click to listen and list the nearest neighbours.</span></p>")


def render_report(content: ReportContent) -> str:
    toc = (['<li><a href="#verdict">Verdict</a></li>'] if content.verdict is not None else [])
    toc += ['<li><a href="#summary">Data summary</a></li>']
    toc += [f'<li><a href="#sec-{anchor(s.key)}">{esc(s.title)}</a></li>' for s in content.sections]
    toc.append('<li><a href="#configuration">Configuration</a></li>')
    if content.explorer is not None:
        toc.append(f'<li><a href="{EXPLORER_PAGE}">Interactive explorer</a></li>')
    sections, number = [], 1
    for section in content.sections:
        text, number = section_html(section, number)
        sections.append(text)
    summary = key_value_html([(row.get("item"), row.get("value")) for row in content.summary])
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="ceta2vec">
<title>{esc(content.title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="assets/report.css">
</head>
<body>
<header class="masthead">
<p class="kicker">ceta2vec report</p>
<h1>{esc(content.title)}</h1>
<p class="meta">Model <code>{esc(content.model_id)}</code> · generated {esc(content.generated_at)}</p>
</header>
{verdict_html(content.verdict)}
{explorer_blurb(content)}
<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>
<main>
<section id="summary"><h2>Data summary</h2>
{summary}
</section>
{chr(10).join(sections)}
<section id="configuration"><h2>Configuration</h2>
<p>The settings this report and the model it shows were made with.</p>
{configuration_html(content.configuration)}
</section>
</main>
<footer><p>Written by ceta2vec. Every file this page shows lies in its folder; it opens from disk without a
network connection. Figures link to their vector (SVG) versions.</p></footer>
</body>
</html>
"""


def write_report(content: ReportContent, out_dir: Path) -> Path:
    """out_dir/index.html (and out_dir/assets/) for content whose media already lie under out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    install_assets(out_dir)
    page = out_dir / "index.html"
    write_text_atomic(page, render_report(content))
    return page
