"""The interactive explorer: explorer.html, its data as a script (explorer-data.js), and vendored JS/CSS.

Pages opened with file:// cannot fetch() JSON in Chromium, so the data is a script that sets
`window.CETA2VEC_DATA`. It is columnar and compact enough for 100k points: numbers as base64
little-endian typed arrays, repeated strings (recordings, sites, labels) as a dictionary plus codes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.report.content import ExplorerData, ReportContent
from tasks.report.explorer_review import check_review, review_payload
from tasks.report.html import esc, install_assets, write_text_atomic

if TYPE_CHECKING:
    from tasks.report.explorer_frames import ExplorerFrames

DATA_SCRIPT = "explorer-data.js"
DATA_FORMAT = 2


def typed(array: np.ndarray, dtype: str) -> dict:
    """A typed array for the browser: {"dtype": "f32", "b64": ...} (little-endian)."""
    numpy_dtype = {"f32": "<f4", "i32": "<i4", "u8": "u1", "u16": "<u2", "u32": "<u4"}[dtype]
    data = np.ascontiguousarray(np.asarray(array).astype(numpy_dtype, copy=False)).tobytes()
    return {"dtype": dtype, "b64": base64.b64encode(data).decode("ascii")}


def strings(values: list[str]) -> dict:
    """A string column: a dictionary and one code per row, or the plain list when most values are unique."""
    values = ["" if v is None else str(v) for v in values]
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    if len(values) > 64 and len(index) > 0.5 * len(values):
        return {"plain": values}
    dtype = "u8" if len(index) <= 1 << 8 else "u16" if len(index) <= 1 << 16 else "u32"
    return {"dict": list(index), "codes": typed(codes, dtype)}


def distances_u16(distances: np.ndarray) -> dict:
    """Cosine distances (0..2) as uint16 steps of the largest one; 65535 = no neighbour. Shown to 4 decimals."""
    d = np.asarray(distances, dtype=np.float64)
    finite = np.isfinite(d)
    top = float(d[finite].max()) if finite.any() else 1.0
    scale = top / 65534 if top > 0 else 1.0
    q = np.where(finite, np.clip(np.round(d / scale), 0, 65534), 65535)
    return {**typed(q, "u16"), "scale": scale}


def check(data: ExplorerData) -> int:
    """Number of rows; a clear error naming the column when the columns disagree."""
    n = len(data.segment_id)
    for name in ("recording", "site", "start_time", "start_s", "label", "cluster", "thumbnail", "audio"):
        if len(getattr(data, name)) != n:
            raise ValueError(f"explorer data: column {name!r} has {len(getattr(data, name))} rows, segment_id has {n}")
    for layer, xy in data.coords.items():
        if np.shape(xy) != (n, 2):
            raise ValueError(f"explorer data: coords of layer {layer} have shape {np.shape(xy)}, expected ({n}, 2)")
        for name in ("neighbours", "distances"):
            table = getattr(data, name).get(layer)
            if table is not None and (np.ndim(table) != 2 or np.shape(table)[0] != n
                                      or np.shape(table) != np.shape(data.neighbours.get(layer, table))):
                raise ValueError(f"explorer data: {name} of layer {layer} have shape {np.shape(table)}, expected ({n}, k)")
    for name in ("valid_s", "rms_dbfs", "hour_utc"):
        column = getattr(data, name)
        if column is not None and len(column) != n:
            raise ValueError(f"explorer data: column {name!r} has {len(column)} rows, segment_id has {n}")
    for column, values in data.labels.items():
        if len(values) != n:
            raise ValueError(f"explorer data: label column {column!r} has {len(values)} rows, segment_id has {n}")
    check_review(data.review)
    frames = data.frames
    if frames is not None:
        m = len(frames)
        for name in ("segment", "time_s", "rms_dbfs"):
            if len(getattr(frames, name)) != m:
                raise ValueError(f"explorer frames: column {name!r} has {len(getattr(frames, name))} rows, frame has {m}")
        if np.shape(frames.coords) != (m, 2):
            raise ValueError(f"explorer frames: coords have shape {np.shape(frames.coords)}, expected ({m}, 2)")
        if m and (int(np.min(frames.segment)) < 0 or int(np.max(frames.segment)) >= n):
            raise ValueError("explorer frames: a frame points at a segment row that does not exist")
        for name, units in frames.units.items():
            if len(units) != m:
                raise ValueError(f"explorer frames: units {name!r} have {len(units)} rows, frame has {m}")
    return n


def main_layer(data: ExplorerData) -> int | None:
    layers = sorted(data.coords)
    if data.main_layer in data.coords:
        return data.main_layer
    return layers[len(layers) // 2] if layers else None


def payload(content: ReportContent) -> dict:
    """What explorer.js reads (format 2)."""
    data = content.explorer
    base = {"format": DATA_FORMAT, "title": content.title, "model_id": content.model_id,
            "generated_at": content.generated_at, "report": "index.html"}
    if data is None:
        return {**base, "n": 0, "layers": [], "main_layer": None, "label_column": None}
    n = check(data)
    layers = []
    for layer in sorted(data.coords):
        xy = np.asarray(data.coords[layer], dtype=np.float32)
        xy = np.where(np.isfinite(xy), xy, np.nan)
        entry = {"layer": int(layer), "coords": typed(xy.reshape(-1), "f32"), "k": 0}
        neighbours = data.neighbours.get(layer)
        if neighbours is not None and np.size(neighbours):
            neighbours = np.asarray(neighbours)
            bad = (neighbours < 0) | (neighbours >= n)
            entry["k"] = int(neighbours.shape[1])
            entry["neighbours"] = typed(np.where(bad, -1, neighbours).reshape(-1), "i32")
            distances = data.distances.get(layer)
            if distances is None:
                distances = np.full(neighbours.shape, np.nan)
            entry["distances"] = distances_u16(np.where(bad, np.nan, np.asarray(distances, dtype=np.float64)).reshape(-1))
        layers.append(entry)
    media = sum(1 for a in data.audio if a)
    return {
        **base, "n": n, "label_column": data.label_column, "main_layer": main_layer(data), "layers": layers,
        "media_segments": media, "thumbnails": sum(1 for t in data.thumbnail if t),
        "segment_id": strings(data.segment_id), "recording": strings(data.recording), "site": strings(data.site),
        "start_time": strings(data.start_time), "label": strings(data.label), "thumbnail": strings(data.thumbnail),
        "audio": strings(data.audio), "start_s": typed(np.asarray(data.start_s, dtype=np.float64), "f32"),
        "cluster": typed(np.asarray(data.cluster, dtype=np.int64), "i32"),
        "valid_s": optional_f32(data.valid_s), "rms_dbfs": optional_f32(data.rms_dbfs),
        "hour_utc": optional_f32(data.hour_utc), "segment_seconds": data.segment_seconds,
        "labels": [{"name": name, "values": strings(values)} for name, values in data.labels.items()],
        "freq_ticks": [[round(float(f), 4), str(t)] for f, t in data.freq_ticks],
        "frames": frames_payload(data.frames),
        "review": review_payload(data.review),
    }


def optional_f32(values: np.ndarray | None) -> dict | None:
    return None if values is None else typed(np.asarray(values, dtype=np.float64), "f32")


def frames_payload(frames: ExplorerFrames | None) -> dict | None:
    """The frame/unit mode's columns; a frame's recording, labels and media are its segment's (by row)."""
    if frames is None or not len(frames):
        return None
    xy = np.asarray(frames.coords, dtype=np.float32)
    return {
        "n": len(frames), "layer": int(frames.layer), "method": frames.method, "window_s": float(frames.window_s),
        "coords": typed(np.where(np.isfinite(xy), xy, np.nan).reshape(-1), "f32"),
        "segment": typed(frames.segment, "i32"), "frame": typed(frames.frame, "i32"),
        "time_s": typed(frames.time_s, "f32"), "rms_dbfs": typed(frames.rms_dbfs, "f32"),
        "units": [{"name": name, "size": int(frames.unit_sizes.get(name, int(np.max(codes)) + 1)),
                   "codes": typed(codes, "i32")} for name, codes in frames.units.items()],
        "main_units": frames.main_units,
    }


def data_script(content: ReportContent) -> str:
    """`window.CETA2VEC_DATA = {...};` that no value can break out of: ASCII JSON with <, > and & as \\u escapes
    (so not even '</script>' or '<!--' survives), which JavaScript reads as the same characters."""
    text = json.dumps(payload(content), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"window.CETA2VEC_DATA = {text};\n"


def render_explorer(content: ReportContent) -> str:
    title = f"Explorer · {content.model_id}"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="assets/explorer.css">
</head>
<body>
<header class="topbar">
  <a class="back" href="index.html">&larr; Report</a>
  <h1>{esc(content.title)} <span class="model">explorer · <code>{esc(content.model_id)}</code></span></h1>
  <p id="status" class="status" aria-live="polite">Loading…</p>
</header>
<div class="layout">
  <aside class="controls" aria-label="Map settings and filters">
    <div class="field">Points
      <div id="mode" class="segmented" role="group" aria-label="Points">
        <button type="button" data-mode="segments" aria-pressed="true">Segments</button><button type="button" data-mode="frames" aria-pressed="false">Frames · units</button>
      </div></div>
    <div class="field">Review
      <button type="button" id="review-open" class="review-open" aria-pressed="false"
              title="Windows the classifiers are least sure of (ceta2vec suggest): mark them yes, no or skip">Review suggestions</button></div>
    <label class="field">Layer <select id="layer"></select></label>
    <label class="field">Colour by <select id="colour-by"></select></label>
    <div id="legend" class="legend" aria-label="What each colour is"></div>
    <div class="field">Drag to
      <div id="tool" class="segmented" role="group" aria-label="Drag to">
        <button type="button" data-tool="pan" aria-pressed="true" title="pan (P)">Pan</button><button type="button" data-tool="box" aria-pressed="false" title="box select (B)">Box</button><button type="button" data-tool="lasso" aria-pressed="false" title="lasso select (L)">Lasso</button>
      </div></div>
    <label class="field">Recording contains <input id="search" type="search" placeholder="file name" autocomplete="off"></label>
    <fieldset id="label-filter" class="filter"><legend>Label</legend>
      <div class="filter-actions"><button type="button" data-select="all">all</button><button type="button" data-select="none">none</button></div>
      <div class="options"></div></fieldset>
    <fieldset id="site-filter" class="filter"><legend>Site</legend>
      <div class="filter-actions"><button type="button" data-select="all">all</button><button type="button" data-select="none">none</button></div>
      <div class="options"></div></fieldset>
    <p class="hint">Hover a point for its spectrogram; click to listen and list its nearest neighbours.
    Box or lasso a group (Shift adds to it) to see, hear and export it. Scroll to zoom, double-click to reset,
    Esc to clear.</p>
  </aside>
  <main class="centre">
    <div class="plot" id="plot">
      <canvas id="points" aria-label="UMAP map of the segments"></canvas>
      <canvas id="overlay" aria-hidden="true"></canvas>
      <div id="tooltip" class="tooltip" hidden></div>
      <div id="axes-note" class="axes-note"></div>
    </div>
    <section id="review" class="review" aria-label="Review suggested windows" hidden>
      <div class="review-bar">
        <h2 id="review-title">Review</h2>
        <label class="review-label">Label <select id="review-label"></select></label>
        <span id="review-progress" class="muted"></span>
        <button type="button" id="review-export">Export decisions CSV</button>
        <button type="button" id="review-close">Back to the map</button>
      </div>
      <p class="hint review-keys">Keys: <kbd>y</kbd> yes, <kbd>n</kbd> no, <kbd>s</kbd> skip (each moves to the next window),
      <kbd>&uarr;</kbd>/<kbd>&darr;</kbd> move, <kbd>Space</kbd> play. <code>ceta2vec label</code> reads the exported CSV.</p>
      <div class="review-body">
        <div class="review-current">
          <canvas id="review-thumb" class="spectrogram" aria-label="spectrogram of the window under review"></canvas>
          <p id="review-where" class="review-where"></p>
          <audio id="review-player" controls preload="none"></audio>
          <div class="review-actions" role="group" aria-label="Decision">
            <button type="button" data-decision="yes">Yes (y)</button><button type="button" data-decision="no">No (n)</button><button type="button" data-decision="skip">Skip (s)</button>
          </div>
        </div>
        <ol id="review-list" class="review-list"></ol>
      </div>
    </section>
    <section id="selection" class="selection" aria-label="Selected points" hidden>
      <div class="selection-bar">
        <h2 id="selection-title">Selection</h2>
        <span id="selection-note" class="muted"></span>
        <button type="button" id="export-csv">Export CSV</button>
        <button type="button" id="clear-selection">Clear</button>
      </div>
      <div id="selection-grid" class="selection-grid"></div>
      <audio id="grid-player" preload="none" hidden></audio>
    </section>
  </main>
  <aside class="details" id="details" aria-label="Selected point">
    <h2 id="details-kind">Segment</h2>
    <p id="details-empty" class="muted">Click a point on the map.</p>
    <div id="details-body" hidden>
      <canvas id="details-thumb" class="spectrogram" aria-label="spectrogram of the selected point"></canvas>
      <table class="fields"><tbody id="details-fields"></tbody></table>
      <audio id="clip-player" controls preload="none"></audio>
      <p id="clip-missing" class="muted" hidden></p>
      <h3 id="neighbours-title">Nearest neighbours</h3>
      <ol id="neighbours" class="neighbours"></ol>
    </div>
  </aside>
</div>
<noscript><p class="noscript">The explorer needs JavaScript. The report itself (index.html) does not.</p></noscript>
<script src="{DATA_SCRIPT}"></script>
<script src="assets/explorer.js"></script>
</body>
</html>
"""


def write_explorer(content: ReportContent, out_dir: Path) -> Path:
    """out_dir/explorer.html, out_dir/explorer-data.js and the vendored assets; returns the page."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    install_assets(out_dir)
    write_text_atomic(out_dir / DATA_SCRIPT, data_script(content))
    page = out_dir / "explorer.html"
    write_text_atomic(page, render_explorer(content))
    return page
