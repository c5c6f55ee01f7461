/* ceta2vec explorer: every segment as a point on a UMAP map, drawn on a canvas in one pass.
 * No libraries and nothing fetched: the data is window.CETA2VEC_DATA from explorer-data.js.
 * Data values are only ever put in the page with textContent or as encoded URLs, never as HTML.
 * Hover hit-testing uses a grid over the map so it stays O(points near the cursor) at 100k points.
 */
(function () {
  "use strict";

  var PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
                 "#882255", "#117733", "#999933", "#44AA99"];
  var OTHER = "#8d949a", NONE = "#c9ced3";
  var MAX_OPTIONS = 300;    // filter checkboxes per field; the rest share one "other values" box
  var HOVER_RADIUS = 7;     // CSS px
  var NOTE_PX = 22;         // the axes note under the map

  var api = window.ceta2vecExplorer = {ready: false, error: null, n: 0, visibleCount: 0, drawnCount: 0,
                                       firstDrawMs: null, lastDrawMs: null, decodeMs: null, draws: 0,
                                       selected: -1, hovered: -1, layer: null};
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
  function el(tag, cls, txt) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (txt !== undefined) e.textContent = txt;
    return e;
  }

  var D = window.CETA2VEC_DATA;
  var status = $("status");
  if (!D || D.format !== 1) {
    status.textContent = "The explorer's data (explorer-data.js) is missing or from another version: write the report again.";
    api.error = "no data";
    return;
  }
  var n = api.n = D.n;
  if (n === 0 || !D.layers.length) {
    status.textContent = "This report has no embedded segments to explore.";
    api.ready = true;
    return;
  }

  var t0 = performance.now();
  var segmentId = text(D.segment_id), startTime = text(D.start_time), thumb = text(D.thumbnail), clip = text(D.audio);
  var rec = categorical(D.recording), site = categorical(D.site), label = categorical(D.label);
  var startS = typed(D.start_s), cluster = typed(D.cluster);
  var layers = D.layers.map(function (l) { return {spec: l, layer: l.layer, k: l.k, xy: null, nb: null, dist: null}; });
  var labelName = D.label_column || "label";

  function prepare(L) {  // decode a layer on first use: bounds and the hover grid
    if (L.xy) return L;
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
  var visible = new Uint8Array(n);
  var L = null;
  var view = {k: 1, tx: 0, ty: 0, base: 1, W: 0, H: 0};
  var colourBy = "label";
  var groups = null;     // {order: Int32Array, offsets, colours, legend}
  var filters = {};      // field -> Uint8Array of enabled codes
  var searchMatch = null;
  var selected = -1, hovered = -1;

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
  function buildGroups() {
    var codes, names, i, g;
    if (colourBy === "cluster") {
      var maxC = 0;
      for (i = 0; i < n; i++) if (cluster[i] > maxC) maxC = cluster[i];
      codes = new Int32Array(n);
      for (i = 0; i < n; i++) codes[i] = cluster[i] < 0 ? maxC + 1 : cluster[i];
      names = [];
      for (g = 0; g <= maxC; g++) names.push("cluster " + g);
      names.push("");
    } else {
      var col = colourBy === "site" ? site : label;
      codes = col.codes; names = col.dict;
    }
    var m = names.length, counts = new Int32Array(m);
    for (i = 0; i < n; i++) counts[codes[i]]++;
    var ranked = [];
    for (g = 0; g < m; g++) if (counts[g] > 0 && names[g] !== "") ranked.push(g);
    ranked.sort(function (p, q) { return counts[q] - counts[p] || (names[p] < names[q] ? -1 : 1); });
    // colour slot per category: palette for the most frequent (clusters: their own id), "other", "none"
    var slotOf = new Int32Array(m), colours = PALETTE.concat([OTHER, NONE]), OTHER_SLOT = PALETTE.length, NONE_SLOT = OTHER_SLOT + 1;
    for (g = 0; g < m; g++) slotOf[g] = names[g] === "" ? NONE_SLOT : OTHER_SLOT;
    ranked.forEach(function (c, r) {
      if (colourBy === "cluster") slotOf[c] = c % PALETTE.length;
      else if (r < PALETTE.length) slotOf[c] = r;
    });
    // draw order: unlabelled first, then "other", then rarer colours last so they stay visible
    var slotCounts = new Int32Array(colours.length);
    for (i = 0; i < n; i++) slotCounts[slotOf[codes[i]]]++;
    var slots = [];
    for (g = 0; g < PALETTE.length; g++) slots.push(g);
    slots.sort(function (p, q) { return slotCounts[q] - slotCounts[p]; });
    var drawSlots = [NONE_SLOT, OTHER_SLOT].concat(slots);
    var offsets = new Int32Array(drawSlots.length + 1), pos = new Int32Array(colours.length);
    drawSlots.forEach(function (s, r) { pos[s] = r; });
    for (i = 0; i < n; i++) offsets[pos[slotOf[codes[i]]] + 1]++;
    for (g = 0; g < drawSlots.length; g++) offsets[g + 1] += offsets[g];
    var cursor = offsets.slice(0, drawSlots.length), order = new Int32Array(n);
    for (i = 0; i < n; i++) order[cursor[pos[slotOf[codes[i]]]]++] = i;
    var legend = [];
    if (colourBy === "cluster") {
      legend.push({colour: null, text: ranked.length + " k-means clusters" + (ranked.length > PALETTE.length ? " (colours repeat)" : "")});
    } else {
      ranked.slice(0, PALETTE.length).forEach(function (c) { legend.push({colour: colours[slotOf[c]], text: names[c], count: counts[c]}); });
      if (ranked.length > PALETTE.length) {
        var rest = 0;
        ranked.slice(PALETTE.length).forEach(function (c) { rest += counts[c]; });
        legend.push({colour: OTHER, text: (ranked.length - PALETTE.length) + " other values", count: rest});
      }
    }
    var noneCount = slotCounts[NONE_SLOT];
    if (noneCount) legend.push({colour: NONE, text: colourBy === "site" ? "unknown site" : colourBy === "cluster" ? "no cluster" : "unlabelled", count: noneCount});
    groups = {order: order, offsets: offsets, colours: drawSlots.map(function (s) { return colours[s]; }), legend: legend, slotOf: slotOf, codes: codes};
  }

  function renderLegend() {
    var box = $("legend");
    box.textContent = "";
    box.appendChild(el("p", "legend-title", colourBy === "label" ? labelName : colourBy));
    groups.legend.forEach(function (item) {
      var row = el("div", "legend-row");
      if (item.colour) { var sw = el("span", "swatch"); sw.style.background = item.colour; row.appendChild(sw); }
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
    api.drawnCount = n <= 5000 ? drawCircles() : drawPixels();
    api.draws++;
    api.lastDrawMs = performance.now() - t;
    if (api.firstDrawMs === null) api.firstDrawMs = performance.now();  // since navigation start
    drawOverlay();
  }

  function pointSize(base) { return base * Math.min(2.5, Math.sqrt(view.k)); }

  // Up to a few thousand points: anti-aliased circles, one path per colour.
  function drawCircles() {
    var xy = L.xy, a = view.a, ox = view.ox, oy = view.oy, W = view.W, H = view.H;
    var size = pointSize(n <= 2000 ? 6 : 4.5), h = size / 2, drawn = 0, order = groups.order, offsets = groups.offsets;
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
    var dpr = window.devicePixelRatio || 1, Wd = canvas.width, Hd = canvas.height;
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
  function drawOverlay() {
    octx.clearRect(0, 0, view.W, view.H);
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

  // ---- filters ------------------------------------------------------------------------------
  function buildFilter(field, col, emptyName) {
    var box = $(field + "-filter"), options = box.querySelector(".options"), m = col.dict.length;
    var counts = new Int32Array(m), i;
    for (i = 0; i < n; i++) counts[col.codes[i]]++;
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

  function applyFilters() {
    var lc = label.codes, scodes = site.codes, rcodes = rec.codes, lon = filters.label, son = filters.site, count = 0;
    for (var i = 0; i < n; i++) {
      var v = lon[lc[i]] & son[scodes[i]] & (searchMatch ? searchMatch[rcodes[i]] : 1);
      visible[i] = v; count += v;
    }
    api.visibleCount = count;
    if (hovered >= 0 && !visible[hovered]) hideTooltip();
    updateStatus();
    draw();
    if (selected >= 0) renderNeighbours();
  }

  function updateStatus() {
    status.textContent = "Showing " + fmtInt(api.visibleCount) + " of " + fmtInt(n) + " segments · layer " + L.layer;
    $("axes-note").textContent = "UMAP of layer " + L.layer + " (axes have no units; nearby points sound alike to the network)";
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

  var tipImg = el("img"), tipLines = el("div", "tip-lines");
  tipImg.alt = "spectrogram";
  tooltip.appendChild(tipImg); tooltip.appendChild(tipLines);
  function fieldsOf(i) {
    var lab = label.dict[label.codes[i]], st = site.dict[site.codes[i]], when = startTime(i);
    return [["Recording", rec.dict[rec.codes[i]]], ["Offset", fmtOffset(startS[i])],
            ["Start time", when ? when.replace("T", " ") : "unknown"], [labelName, lab || "unlabelled"],
            ["Site", st || "unknown"]];
  }
  function showTooltip(i, px, py) {
    var t = thumb(i);
    if (t) { tipImg.src = encodePath(t); tipImg.hidden = false; } else { tipImg.removeAttribute("src"); tipImg.hidden = true; }
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

  var player = $("clip-player"), missing = $("clip-missing");
  function select(i, play) {
    selected = api.selected = i;
    if (i < 0) {
      $("details-body").hidden = true; $("details-empty").hidden = false;
      player.pause();
      drawOverlay();
      return;
    }
    $("details-empty").hidden = true; $("details-body").hidden = false;
    var t = thumb(i), img = $("details-thumb");
    if (t) { img.src = encodePath(t); img.hidden = false; $("details-nothumb").hidden = true; }
    else { img.removeAttribute("src"); img.hidden = true; $("details-nothumb").hidden = false; }
    var body = $("details-fields");
    body.textContent = "";
    [["Segment", segmentId(i)]].concat(fieldsOf(i), [["Cluster", cluster[i] < 0 ? "none" : String(cluster[i])]]).forEach(function (f) {
      var tr = el("tr");
      tr.appendChild(el("th", null, f[0]));
      tr.appendChild(el("td", f[0] === "Recording" ? "recording" : null, f[1]));
      body.appendChild(tr);
    });
    var c = clip(i);
    if (c) {
      player.hidden = false; missing.hidden = true;
      player.src = encodePath(c);
      if (play) { var p = player.play(); if (p && p.catch) p.catch(function () {}); }  // autoplay may be refused
    } else {
      player.pause(); player.removeAttribute("src"); player.hidden = true;
      missing.hidden = false;
      missing.textContent = "No audio clip for this segment: clips are cut for " + fmtInt(D.media_segments || 0) +
        " segments (raise --media-points when writing the report).";
    }
    renderNeighbours();
    drawOverlay();
  }

  function renderNeighbours() {
    var list = $("neighbours"), i = selected;
    list.textContent = "";
    $("neighbours-title").textContent = "Nearest neighbours in layer " + L.layer;
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

  // ---- interaction --------------------------------------------------------------------------
  var drag = null, pending = null;
  function local(e) { var r = overlay.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
  plot.addEventListener("mousedown", function (e) {
    if (e.button !== 0) return;
    var p = local(e);
    drag = {x: p[0], y: p[1], tx: view.tx, ty: view.ty, moved: false};
  });
  window.addEventListener("mouseup", function (e) {
    if (!drag) return;
    var d = drag; drag = null;
    plot.classList.remove("panning");
    if (d.moved) return;
    var p = local(e);
    select(nearest(p[0], p[1]), true);
  });
  plot.addEventListener("mousemove", function (e) {
    var p = local(e);
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
      var i = nearest(q[0], q[1]);
      if (i !== hovered) { hovered = api.hovered = i; drawOverlay(); }
      if (i >= 0) showTooltip(i, q[0], q[1]); else tooltip.hidden = true;
      plot.style.cursor = i >= 0 ? "pointer" : "";
    });
  });
  plot.addEventListener("mouseleave", function () { if (!drag) hideTooltip(); });
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
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") select(-1, false); });

  function setLayer(layer) {
    var next = layers.filter(function (l) { return l.layer === layer; })[0];
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

  // ---- start --------------------------------------------------------------------------------
  try {
    var layerSelect = $("layer");
    layers.forEach(function (l) {
      var o = el("option", null, "layer " + l.layer + (l.layer === 0 ? " (conv encoder)" : ""));
      o.value = String(l.layer);
      layerSelect.appendChild(o);
    });
    var first = layers.some(function (l) { return l.layer === D.main_layer; }) ? D.main_layer : layers[0].layer;
    layerSelect.value = String(first);
    layerSelect.addEventListener("change", function () { setLayer(Number(layerSelect.value)); });
    var colourSelect = $("colour-by");
    colourSelect.querySelector('option[value="label"]').textContent = labelName;
    colourSelect.addEventListener("change", function () {
      colourBy = colourSelect.value; buildGroups(); renderLegend(); draw();
    });
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
    buildGroups();
    renderLegend();
    sizeCanvases();
    L = prepare(layers.filter(function (l) { return l.layer === first; })[0]);
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
  api.indexOf = function (id) { for (var i = 0; i < n; i++) if (segmentId(i) === id) return i; return -1; };
  api.select = function (i) { select(i, false); };
  api.setLayer = setLayer;
  api.redraw = function () { draw(); return api.lastDrawMs; };
  api.layers = layers.map(function (l) { return l.layer; });
  api.ready = true;
})();
