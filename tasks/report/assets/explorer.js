/* ceta2vec explorer: segments (or sampled frames, coloured by unit) as points on a UMAP map, drawn on a canvas
 * in one pass. No libraries and nothing fetched: the data is window.CETA2VEC_DATA from explorer-data.js.
 * Data values are only ever put in the page with textContent or as encoded URLs, never as HTML.
 * Hover hit-testing uses a grid over the map so it stays O(points near the cursor) at 100k points.
 */
(function () {
  "use strict";

  var PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
                 "#882255", "#117733", "#999933", "#44AA99"];
  // viridis (loudness: dark = quiet) and a cyclic ramp (time of day: midnight and 23:59 look alike)
  var SEQUENTIAL = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"];
  var CYCLIC = ["#2c3e7a", "#4a6fb5", "#7fb0d8", "#e8d27a", "#f0a04b", "#d8604a", "#9e3a6b", "#4b2c6b"];
  var OTHER = "#8d949a", NONE = "#c9ced3";
  var MAX_OPTIONS = 300;    // filter checkboxes per field; the rest share one "other values" box
  var MAX_LEGEND = 60;      // legend rows of units; the rest are counted in one line
  var HOVER_RADIUS = 7;     // CSS px
  var NOTE_PX = 22;         // the axes note under the map
  var GRID_MAX = 48;        // thumbnails in the selection grid; the CSV export has every selected point
  var RING_MAX = 5000;      // selected points outlined on the overlay (beyond, the count says it)
  var SILENCE_DBFS = -199;  // ingest reports digital silence as -200 dBFS

  var api = window.ceta2vecExplorer = {ready: false, error: null, n: 0, visibleCount: 0, drawnCount: 0,
                                       firstDrawMs: null, lastDrawMs: null, decodeMs: null, draws: 0,
                                       selected: -1, hovered: -1, layer: null, mode: "segments", tool: "pan",
                                       selection: [], gridCount: 0, playing: -1, lastExport: null};
  var $ = function (id) { return document.getElementById(id); };

  // ---- decoding -----------------------------------------------------------------------------
  function bytesOf(b64) {
    if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(b64);
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function typed(spec) {
    var b = bytesOf(spec.b64), buf = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    switch (spec.dtype) {
      case "f32": return new Float32Array(buf);
      case "i32": return new Int32Array(buf);
      case "u8": return new Uint8Array(buf);
      case "u16": return new Uint16Array(buf);
      case "u32": return new Uint32Array(buf);
    }
    throw new Error("explorer data: unknown dtype " + spec.dtype);
  }
  // A categorical column: distinct values and one code per row, whichever way it was stored.
  function categorical(spec) {
    if (spec.dict) return {dict: spec.dict, codes: typed(spec.codes)};
    var index = new Map(), dict = [], codes = new Uint32Array(spec.plain.length);
    for (var i = 0; i < spec.plain.length; i++) {
      var v = spec.plain[i], c = index.get(v);
      if (c === undefined) { c = dict.length; index.set(v, c); dict.push(v); }
      codes[i] = c;
    }
    return {dict: dict, codes: codes};
  }
  function text(spec) {
    if (spec.plain) { var list = spec.plain; return function (i) { return list[i]; }; }
    var dict = spec.dict, codes = typed(spec.codes);
    return function (i) { return dict[codes[i]]; };
  }
  function encodePath(path) { return path.split("/").map(encodeURIComponent).join("/"); }
  function fmtInt(x) { return x.toLocaleString("en-US"); }
  function fmtOffset(s) {
    if (!isFinite(s)) return "unknown";
    var t = s.toFixed(2) + " s";
    if (s >= 60) { var m = Math.floor(s / 60); t += " (" + m + ":" + (s - 60 * m).toFixed(1).padStart(4, "0") + ")"; }
    return t;
  }
  function fmtNum(x, digits) { return isFinite(x) ? x.toFixed(digits) : ""; }
  function el(tag, cls, txt) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (txt !== undefined) e.textContent = txt;
    return e;
  }
  function hex2(v) { return ("0" + Math.round(v * 255).toString(16)).slice(-2); }
  function hsl(h, s, l) {  // as #rrggbb, which the pixel renderer parses
    var a = s * Math.min(l, 1 - l);
    function f(k) { var q = (k + h / 30) % 12; return l - a * Math.max(-1, Math.min(q - 3, 9 - q, 1)); }
    return "#" + hex2(f(0)) + hex2(f(8)) + hex2(f(4));
  }

  var D = window.CETA2VEC_DATA;
  var status = $("status");
  if (!D || D.format !== 2) {
    status.textContent = "The explorer's data (explorer-data.js) is missing or from another version: write the report again.";
    api.error = "no data";
    return;
  }
  var nSeg = api.n = D.n;
  if (nSeg === 0 || !D.layers.length) {
    status.textContent = "This report has no embedded segments to explore.";
    api.ready = true;
    return;
  }

  var t0 = performance.now();
  var segmentId = text(D.segment_id), startTime = text(D.start_time), thumb = text(D.thumbnail), clip = text(D.audio);
  var rec = categorical(D.recording), site = categorical(D.site), label = categorical(D.label);
  var startS = typed(D.start_s), cluster = typed(D.cluster);
  var validS = D.valid_s ? typed(D.valid_s) : null, segDb = D.rms_dbfs ? typed(D.rms_dbfs) : null;
  var segHour = D.hour_utc ? typed(D.hour_utc) : null, segSeconds = D.segment_seconds || null;
  var freqTicks = D.freq_ticks || [];
  var labelName = D.label_column || "label";
  var labelCols = [{name: labelName, col: label}].concat((D.labels || []).map(function (c) {
    return {name: c.name, col: categorical(c.values)};
  }));

  function pointSet(kind, n, layerSpecs, seg) {
    return {kind: kind, n: n, seg: seg, visible: new Uint8Array(n),
            layers: layerSpecs.map(function (l) { return {spec: l, layer: l.layer, k: l.k || 0, n: n, xy: null, nb: null, dist: null}; })};
  }
  var SEG = pointSet("segments", nSeg, D.layers, null), FR = null, F = D.frames;
  if (F) {
    FR = pointSet("frames", F.n, [{layer: F.layer, coords: F.coords, k: 0}], typed(F.segment));
    FR.frame = typed(F.frame); FR.time = typed(F.time_s); FR.db = typed(F.rms_dbfs);
    // the main inventory first: it is the default colouring, the unit a tooltip and a grid card name
    FR.units = F.units.map(function (u) { return {name: u.name, size: u.size, codes: typed(u.codes)}; })
      .sort(function (p, q) { return (q.name === F.main_units) - (p.name === F.main_units); });
  }
  var P = SEG;
  function segOf(i) { return P.seg ? P.seg[i] : i; }

  function prepare(L) {  // decode a layer on first use: bounds and the hover grid
    if (L.xy) return L;
    var n = L.n;
    L.xy = typed(L.spec.coords);
    if (L.spec.neighbours) { L.nb = typed(L.spec.neighbours); L.dist = typed(L.spec.distances); L.scale = L.spec.distances.scale; }
    var xy = L.xy, minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity, i;
    for (i = 0; i < n; i++) {
      var x = xy[2 * i], y = xy[2 * i + 1];
      if (x === x && y === y) {
        if (x < minX) minX = x; if (x > maxX) maxX = x;
        if (y < minY) minY = y; if (y > maxY) maxY = y;
      }
    }
    if (minX === Infinity) { minX = minY = 0; maxX = maxY = 1; }
    var spanX = Math.max(maxX - minX, 1e-9), spanY = Math.max(maxY - minY, 1e-9);
    var G = Math.max(1, Math.min(512, Math.ceil(Math.sqrt(n / 8))));
    var start = new Int32Array(G * G + 1), cellOf = new Int32Array(n);
    for (i = 0; i < n; i++) {
      var px = xy[2 * i], py = xy[2 * i + 1];
      if (px !== px || py !== py) { cellOf[i] = -1; continue; }
      var cx = Math.min(G - 1, Math.floor((px - minX) / spanX * G)), cy = Math.min(G - 1, Math.floor((py - minY) / spanY * G));
      cellOf[i] = cy * G + cx;
      start[cellOf[i] + 1]++;
    }
    for (i = 0; i < G * G; i++) start[i + 1] += start[i];
    var fill = start.slice(0, G * G), items = new Int32Array(start[G * G]);
    for (i = 0; i < n; i++) if (cellOf[i] >= 0) items[fill[cellOf[i]]++] = i;
    L.bounds = {minX: minX, minY: minY, spanX: spanX, spanY: spanY, cx: minX + spanX / 2, cy: minY + spanY / 2};
    L.grid = {G: G, start: start, items: items};
    return L;
  }

  // ---- state --------------------------------------------------------------------------------
  var visible = P.visible;
  var L = null;
  var view = {k: 1, tx: 0, ty: 0, base: 1, W: 0, H: 0};
  var colourBy = "label";
  var groups = null;     // {order: Int32Array, offsets, colours, legend}
  var filters = {};      // field -> Uint8Array of enabled codes
  var searchMatch = null;
  var selected = -1, hovered = -1;
  var selection = null;  // Int32Array of selected points of P (lasso or box)
  var tool = "pan";

  var plot = $("plot"), canvas = $("points"), overlay = $("overlay"), ctx = canvas.getContext("2d"),
      octx = overlay.getContext("2d"), tooltip = $("tooltip");

  function sx(i) { return view.ox + L.xy[2 * i] * view.a; }
  function sy(i) { return view.oy - L.xy[2 * i + 1] * view.a; }
  function updateTransform() {
    var b = L.bounds, pad = 20, note = NOTE_PX;  // keep points off the edges and clear of the axes note
    view.base = Math.min((view.W - 2 * pad) / b.spanX, (view.H - 2 * pad - note) / b.spanY);
    view.a = view.base * view.k;
    view.ox = view.W / 2 + view.tx - b.cx * view.a;
    view.oy = (view.H - note) / 2 + view.ty + b.cy * view.a;
  }

  // ---- colours ------------------------------------------------------------------------------
  // Each "colour by" choice is a column over the points of P: a code per point, a name per code, and
  // either fixed colours per code (units, level and hour bins) or palette colours by frequency.
  function colourChoices() {
    var out = [];
    if (P.kind === "frames") FR.units.forEach(function (u, j) { out.push({value: "unit:" + j, text: "unit: " + u.name}); });
    labelCols.forEach(function (c, j) { out.push({value: j === 0 ? "label" : "label:" + j, text: c.name}); });
    out.push({value: "site", text: "site"}, {value: "recording", text: "recording"},
             {value: "cluster", text: "k-means cluster (segments)"});
    if (P.kind === "frames" || segDb) out.push({value: "loudness", text: "loudness (RMS dBFS" + (P.kind === "frames" ? ", frame)" : ")")});
    if (segHour) out.push({value: "hour", text: "time of day (UTC)"});
    return out;
  }
  function perPoint(col) {  // a segment column's codes for the points of P
    if (!P.seg) return col.codes;
    var codes = new Int32Array(P.n);
    for (var i = 0; i < P.n; i++) codes[i] = col.codes[P.seg[i]];
    return codes;
  }
  function bins(values, edges, names, colours, noneName) {
    var codes = new Int32Array(values.length), none = names.length;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (!(v === v)) { codes[i] = none; continue; }
      var b = 0;
      while (b < edges.length && v >= edges[b]) b++;
      codes[i] = b;
    }
    return {codes: codes, names: names.concat([""]), colours: colours.concat([null]), ordered: true, noneName: noneName};
  }
  function loudnessColumn() {
    var values = new Float32Array(P.n), finite = [], i;
    for (i = 0; i < P.n; i++) {
      var v = P.kind === "frames" ? FR.db[i] : segDb[segOf(i)];
      values[i] = v > SILENCE_DBFS ? v : NaN;
      if (values[i] === values[i]) finite.push(values[i]);
    }
    finite.sort(function (a, b) { return a - b; });
    var lo = finite.length ? finite[Math.floor(0.02 * (finite.length - 1))] : -60,
        hi = finite.length ? finite[Math.ceil(0.98 * (finite.length - 1))] : -20;
    if (hi - lo < 8) { lo -= 4; hi += 4; }
    var m = SEQUENTIAL.length, step = (hi - lo) / m, edges = [], names = [];
    for (i = 1; i < m; i++) edges.push(lo + i * step);
    for (i = 0; i < m; i++) {
      var a = lo + i * step, b = a + step;
      names.push(i === 0 ? "below " + b.toFixed(0) + " dBFS" : i === m - 1 ? a.toFixed(0) + " dBFS and above"
                 : a.toFixed(0) + " to " + b.toFixed(0) + " dBFS");
    }
    return bins(values, edges, names, SEQUENTIAL.slice(), "no level (digital silence)");
  }
  function hourColumn() {
    var values = new Float32Array(P.n), edges = [], names = [];
    for (var i = 0; i < P.n; i++) {
      var h = segHour[segOf(i)];
      values[i] = P.kind === "frames" ? (h + FR.time[i] / 3600) % 24 : h;
    }
    for (var b = 0; b < 8; b++) {
      if (b) edges.push(3 * b);
      names.push(String(3 * b).padStart(2, "0") + ":00–" + String(3 * b + 3).padStart(2, "0") + ":00 UTC");
    }
    return bins(values, edges, names, CYCLIC.slice(), "unknown time");
  }
  function unitColumn(u) {
    var codes = new Int32Array(P.n), names = [], colours = [], i;
    for (i = 0; i < u.size; i++) { names.push("unit " + i); colours.push(hsl((i * 137.508) % 360, 0.62 + 0.2 * (i % 2), 0.32 + 0.14 * (i % 3))); }
    for (i = 0; i < P.n; i++) codes[i] = u.codes[i] < 0 || u.codes[i] >= u.size ? u.size : u.codes[i];
    return {codes: codes, names: names.concat([""]), colours: colours.concat([null]), noneName: "no unit", units: true};
  }
  function colourColumn(value) {
    if (value.indexOf("unit:") === 0) return unitColumn(FR.units[Number(value.slice(5))]);
    if (value === "loudness") return loudnessColumn();
    if (value === "hour") return hourColumn();
    if (value === "cluster") {
      var maxC = 0, i, g;
      for (i = 0; i < nSeg; i++) if (cluster[i] > maxC) maxC = cluster[i];
      var segCodes = new Int32Array(nSeg), names = [];
      for (i = 0; i < nSeg; i++) segCodes[i] = cluster[i] < 0 ? maxC + 1 : cluster[i];
      for (g = 0; g <= maxC; g++) names.push("cluster " + g);
      names.push("");
      var colours = names.map(function (name, c) { return name ? PALETTE[c % PALETTE.length] : null; });
      return {codes: perPoint({codes: segCodes}), names: names, colours: colours, noneName: "no cluster"};
    }
    if (value === "site") return {codes: perPoint(site), names: site.dict, noneName: "unknown site"};
    if (value === "recording") return {codes: perPoint(rec), names: rec.dict, noneName: "unknown recording"};
    var j = value === "label" ? 0 : Number(value.slice(6));
    return {codes: perPoint(labelCols[j].col), names: labelCols[j].col.dict, noneName: "unlabelled"};
  }

  function buildGroups() {
    var column = colourColumn(colourBy), codes = column.codes, names = column.names, n = P.n, i, g;
    var m = names.length, counts = new Int32Array(m);
    for (i = 0; i < n; i++) counts[codes[i]]++;
    var ranked = [];
    for (g = 0; g < m; g++) if (counts[g] > 0 && names[g] !== "") ranked.push(g);
    if (!column.ordered) ranked.sort(function (p, q) { return counts[q] - counts[p] || (names[p] < names[q] ? -1 : 1); });
    // one colour per category: fixed ones, else the palette for the most frequent, "other" for the rest
    var colourOf = [];
    for (g = 0; g < m; g++) colourOf.push(names[g] === "" ? NONE : column.colours ? column.colours[g] || NONE : OTHER);
    if (!column.colours) ranked.forEach(function (c, r) { if (r < PALETTE.length) colourOf[c] = PALETTE[r]; });
    // draw order: no value first, then "other", then by how many points share the colour, rarer last so they stay visible
    var slotOf = new Int32Array(m), slotColours = [], slotIndex = new Map(), slotCounts = [];
    for (g = 0; g < m; g++) {
      var s = slotIndex.get(colourOf[g]);
      if (s === undefined) { s = slotColours.length; slotIndex.set(colourOf[g], s); slotColours.push(colourOf[g]); slotCounts.push(0); }
      slotOf[g] = s; slotCounts[s] += counts[g];
    }
    var slots = slotColours.map(function (_, s) { return s; });
    slots.sort(function (p, q) {
      var rank = function (s) { return slotColours[s] === NONE ? 0 : slotColours[s] === OTHER ? 1 : 2; };
      return rank(p) - rank(q) || slotCounts[q] - slotCounts[p];
    });
    var pos = new Int32Array(slots.length), offsets = new Int32Array(slots.length + 1);
    slots.forEach(function (s, r) { pos[s] = r; });
    for (i = 0; i < n; i++) offsets[pos[slotOf[codes[i]]] + 1]++;
    for (g = 0; g < slots.length; g++) offsets[g + 1] += offsets[g];
    var cursor = offsets.slice(0, slots.length), order = new Int32Array(n);
    for (i = 0; i < n; i++) order[cursor[pos[slotOf[codes[i]]]]++] = i;
    var legend = [], listed = column.colours ? ranked : ranked.slice(0, PALETTE.length);
    if (column.units) listed = ranked.slice().sort(function (p, q) { return counts[q] - counts[p] || p - q; });
    listed.slice(0, MAX_LEGEND).forEach(function (c) { legend.push({colour: colourOf[c], text: names[c], count: counts[c]}); });
    var rest = listed.length > MAX_LEGEND ? listed.slice(MAX_LEGEND) : column.colours ? [] : ranked.slice(PALETTE.length);
    if (rest.length) {
      var total = 0;
      rest.forEach(function (c) { total += counts[c]; });
      legend.push({colour: column.colours ? null : OTHER, text: rest.length + (column.units ? " more units" : " other values"), count: total});
    }
    var noneCount = 0;
    for (g = 0; g < m; g++) if (names[g] === "") noneCount += counts[g];
    if (noneCount) legend.push({colour: NONE, text: column.noneName, count: noneCount});
    groups = {order: order, offsets: offsets, colours: slots.map(function (s) { return slotColours[s]; }), legend: legend,
              codes: codes, names: names, colourOf: colourOf, noneName: column.noneName};
  }

  function colourTitle() {
    var o = $("colour-by").selectedOptions[0];
    return o ? o.textContent : colourBy;
  }
  function renderLegend() {
    var box = $("legend");
    box.textContent = "";
    box.setAttribute("data-colour-by", colourBy);
    box.appendChild(el("p", "legend-title", colourTitle() + " · " + fmtInt(P.n) + " " + P.kind));
    groups.legend.forEach(function (item) {
      var row = el("div", "legend-row");
      var sw = el("span", "swatch" + (item.colour ? "" : " blank"));
      if (item.colour) sw.style.background = item.colour;
      row.appendChild(sw);
      row.appendChild(el("span", "legend-text", item.text));
      if (item.count !== undefined) row.appendChild(el("span", "legend-count", fmtInt(item.count)));
      box.appendChild(row);
    });
  }

  // ---- drawing ------------------------------------------------------------------------------
  function sizeCanvases() {
    var r = plot.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    view.W = Math.max(50, r.width); view.H = Math.max(50, r.height);
    [canvas, overlay].forEach(function (c) {
      c.width = Math.round(view.W * dpr); c.height = Math.round(view.H * dpr);
      c.style.width = view.W + "px"; c.style.height = view.H + "px";
      c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
    });
  }

  function draw() {
    var t = performance.now();
    updateTransform();
    api.drawnCount = P.n <= 5000 ? drawCircles() : drawPixels();
    api.draws++;
    api.lastDrawMs = performance.now() - t;
    if (api.firstDrawMs === null) api.firstDrawMs = performance.now();  // since navigation start
    if (P.kind === "frames" && api.firstFrameDrawMs === undefined) api.firstFrameDrawMs = api.lastDrawMs;
    drawOverlay();
  }

  function pointSize(base) { return base * Math.min(2.5, Math.sqrt(view.k)); }

  // Up to a few thousand points: anti-aliased circles, one path per colour.
  function drawCircles() {
    var xy = L.xy, a = view.a, ox = view.ox, oy = view.oy, W = view.W, H = view.H;
    var size = pointSize(P.n <= 2000 ? 6 : 4.5), h = size / 2, drawn = 0, order = groups.order, offsets = groups.offsets;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);
    ctx.globalAlpha = 0.85;
    for (var g = 0; g < groups.colours.length; g++) {
      if (offsets[g] === offsets[g + 1]) continue;
      ctx.fillStyle = groups.colours[g];
      ctx.beginPath();
      for (var j = offsets[g]; j < offsets[g + 1]; j++) {
        var i = order[j];
        if (!visible[i]) continue;
        var x = ox + xy[2 * i] * a, y = oy - xy[2 * i + 1] * a;
        if (!(x > -size && x < W + size && y > -size && y < H + size)) continue;  // also skips NaN
        ctx.moveTo(x + h, y); ctx.arc(x, y, h, 0, 6.2832);
        drawn++;
      }
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    return drawn;
  }

  // Many points: small squares blended straight into the pixel buffer (several times faster than
  // 100k fillRect calls), over an opaque white background.
  var pixels = null;
  function drawPixels() {
    var dpr = window.devicePixelRatio || 1, Wd = canvas.width, Hd = canvas.height, n = P.n;
    if (!pixels || pixels.width !== Wd || pixels.height !== Hd) pixels = ctx.createImageData(Wd, Hd);
    var buf = new Uint32Array(pixels.data.buffer);
    buf.fill(0xFFFFFFFF);
    var xy = L.xy, a = view.a * dpr, ox = view.ox * dpr, oy = view.oy * dpr;
    var s = Math.max(2, Math.round(pointSize(n <= 20000 ? 4 : 2.6) * dpr)), h = s / 2;
    var alpha = n > 20000 ? 0.6 : 0.8, keep = 1 - alpha, drawn = 0, order = groups.order, offsets = groups.offsets;
    for (var g = 0; g < groups.colours.length; g++) {
      if (offsets[g] === offsets[g + 1]) continue;
      var hex = parseInt(groups.colours[g].slice(1), 16);
      var cr = (hex >> 16 & 255) * alpha, cg = (hex >> 8 & 255) * alpha, cb = (hex & 255) * alpha;
      for (var j = offsets[g]; j < offsets[g + 1]; j++) {
        var i = order[j];
        if (!visible[i]) continue;
        var X = Math.round(ox + xy[2 * i] * a - h), Y = Math.round(oy - xy[2 * i + 1] * a - h);
        if (!(X > -s && X < Wd && Y > -s && Y < Hd)) continue;  // also skips NaN
        drawn++;
        var x1 = Math.min(Wd, X + s), y1 = Math.min(Hd, Y + s);
        for (var yy = Math.max(0, Y); yy < y1; yy++) {
          for (var k = yy * Wd + Math.max(0, X), end = yy * Wd + x1; k < end; k++) {
            var p = buf[k];  // little-endian RGBA: r in the low byte
            buf[k] = 0xFF000000 | ((cb + (p >>> 16 & 255) * keep) << 16) | ((cg + (p >>> 8 & 255) * keep) << 8) |
                     (cr + (p & 255) * keep);
          }
        }
      }
    }
    ctx.putImageData(pixels, 0, 0);
    return drawn;
  }

  function ring(i, r, colour, width) {
    octx.beginPath();
    octx.arc(sx(i), sy(i), r, 0, 6.2832);
    octx.lineWidth = width; octx.strokeStyle = colour; octx.stroke();
  }
  var sketch = null;  // the lasso or box being drawn: {tool, points: [[x, y], ...]}
  function drawOverlay() {
    octx.clearRect(0, 0, view.W, view.H);
    if (selection && selection.length <= RING_MAX) {
      octx.lineWidth = 1.2; octx.strokeStyle = "rgba(17,17,17,0.85)";
      octx.beginPath();
      for (var s = 0; s < selection.length; s++) {
        var q = selection[s];
        if (!visible[q] || L.xy[2 * q] !== L.xy[2 * q]) continue;
        octx.moveTo(sx(q) + 3.5, sy(q)); octx.arc(sx(q), sy(q), 3.5, 0, 6.2832);
      }
      octx.stroke();
    }
    if (sketch) {
      octx.beginPath();
      var pts = sketch.points;
      if (sketch.tool === "box") {
        var a = pts[0], b = pts[pts.length - 1];
        octx.rect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
      } else {
        octx.moveTo(pts[0][0], pts[0][1]);
        for (var p = 1; p < pts.length; p++) octx.lineTo(pts[p][0], pts[p][1]);
        octx.closePath();
      }
      octx.fillStyle = "rgba(11,95,138,0.10)"; octx.fill();
      octx.setLineDash([5, 4]); octx.lineWidth = 1.5; octx.strokeStyle = "#0b5f8a"; octx.stroke(); octx.setLineDash([]);
    }
    if (selected >= 0 && L.nb) {
      var k = L.k;
      octx.lineWidth = 1; octx.strokeStyle = "rgba(204,90,0,0.55)";
      octx.beginPath();
      for (var j = 0; j < k; j++) {
        var m = L.nb[selected * k + j];
        if (m < 0 || m === selected || L.xy[2 * m] !== L.xy[2 * m]) continue;
        octx.moveTo(sx(selected), sy(selected)); octx.lineTo(sx(m), sy(m));
      }
      octx.stroke();
      for (j = 0; j < k; j++) {
        m = L.nb[selected * k + j];
        if (m >= 0 && m !== selected && L.xy[2 * m] === L.xy[2 * m]) ring(m, 5, "#cc5a00", 2);
      }
    }
    if (selected >= 0 && L.xy[2 * selected] === L.xy[2 * selected]) { ring(selected, 8, "#ffffff", 5); ring(selected, 8, "#111111", 2.5); }
    if (hovered >= 0 && hovered !== selected) ring(hovered, 6, "#111111", 1.5);
  }

  // ---- spectrogram thumbnails with axes -----------------------------------------------------
  // The thumbnail PNG holds the segment's valid audio only; the axes span the nominal segment length, so the
  // zero padding of a final segment is drawn hatched as padding, not as a quiet stretch of sound.
  var images = new Map();
  function image(src, then) {
    var entry = images.get(src);
    if (!entry) {
      entry = {img: new Image(), state: "loading", waiting: []};
      images.set(src, entry);
      entry.img.onload = function () { entry.state = "ok"; entry.waiting.forEach(function (f) { f(entry); }); entry.waiting = []; };
      entry.img.onerror = function () { entry.state = "error"; entry.waiting.forEach(function (f) { f(entry); }); entry.waiting = []; };
      entry.img.src = encodePath(src);
    }
    if (entry.state === "loading") entry.waiting.push(then); else then(entry);
  }
  // The frame of a spectrogram drawn on a canvas: its border, seconds into the recording below
  // (`offset` + the time drawn; a tick every `spacing` px or so), kHz (or mel bands) on the left.
  function spectrogramAxes(g, box, a, b, X, offset, spacing) {
    var left = box.left, top = box.top, W = box.W, H = box.H;
    g.strokeStyle = "#5b6670"; g.fillStyle = "#3d464f"; g.lineWidth = 1; g.font = "9px system-ui, sans-serif";
    g.strokeRect(left + 0.5, top + 0.5, W - 1, H - 1);
    var step = niceStep(b - a, Math.max(2, Math.floor(W / spacing))), digits = step < 0.1 ? 2 : step < 1 ? 1 : 0;
    g.textAlign = "center";
    for (var t = Math.ceil(a / step) * step; t <= b + 1e-9; t += step) {
      g.beginPath(); g.moveTo(X(t), top + H); g.lineTo(X(t), top + H + 3); g.stroke();
      g.fillText((offset + t).toFixed(digits), X(t), top + H + 12);
    }
    g.fillText("time in recording (s)", left + W / 2, box.cssH - 2);
    g.textAlign = "right";
    freqTicks.forEach(function (tick) {
      var y = top + H - tick[0] * H;
      g.beginPath(); g.moveTo(left - 3, y); g.lineTo(left, y); g.stroke();
      g.fillText(tick[1], left - 4, y + 3);
    });
    g.save(); g.translate(8, top + H / 2); g.rotate(-Math.PI / 2); g.textAlign = "center";
    g.fillText(freqTicks.length ? "kHz" : "mel bands", 0, 0); g.restore();
  }
  function niceStep(span, target) {
    var raw = span / target, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    return p * (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10);
  }
  function hatch(c, x, y, w, h) {
    c.save();
    c.beginPath(); c.rect(x, y, w, h); c.clip();
    c.fillStyle = "#e9ecef"; c.fillRect(x, y, w, h);
    c.strokeStyle = "#aab2ba"; c.lineWidth = 1;
    c.beginPath();
    for (var d = -h; d < w; d += 6) { c.moveTo(x + d, y + h); c.lineTo(x + d + h, y); }
    c.stroke();
    c.restore();
  }
  // What a point's thumbnail shows: the segment, or for a frame a window around it (seconds from the segment start).
  function spectrogramSpec(i) {
    var s = segOf(i), valid = validS ? validS[s] : NaN;
    var span = segSeconds ? Math.max(segSeconds, isFinite(valid) ? valid : 0) : valid;
    var spec = {src: thumb(s), valid: valid, span: span, offset: startS[s], a: 0, b: isFinite(span) ? span : 1, mark: null};
    if (P.kind === "frames") {
      var t = FR.time[i], w = F.window_s || 1;
      spec.a = t - w / 2; spec.b = t + w / 2; spec.mark = t;
    }
    return spec;
  }
  function spectrogram(c, i, cssW, cssH) {
    var spec = spectrogramSpec(i), dpr = window.devicePixelRatio || 1;
    c.width = Math.round(cssW * dpr); c.height = Math.round(cssH * dpr);
    c.style.width = cssW + "px"; c.style.height = cssH + "px";
    var g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    var left = 30, right = 6, top = 4, bottom = 26, W = cssW - left - right, H = cssH - top - bottom;
    var a = spec.a, b = spec.b, X = function (t) { return left + (t - a) / (b - a) * W; };
    c.setAttribute("data-point", String(i));
    c.setAttribute("data-drawn", "pending");
    c.setAttribute("role", "img");
    c.setAttribute("aria-label", "spectrogram from " + (spec.offset + a).toFixed(2) + " s to " + (spec.offset + b).toFixed(2) +
                   " s" + (spec.mark !== null ? ", the frame marked at " + (spec.offset + spec.mark).toFixed(2) + " s" : ""));
    function frame(entry) {
      if (c.getAttribute("data-point") !== String(i)) return;  // the canvas shows another point by now
      g.fillStyle = "#fff"; g.fillRect(0, 0, cssW, cssH);
      g.fillStyle = "#f1f3f5"; g.fillRect(left, top, W, H);  // outside the segment
      var real = isFinite(spec.valid) ? spec.valid : spec.span;
      if (entry && entry.state === "ok") {
        var img = entry.img, t0 = Math.max(a, 0), t1 = Math.min(b, real);
        if (t1 > t0 && real > 0) {
          g.imageSmoothingEnabled = true;
          g.drawImage(img, t0 / real * img.naturalWidth, 0, (t1 - t0) / real * img.naturalWidth, img.naturalHeight,
                      X(t0), top, X(t1) - X(t0), H);
        }
      } else {
        g.fillStyle = "#5b6670"; g.font = "11px system-ui, sans-serif"; g.textAlign = "center";
        g.fillText(entry ? "thumbnail missing" : "no thumbnail for this segment", left + W / 2, top + H / 2 + 4);
      }
      if (isFinite(spec.valid) && isFinite(spec.span) && spec.span > spec.valid + 1e-3) {
        var p0 = Math.max(a, spec.valid), p1 = Math.min(b, spec.span);
        if (p1 > p0) {
          hatch(g, X(p0), top, X(p1) - X(p0), H);
          if (X(p1) - X(p0) > 44) { g.fillStyle = "#3d464f"; g.font = "10px system-ui, sans-serif"; g.textAlign = "center"; g.fillText("padding", (X(p0) + X(p1)) / 2, top + H / 2 + 3); }
        }
      }
      if (spec.mark !== null) {
        g.strokeStyle = "#ffffff"; g.lineWidth = 3; g.beginPath(); g.moveTo(X(spec.mark), top); g.lineTo(X(spec.mark), top + H); g.stroke();
        g.strokeStyle = "#0b5f8a"; g.lineWidth = 1.5; g.setLineDash([3, 2]); g.stroke(); g.setLineDash([]);
      }
      // axes: seconds into the recording, kHz on the mel scale of the thumbnails
      spectrogramAxes(g, {left: left, top: top, W: W, H: H, cssH: cssH}, a, b, X, spec.offset, 45);
      c.setAttribute("data-drawn", entry ? entry.state : "none");
    }
    if (spec.src) image(spec.src, frame); else frame(null);
  }

  // ---- filters ------------------------------------------------------------------------------
  function buildFilter(field, col, emptyName) {
    var box = $(field + "-filter"), options = box.querySelector(".options"), m = col.dict.length;
    var counts = new Int32Array(m), i;
    for (i = 0; i < nSeg; i++) counts[col.codes[i]]++;
    var ranked = [];
    for (i = 0; i < m; i++) if (counts[i]) ranked.push(i);
    ranked.sort(function (p, q) { return counts[q] - counts[p] || (col.dict[p] < col.dict[q] ? -1 : 1); });
    var on = filters[field] = new Uint8Array(m).fill(1);
    var shown = ranked.length > MAX_OPTIONS ? ranked.slice(0, MAX_OPTIONS - 1) : ranked;
    var rest = ranked.length > MAX_OPTIONS ? ranked.slice(MAX_OPTIONS - 1) : [];
    options.textContent = "";
    function option(name, count, codes) {
      var row = el("label", "option"), box = el("input");
      box.type = "checkbox"; box.checked = true;
      box.addEventListener("change", function () {
        codes.forEach(function (c) { on[c] = box.checked ? 1 : 0; });
        applyFilters();
      });
      row.appendChild(box);
      row.appendChild(el("span", "option-name" + (name === null ? " none" : ""), name === null ? emptyName : name));
      row.appendChild(el("span", "option-count", fmtInt(count)));
      options.appendChild(row);
    }
    shown.forEach(function (c) { option(col.dict[c] === "" ? null : col.dict[c], counts[c], [c]); });
    if (rest.length) {
      var total = 0;
      rest.forEach(function (c) { total += counts[c]; });
      option(rest.length + " other values", total, rest);
    }
    box.querySelectorAll(".filter-actions button").forEach(function (b) {
      b.addEventListener("click", function () {
        var value = b.getAttribute("data-select") === "all";
        on.fill(value ? 1 : 0);
        options.querySelectorAll("input").forEach(function (c) { c.checked = value; });
        applyFilters();
      });
    });
    if (ranked.length <= 1) box.classList.add("single");
  }

  // Filters are on segments; a frame is shown when its segment is.
  function applyFilters() {
    var lc = label.codes, scodes = site.codes, rcodes = rec.codes, lon = filters.label, son = filters.site, count = 0, i;
    var segVisible = P.seg ? new Uint8Array(nSeg) : visible;
    for (i = 0; i < nSeg; i++) segVisible[i] = lon[lc[i]] & son[scodes[i]] & (searchMatch ? searchMatch[rcodes[i]] : 1);
    if (P.seg) for (i = 0; i < P.n; i++) visible[i] = segVisible[P.seg[i]];
    for (i = 0; i < P.n; i++) count += visible[i];
    api.visibleCount = count;
    if (hovered >= 0 && !visible[hovered]) hideTooltip();
    updateStatus();
    draw();
    if (selected >= 0) renderNeighbours();
  }

  function updateStatus() {
    var frames = P.kind === "frames";
    status.textContent = "Showing " + fmtInt(api.visibleCount) + " of " + fmtInt(P.n) + " " + P.kind + " · layer " + L.layer +
      (selection ? " · " + fmtInt(selection.length) + " selected" : "");
    $("axes-note").textContent = "UMAP of layer " + L.layer + (frames ? " frame vectors" : "") +
      " (axes have no units; nearby points sound alike to the network)";
  }

  // ---- hover and selection ------------------------------------------------------------------
  function nearest(px, py) {
    var b = L.bounds, grid = L.grid, G = grid.G, rData = HOVER_RADIUS / view.a;
    var dx = (px - view.ox) / view.a, dy = (view.oy - py) / view.a;
    var x0 = Math.max(0, Math.floor((dx - rData - b.minX) / b.spanX * G)), x1 = Math.min(G - 1, Math.floor((dx + rData - b.minX) / b.spanX * G));
    var y0 = Math.max(0, Math.floor((dy - rData - b.minY) / b.spanY * G)), y1 = Math.min(G - 1, Math.floor((dy + rData - b.minY) / b.spanY * G));
    var best = -1, bestD = HOVER_RADIUS * HOVER_RADIUS;
    for (var cy = y0; cy <= y1; cy++) {
      for (var cx = x0; cx <= x1; cx++) {
        var c = cy * G + cx;
        for (var j = grid.start[c]; j < grid.start[c + 1]; j++) {
          var i = grid.items[j];
          if (!visible[i]) continue;
          var ex = sx(i) - px, ey = sy(i) - py, d = ex * ex + ey * ey;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  var tipCanvas = el("canvas", "spectrogram"), tipLines = el("div", "tip-lines");
  tooltip.appendChild(tipCanvas); tooltip.appendChild(tipLines);
  function unitText(i) {
    return FR.units.map(function (u) { return [u.name, u.codes[i] < 0 ? "none" : "unit " + u.codes[i]]; });
  }
  function pointTime(i) { return startS[segOf(i)] + (P.kind === "frames" ? FR.time[i] : 0); }
  function fieldsOf(i) {
    var s = segOf(i), st = site.dict[site.codes[s]], when = startTime(s);
    var rows = [["Recording", rec.dict[rec.codes[s]]], ["Offset", fmtOffset(pointTime(i))],
                ["Start time", when ? when.replace("T", " ") : "unknown"]];
    labelCols.forEach(function (c) { rows.push([c.name, c.col.dict[c.col.codes[s]] || "unlabelled"]); });
    rows.push(["Site", st || "unknown"]);
    if (P.kind === "frames") rows = rows.concat(unitText(i).slice(0, 1));
    return rows;
  }
  function showTooltip(i, px, py) {
    spectrogram(tipCanvas, i, 256, 118);
    tipLines.textContent = "";
    fieldsOf(i).forEach(function (f, r) {
      var line = el("div", r === 0 ? "tip-title" : "tip-line");
      if (r > 0) line.appendChild(el("span", "tip-key", f[0] + ": "));
      line.appendChild(document.createTextNode(f[1]));
      tipLines.appendChild(line);
    });
    tooltip.hidden = false;
    var w = tooltip.offsetWidth, h = tooltip.offsetHeight;
    var left = px + 14 + w > view.W ? px - 14 - w : px + 14, top = py + 14 + h > view.H ? py - 14 - h : py + 14;
    tooltip.style.left = Math.max(0, left) + "px"; tooltip.style.top = Math.max(0, top) + "px";
  }
  function hideTooltip() { tooltip.hidden = true; hovered = api.hovered = -1; drawOverlay(); }

  // A clip of a point: the segment's WAV, and for a frame only the window around it.
  function clipWindow(i) {
    if (P.kind !== "frames") return {from: 0, to: Infinity};
    var t = FR.time[i], w = F.window_s || 1;
    return {from: Math.max(0, t - w / 2), to: t + w / 2};
  }
  function playWindow(player, src, win, onEnd) {
    player.onended = null; player.ontimeupdate = null;
    if (player.getAttribute("data-src") !== src) { player.src = encodePath(src); player.setAttribute("data-src", src); }
    player.ontimeupdate = function () { if (player.currentTime >= win.to) { player.pause(); if (onEnd) onEnd(); } };
    player.onended = function () { if (onEnd) onEnd(); };
    // with preload="none" only play() starts loading; the start time can be set once the duration is known
    if (player.readyState >= 1) player.currentTime = win.from;
    else {
      var token = player.ceta2vecToken = (player.ceta2vecToken || 0) + 1;  // a later click wins over this one
      player.addEventListener("loadedmetadata", function () { if (player.ceta2vecToken === token) player.currentTime = win.from; }, {once: true});
    }
    var p = player.play();
    if (p && p.catch) p.catch(function () {});  // autoplay may be refused
  }

  var player = $("clip-player"), missing = $("clip-missing");
  function select(i, play) {
    selected = api.selected = i;
    if (i < 0) {
      $("details-body").hidden = true; $("details-empty").hidden = false;
      player.pause();
      drawOverlay();
      return;
    }
    var s = segOf(i), frames = P.kind === "frames";
    $("details-kind").textContent = frames ? "Frame" : "Segment";
    $("details-empty").hidden = true; $("details-body").hidden = false;
    spectrogram($("details-thumb"), i, Math.max(200, $("details-body").clientWidth || 300), 150);
    var body = $("details-fields");
    body.textContent = "";
    var head = frames ? [["Frame", segmentId(s) + " #" + FR.frame[i]], ["Segment", segmentId(s)]] : [["Segment", segmentId(s)]];
    var tail = [["Cluster", cluster[s] < 0 ? "none" : String(cluster[s])]];
    var level = frames ? FR.db[i] : segDb ? segDb[s] : NaN;
    if (level === level) tail.push(["Level", level > SILENCE_DBFS ? level.toFixed(1) + " dBFS" : "digital silence"]);
    if (validS && segSeconds && validS[s] < segSeconds - 1e-3) tail.push(["Padding", (segSeconds - validS[s]).toFixed(2) + " s of zeros after the end"]);
    if (frames) tail = tail.concat(unitText(i).slice(1));
    head.concat(fieldsOf(i), tail).forEach(function (f) {
      var tr = el("tr");
      tr.appendChild(el("th", null, f[0]));
      tr.appendChild(el("td", f[0] === "Recording" ? "recording" : null, f[1]));
      body.appendChild(tr);
    });
    var c = clip(s);
    if (c) {
      player.hidden = false; missing.hidden = true;
      if (play) playWindow(player, c, clipWindow(i));
      else {
        player.pause(); player.onended = player.ontimeupdate = null;
        if (player.getAttribute("data-src") !== c) { player.src = encodePath(c); player.setAttribute("data-src", c); }
      }
    } else {
      player.pause(); player.removeAttribute("src"); player.removeAttribute("data-src"); player.hidden = true;
      missing.hidden = false;
      missing.textContent = "No audio clip for this " + (frames ? "frame's segment" : "segment") + ": clips are cut for " +
        fmtInt(D.media_segments || 0) + " segments (raise --media-points when writing the report).";
    }
    renderNeighbours();
    drawOverlay();
  }

  function renderNeighbours() {
    var list = $("neighbours"), i = selected;
    list.textContent = "";
    $("neighbours-title").textContent = "Nearest neighbours in layer " + L.layer;
    if (P.kind === "frames") { list.appendChild(el("li", "muted", "Neighbours are listed for segments (switch Points to segments).")); return; }
    if (!L.nb || !L.k) { list.appendChild(el("li", "muted", "No neighbours were computed for this layer.")); return; }
    var shown = 0;
    for (var j = 0; j < L.k; j++) {
      var m = L.nb[i * L.k + j];
      if (m < 0 || m === i) continue;
      var q = L.dist[i * L.k + j], d = q === 65535 ? "" : (q * L.scale).toFixed(4);
      var li = el("li"), button = el("button", "neighbour");
      button.type = "button";
      button.setAttribute("data-index", String(m));
      var lab = label.dict[label.codes[m]];
      button.appendChild(el("span", "nb-rec", rec.dict[rec.codes[m]]));
      button.appendChild(el("span", "nb-meta", fmtOffset(startS[m]) + " · " + (lab || "unlabelled")));
      button.appendChild(el("span", "nb-dist", d ? "d = " + d : ""));
      if (!visible[m]) { li.className = "filtered"; button.title = "hidden on the map by the current filter"; }
      button.addEventListener("click", (function (target) { return function () { select(target, true); }; })(m));
      li.appendChild(button);
      list.appendChild(li);
      shown++;
    }
    if (!shown) list.appendChild(el("li", "muted", "No neighbours listed for this segment."));
  }

  // ---- lasso and box selection, the grid of thumbnails, CSV export --------------------------
  function inside(poly, x, y) {  // even-odd rule
    var c = false;
    for (var a = 0, b = poly.length - 1; a < poly.length; b = a++) {
      var xa = poly[a][0], ya = poly[a][1], xb = poly[b][0], yb = poly[b][1];
      if ((ya > y) !== (yb > y) && x < (xb - xa) * (y - ya) / (yb - ya) + xa) c = !c;
    }
    return c;
  }
  function pointsIn(sk) {
    var pts = sk.points, minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity, out = [];
    pts.forEach(function (p) { minX = Math.min(minX, p[0]); maxX = Math.max(maxX, p[0]); minY = Math.min(minY, p[1]); maxY = Math.max(maxY, p[1]); });
    if (sk.tool === "box") { var a = pts[0], b = pts[pts.length - 1]; minX = Math.min(a[0], b[0]); maxX = Math.max(a[0], b[0]); minY = Math.min(a[1], b[1]); maxY = Math.max(a[1], b[1]); }
    for (var i = 0; i < P.n; i++) {
      if (!visible[i]) continue;
      var x = sx(i), y = sy(i);
      if (!(x >= minX && x <= maxX && y >= minY && y <= maxY)) continue;  // also skips NaN
      if (sk.tool === "lasso" && !inside(pts, x, y)) continue;
      out.push(i);
    }
    return out;
  }
  function setSelection(indices, add) {
    if (add && selection) {
      var seen = new Set(selection);
      indices.forEach(function (i) { seen.add(i); });
      indices = Array.from(seen).sort(function (p, q) { return p - q; });
    }
    selection = indices.length ? Int32Array.from(indices) : null;
    api.selection = indices.slice();
    renderGrid();
    updateStatus();
    drawOverlay();
  }

  var gridPlayer = $("grid-player"), playingButton = null;
  function stopGrid() {
    gridPlayer.pause();
    if (playingButton) { playingButton.setAttribute("aria-pressed", "false"); playingButton.textContent = "▶ Play"; }
    playingButton = null; api.playing = -1;
  }
  function renderGrid() {
    var box = $("selection"), grid = $("selection-grid");
    stopGrid();
    grid.textContent = "";
    api.gridCount = 0;
    if (!selection) { box.hidden = true; return; }
    box.hidden = false;
    // points with a clip first: with media for a few hundred segments of 100k, those are the ones to see and hear
    var withMedia = [], without = [];
    for (var s = 0; s < selection.length; s++) (clip(segOf(selection[s])) ? withMedia : without).push(selection[s]);
    var shown = withMedia.concat(without).slice(0, GRID_MAX);
    $("selection-title").textContent = fmtInt(selection.length) + " " + (selection.length === 1 ? P.kind.slice(0, -1) : P.kind) + " selected";
    $("selection-note").textContent = (selection.length > shown.length ? "showing " + shown.length + " (those with a clip first); " : "") +
      "Export CSV lists all " + fmtInt(selection.length) + (P.kind === "frames" ? "; each frame is marked, its clip is " + (F.window_s || 1) + " s around it" : "");
    shown.forEach(function (i) {
      var s = segOf(i), card = el("figure", "card");
      card.setAttribute("data-index", String(i));
      var c = el("canvas", "spectrogram");
      card.appendChild(c);
      spectrogram(c, i, 232, 112);
      var cap = el("figcaption");
      cap.appendChild(el("span", "card-rec", rec.dict[rec.codes[s]]));
      var lab = label.dict[label.codes[s]] || "unlabelled";
      var meta = fmtOffset(pointTime(i)) + " · " + lab;
      if (P.kind === "frames" && FR.units.length) meta += " · " + unitText(i)[0][1];
      cap.appendChild(el("span", "card-meta", meta));
      var row = el("span", "card-actions"), play = el("button", "play", "▶ Play"), open = el("button", "open", "details");
      play.type = open.type = "button";
      play.setAttribute("aria-pressed", "false");
      var src = clip(s);
      if (src) {
        play.setAttribute("data-clip", src);
        play.addEventListener("click", function () {
          if (playingButton === play) { stopGrid(); return; }
          stopGrid();
          playingButton = play; api.playing = i;
          play.setAttribute("aria-pressed", "true"); play.textContent = "■ Stop";
          playWindow(gridPlayer, src, clipWindow(i), stopGrid);
        });
      } else {
        play.disabled = true;
        play.title = "no clip for this segment (raise --media-points)";
      }
      open.addEventListener("click", function () { select(i, false); });
      row.appendChild(play); row.appendChild(open);
      cap.appendChild(row);
      card.appendChild(cap);
      grid.appendChild(card);
    });
    api.gridCount = shown.length;
  }

  // Spreadsheets run cells that start with = + - @ as formulas: such text values get a leading apostrophe.
  function csvText(v) {
    var s = String(v);
    if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function selectionCsv() {
    var frames = P.kind === "frames", head = frames ? ["frame_id", "segment_id", "frame"] : ["segment_id"];
    head = head.concat(["recording", "site", "start_time", frames ? "time_s" : "start_s", frames ? "time_in_segment_s" : "valid_s",
                        frames ? "frame_rms_dbfs" : "rms_dbfs"]);
    labelCols.forEach(function (c) { head.push("label:" + c.name); });
    head.push("cluster");
    if (frames) FR.units.forEach(function (u) { head.push("unit:" + u.name); });
    head.push("umap_x", "umap_y");
    var lines = [head.map(csvText).join(",")];
    Array.prototype.forEach.call(selection, function (i) {
      var s = segOf(i), row = [];
      if (frames) row.push(csvText(segmentId(s) + "#" + FR.frame[i]), csvText(segmentId(s)), FR.frame[i]);
      else row.push(csvText(segmentId(s)));
      var level = frames ? FR.db[i] : segDb ? segDb[s] : NaN;
      row.push(csvText(rec.dict[rec.codes[s]]), csvText(site.dict[site.codes[s]]), csvText(startTime(s)),
               fmtNum(pointTime(i), 3), frames ? fmtNum(FR.time[i], 3) : validS ? fmtNum(validS[s], 3) : "", fmtNum(level, 1));
      labelCols.forEach(function (c) { row.push(csvText(c.col.dict[c.col.codes[s]])); });
      row.push(cluster[s] < 0 ? "" : cluster[s]);
      if (frames) FR.units.forEach(function (u) { row.push(u.codes[i] < 0 ? "" : u.codes[i]); });
      row.push(fmtNum(L.xy[2 * i], 4), fmtNum(L.xy[2 * i + 1], 4));
      lines.push(row.join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }
  function exportSelection() {
    if (!selection) return;
    var csv = selectionCsv(), blob = new Blob([csv], {type: "text/csv;charset=utf-8"}), url = URL.createObjectURL(blob);
    var name = "ceta2vec-" + String(D.model_id).replace(/[^A-Za-z0-9_.-]+/g, "_") + "-" + P.kind + "-selection.csv";
    var a = el("a");
    a.href = url; a.download = name; a.hidden = true;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 60000);  // the download needs the URL a while after click()
    api.lastExport = {name: name, rows: selection.length};
  }

  // ---- interaction --------------------------------------------------------------------------
  var drag = null, pending = null;
  function local(e) { var r = overlay.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
  plot.addEventListener("pointerdown", function (e) {
    if (e.button !== 0) return;
    var p = local(e);
    try { plot.setPointerCapture(e.pointerId); } catch (err) { /* synthetic pointers cannot be captured */ }
    if (tool !== "pan" && !e.altKey) {
      sketch = {tool: tool, points: [p], add: e.shiftKey};
      hideTooltip();
      return;
    }
    drag = {x: p[0], y: p[1], tx: view.tx, ty: view.ty, moved: false};
  });
  plot.addEventListener("pointerup", function (e) {
    if (sketch) {
      var sk = sketch;
      sk.points.push(local(e));
      sketch = null;
      var far = Math.abs(sk.points[sk.points.length - 1][0] - sk.points[0][0]) + Math.abs(sk.points[sk.points.length - 1][1] - sk.points[0][1]);
      if (sk.points.length < 3 && far < 4) { select(nearest(sk.points[0][0], sk.points[0][1]), true); drawOverlay(); return; }
      setSelection(pointsIn(sk), sk.add);
      return;
    }
    if (!drag) return;
    var d = drag; drag = null;
    plot.classList.remove("panning");
    if (d.moved) return;
    var p = local(e);
    select(nearest(p[0], p[1]), true);
  });
  plot.addEventListener("pointermove", function (e) {
    var p = local(e);
    if (sketch) {
      var last = sketch.points[sketch.points.length - 1];
      if (sketch.tool === "box") sketch.points[1] = p;
      else if (Math.abs(p[0] - last[0]) + Math.abs(p[1] - last[1]) >= 2) sketch.points.push(p);
      drawOverlay();
      return;
    }
    if (drag) {
      if (!drag.moved && Math.abs(p[0] - drag.x) + Math.abs(p[1] - drag.y) < 4) return;
      drag.moved = true; plot.classList.add("panning");
      view.tx = drag.tx + p[0] - drag.x; view.ty = drag.ty + p[1] - drag.y;
      hideTooltip();
      draw();
      return;
    }
    if (pending) { pending = p; return; }
    pending = p;
    requestAnimationFrame(function () {
      var q = pending; pending = null;
      if (sketch || drag) return;
      var i = nearest(q[0], q[1]);
      if (i !== hovered) { hovered = api.hovered = i; drawOverlay(); }
      if (i >= 0) showTooltip(i, q[0], q[1]); else tooltip.hidden = true;
      plot.style.cursor = i >= 0 ? "pointer" : "";
    });
  });
  plot.addEventListener("pointerleave", function () { if (!drag && !sketch) hideTooltip(); });
  plot.addEventListener("wheel", function (e) {
    e.preventDefault();
    var p = local(e), k = Math.max(0.5, Math.min(400, view.k * Math.exp(-e.deltaY * 0.0015))), f = k / view.k;
    view.tx = p[0] - view.W / 2 - (p[0] - view.W / 2 - view.tx) * f;
    var cy = (view.H - NOTE_PX) / 2;
    view.ty = p[1] - cy - (p[1] - cy - view.ty) * f;
    view.k = k;
    hideTooltip();
    draw();
  }, {passive: false});
  plot.addEventListener("dblclick", function () { view.k = 1; view.tx = view.ty = 0; draw(); });
  document.addEventListener("keydown", function (e) {
    if (e.target && /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName)) return;
    if (reviewing) { reviewKey(e); return; }
    if (e.key === "Escape") { if (selection) setSelection([], false); else select(-1, false); }
    else if (e.key === "b" || e.key === "l" || e.key === "p") setTool({b: "box", l: "lasso", p: "pan"}[e.key]);
  });

  function setTool(name) {
    tool = api.tool = name;
    $("tool").querySelectorAll("button").forEach(function (b) { b.setAttribute("aria-pressed", String(b.getAttribute("data-tool") === name)); });
    plot.classList.toggle("selecting", name !== "pan");
  }

  function setLayer(layer) {
    var next = P.layers.filter(function (l) { return l.layer === layer; })[0];
    if (!next) return false;
    L = prepare(next);
    api.layer = L.layer;
    view.k = 1; view.tx = view.ty = 0;
    hideTooltip();
    updateStatus();
    draw();
    if (selected >= 0) renderNeighbours();
    return true;
  }

  function fillColourChoices(preferred) {
    var select_ = $("colour-by"), choices = colourChoices();
    select_.textContent = "";
    choices.forEach(function (c) { var o = el("option", null, c.text); o.value = c.value; select_.appendChild(o); });
    var values = choices.map(function (c) { return c.value; });
    colourBy = values.indexOf(preferred) >= 0 ? preferred : values[0];
    select_.value = colourBy;
  }
  function setColour(value) {
    fillColourChoices(value);
    buildGroups(); renderLegend(); draw();
    return colourBy;
  }

  function fillLayers(first) {
    var layerSelect = $("layer");
    layerSelect.textContent = "";
    P.layers.forEach(function (l) {
      var o = el("option", null, "layer " + l.layer + (l.layer === 0 ? " (conv encoder)" : "") + (P.kind === "frames" ? " (frames)" : ""));
      o.value = String(l.layer);
      layerSelect.appendChild(o);
    });
    layerSelect.value = String(first);
    layerSelect.disabled = P.layers.length < 2;
  }

  function setMode(kind) {
    var started = performance.now(), next = kind === "frames" ? FR : SEG;
    if (!next) return false;
    if (next === P) return true;
    select(-1, false);
    selection = null; api.selection = []; renderGrid();
    P = next; visible = P.visible;
    api.mode = P.kind; api.n = P.n;
    $("mode").querySelectorAll("button").forEach(function (b) { b.setAttribute("aria-pressed", String(b.getAttribute("data-mode") === P.kind)); });
    var first = P.kind === "frames" ? F.layer : (SEG.layers.some(function (l) { return l.layer === D.main_layer; }) ? D.main_layer : SEG.layers[0].layer);
    fillLayers(first);
    L = prepare(P.layers.filter(function (l) { return l.layer === first; })[0]);
    api.layer = L.layer;
    view.k = 1; view.tx = view.ty = 0;
    hideTooltip();
    fillColourChoices(P.kind === "frames" ? "unit:0" : "label");
    buildGroups(); renderLegend();
    applyFilters();
    api.modeSwitchMs = performance.now() - started;  // decode, hover grid, colours and the first draw
    return true;
  }

  // ---- Review mode: the windows `ceta2vec suggest` picked, marked yes / no / skip ------------
  // Decisions export as suggest's own CSV with the positive column filled: `ceta2vec label` reads it.
  var REVIEWS = D.review || [], reviewing = false, rv = null, rvAt = 0, decisions = {};
  REVIEWS.forEach(function (b) { decisions[b.label] = b.windows.map(function () { return ""; }); });
  var reviewPlayer = $("review-player");
  function reviewThumb(w) {
    var c = $("review-thumb"), cssW = Math.max(320, Math.min(720, ($("review").clientWidth || 700) - 300)), cssH = 200;
    var dpr = window.devicePixelRatio || 1;
    c.width = Math.round(cssW * dpr); c.height = Math.round(cssH * dpr);
    c.style.width = cssW + "px"; c.style.height = cssH + "px";
    var g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    var left = 30, right = 6, top = 4, bottom = 26, W = cssW - left - right, H = cssH - top - bottom;
    var a = w.clip_start_s, b = Math.max(w.clip_end_s, a + 1e-3), X = function (t) { return left + (t - a) / (b - a) * W; };
    var key = w.segment_id + "@" + w.start_s;
    c.setAttribute("data-window", key);
    c.setAttribute("data-drawn", "pending");
    c.setAttribute("role", "img");
    c.setAttribute("aria-label", "spectrogram from " + a.toFixed(2) + " s to " + b.toFixed(2) + " s, the window " +
                   w.start_s.toFixed(2) + "–" + w.end_s.toFixed(2) + " s marked");
    function paint(entry) {
      if (c.getAttribute("data-window") !== key) return;
      g.fillStyle = "#fff"; g.fillRect(0, 0, cssW, cssH);
      g.fillStyle = "#f1f3f5"; g.fillRect(left, top, W, H);
      if (entry && entry.state === "ok") g.drawImage(entry.img, left, top, W, H);
      else {
        g.fillStyle = "#5b6670"; g.font = "11px system-ui, sans-serif"; g.textAlign = "center";
        g.fillText(entry ? "thumbnail missing" : "no thumbnail for this window", left + W / 2, top + H / 2 + 4);
      }
      // the window itself between two lines; the context either side dimmed
      g.fillStyle = "rgba(255,255,255,0.35)";
      g.fillRect(left, top, X(w.start_s) - left, H); g.fillRect(X(w.end_s), top, left + W - X(w.end_s), H);
      [w.start_s, w.end_s].forEach(function (t) {
        g.strokeStyle = "#ffffff"; g.lineWidth = 3; g.beginPath(); g.moveTo(X(t), top); g.lineTo(X(t), top + H); g.stroke();
        g.strokeStyle = "#0b5f8a"; g.lineWidth = 1.5; g.stroke();
      });
      spectrogramAxes(g, {left: left, top: top, W: W, H: H, cssH: cssH}, a, b, X, 0, 50);
      c.setAttribute("data-drawn", entry ? entry.state : "none");
    }
    if (w.thumbnail) image(w.thumbnail, paint); else paint(null);
  }
  function reviewProgress() {
    var d = decisions[rv.label], yes = 0, no = 0, skip = 0;
    d.forEach(function (v) { if (v === "yes") yes++; else if (v === "no") no++; else if (v === "skip") skip++; });
    $("review-progress").textContent = (yes + no + skip) + " of " + d.length + " decided: " + yes + " yes, " + no +
      " no, " + skip + " skipped · classifier " + rv.classifier_id + " (" + rv.features + "), threshold " + rv.threshold.toFixed(3);
    api.review = {label: rv.label, at: rvAt, decisions: d.slice()};
  }
  function renderReviewList() {
    var list = $("review-list");
    list.textContent = "";
    rv.windows.forEach(function (w, i) {
      var li = el("li"), button = el("button", "review-item");
      button.type = "button";
      button.setAttribute("data-index", String(i));
      button.appendChild(el("span", "rv-file", w.file));
      button.appendChild(el("span", "rv-meta", w.start_s.toFixed(2) + "–" + w.end_s.toFixed(2) + " s · score " + w.score.toFixed(3)));
      button.appendChild(el("span", "rv-decision"));
      button.addEventListener("click", function () { reviewAt(i); });
      li.appendChild(button);
      list.appendChild(li);
    });
  }
  function markItem(i) {
    var item = $("review-list").children[i];
    if (!item) return;
    var value = decisions[rv.label][i], button = item.firstChild;
    button.setAttribute("data-decision", value);
    button.lastChild.textContent = value;
    button.classList.toggle("current", i === rvAt);
    if (i === rvAt) button.setAttribute("aria-current", "true"); else button.removeAttribute("aria-current");
  }
  function reviewAt(i) {
    if (!rv || !rv.windows.length) return;
    var before = rvAt;
    rvAt = Math.max(0, Math.min(rv.windows.length - 1, i));
    markItem(before); markItem(rvAt);
    var w = rv.windows[rvAt], item = $("review-list").children[rvAt];
    if (item && item.scrollIntoView) item.scrollIntoView({block: "nearest"});
    $("review-title").textContent = "Review · " + rv.label + " · window " + (rvAt + 1) + " of " + rv.windows.length;
    $("review-where").textContent = w.file + " · " + w.start_s.toFixed(2) + "–" + w.end_s.toFixed(2) + " s · score " + w.score.toFixed(3);
    reviewThumb(w);
    reviewPlayer.pause();
    if (w.audio) {
      reviewPlayer.hidden = false;
      if (reviewPlayer.getAttribute("data-src") !== w.audio) { reviewPlayer.src = encodePath(w.audio); reviewPlayer.setAttribute("data-src", w.audio); }
    } else { reviewPlayer.removeAttribute("src"); reviewPlayer.removeAttribute("data-src"); reviewPlayer.hidden = true; }
    reviewProgress();
  }
  function reviewLabel(name) {
    rv = REVIEWS.filter(function (b) { return b.label === name; })[0] || REVIEWS[0];
    $("review-label").value = rv.label;
    renderReviewList();
    rvAt = 0;
    rv.windows.forEach(function (_, i) { markItem(i); });
    reviewAt(0);
  }
  function decide(value) {
    if (!rv || !rv.windows.length) return;
    decisions[rv.label][rvAt] = value;
    markItem(rvAt);
    if (rvAt < rv.windows.length - 1) reviewAt(rvAt + 1); else reviewProgress();
  }
  function openReview(on) {
    if (on && !REVIEWS.length) return false;
    reviewing = api.reviewing = on;
    $("review").hidden = !on; plot.hidden = on;
    $("review-open").setAttribute("aria-pressed", String(on));
    if (on) { hideTooltip(); $("selection").hidden = true; if (!rv) reviewLabel(REVIEWS[0].label); else reviewAt(rvAt); }
    else { reviewPlayer.pause(); $("selection").hidden = !selection; }
    return true;
  }
  function reviewCsv() {
    var lines = ["file,start_s,end_s,label,positive,score,segment_id,recording_id"];
    rv.windows.forEach(function (w, i) {
      lines.push([csvText(w.file), w.start_s.toFixed(3), w.end_s.toFixed(3), csvText(rv.label), decisions[rv.label][i],
                  w.score.toFixed(4), csvText(w.segment_id), csvText(w.recording_id)].join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }
  function exportReview() {
    if (!rv) return;
    var blob = new Blob([reviewCsv()], {type: "text/csv;charset=utf-8"}), url = URL.createObjectURL(blob);
    var name = "review-" + String(rv.label).replace(/[^A-Za-z0-9_.-]+/g, "_") + "-decisions.csv";
    var a = el("a");
    a.href = url; a.download = name; a.hidden = true;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
    api.lastReviewExport = {name: name, rows: rv.windows.length};
  }
  function reviewKey(e) {  // true when the key was the review's
    if (e.ctrlKey || e.metaKey || e.altKey) return false;
    var k = e.key;
    if (k === "y" || k === "n" || k === "s") decide({y: "yes", n: "no", s: "skip"}[k]);
    else if (k === "ArrowDown" || k === "j") reviewAt(rvAt + 1);
    else if (k === "ArrowUp" || k === "k") reviewAt(rvAt - 1);
    else if (k === " ") { if (reviewPlayer.getAttribute("src")) { if (reviewPlayer.paused) { var p = reviewPlayer.play(); if (p && p.catch) p.catch(function () {}); } else reviewPlayer.pause(); } }
    else if (k === "Escape") openReview(false);
    else return false;
    e.preventDefault();
    return true;
  }
  function setupReview() {
    var open = $("review-open");
    api.reviewing = false;
    if (!REVIEWS.length) {
      open.disabled = true;
      open.title = "Nothing to review: run `ceta2vec classify` (and write the report again) to get suggested windows.";
      return;
    }
    open.textContent = "Review " + REVIEWS.reduce(function (n, b) { return n + b.windows.length; }, 0) + " suggested windows";
    var select_ = $("review-label");
    REVIEWS.forEach(function (b) { var o = el("option", null, b.label + " (" + b.windows.length + ")"); o.value = b.label; select_.appendChild(o); });
    select_.addEventListener("change", function () { reviewLabel(select_.value); select_.blur(); });
    open.addEventListener("click", function () { openReview(!reviewing); open.blur(); });
    $("review-close").addEventListener("click", function () { openReview(false); });
    $("review-export").addEventListener("click", exportReview);
    $("review").querySelectorAll(".review-actions button").forEach(function (b) {
      b.addEventListener("click", function () { decide(b.getAttribute("data-decision")); b.blur(); });
    });
  }

  // ---- start --------------------------------------------------------------------------------
  try {
    var first = SEG.layers.some(function (l) { return l.layer === D.main_layer; }) ? D.main_layer : SEG.layers[0].layer;
    fillLayers(first);
    $("layer").addEventListener("change", function () { setLayer(Number($("layer").value)); });
    $("colour-by").addEventListener("change", function () { setColour($("colour-by").value); });
    $("mode").querySelectorAll("button").forEach(function (b) {
      if (b.getAttribute("data-mode") === "frames" && !FR) {
        b.disabled = true;
        b.title = "This report has no frame vectors to map (frame_points = 0, or the model kept none).";
      }
      b.addEventListener("click", function () { setMode(b.getAttribute("data-mode")); });
    });
    $("tool").querySelectorAll("button").forEach(function (b) {
      b.addEventListener("click", function () { setTool(b.getAttribute("data-tool")); });
    });
    $("export-csv").addEventListener("click", exportSelection);
    setupReview();
    $("clear-selection").addEventListener("click", function () { setSelection([], false); });
    $("search").addEventListener("input", function (e) {
      var q = e.target.value.trim().toLowerCase();
      searchMatch = null;
      if (q) {
        searchMatch = new Uint8Array(rec.dict.length);
        rec.dict.forEach(function (name, c) { searchMatch[c] = name.toLowerCase().indexOf(q) >= 0 ? 1 : 0; });
      }
      applyFilters();
    });
    buildFilter("label", label, "unlabelled");
    $("label-filter").querySelector("legend").textContent = labelName;
    buildFilter("site", site, "unknown site");
    api.decodeMs = performance.now() - t0;
    fillColourChoices("label");
    buildGroups();
    renderLegend();
    sizeCanvases();
    L = prepare(SEG.layers.filter(function (l) { return l.layer === first; })[0]);
    api.layer = L.layer;
    applyFilters();
    new ResizeObserver(function () { sizeCanvases(); draw(); }).observe(plot);
  } catch (err) {
    api.error = String(err);
    status.textContent = "The explorer could not start: " + err;
    throw err;
  }

  // For tests and scripting: where a point is on screen (viewport px), and how long a full redraw takes.
  api.screenPosition = function (i) {
    var r = overlay.getBoundingClientRect();
    return {x: r.left + sx(i), y: r.top + sy(i), canvasLeft: r.left, canvasTop: r.top, width: r.width, height: r.height};
  };
  api.indexOf = function (id) { for (var i = 0; i < SEG.n; i++) if (segmentId(i) === id) return i; return -1; };
  api.select = function (i) { select(i, false); };
  api.setLayer = setLayer;
  api.setMode = setMode;
  api.setColour = setColour;
  api.setTool = setTool;
  api.selectionCsv = function () { return selection ? selectionCsv() : ""; };
  api.openReview = openReview;
  api.reviewCsv = function () { return rv ? reviewCsv() : ""; };
  api.reviewLabels = REVIEWS.map(function (b) { return b.label; });
  api.frames = FR ? FR.n : 0;
  api.redraw = function () { draw(); return api.lastDrawMs; };
  api.layers = SEG.layers.map(function (l) { return l.layer; });
  api.ready = true;
})();
