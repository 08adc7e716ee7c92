// attnexplain explorer: everything this page shows is in its own payload (no network).
// The payload is base64 of zlib-deflated bytes: a little-endian uint32 header length, the JSON
// header, then the binary section (8-bit map codes, masks, colour tables, image files) that the
// header's offsets point into.
"use strict";
(() => {
  const FUSED = -1;
  const METHOD_LAYER = -1;
  const NONFINITE = 255;
  const $ = (id) => document.getElementById(id);

  const state = {
    image: 0,
    method: null,
    layer: null,
    head: null,
    view: "single",
    opacity: 0.6,
    colormap: "viridis",
    normalisation: "image",
    threshold: false,
    mass: 0.6,
    outline: false,
  };
  let header = null;
  let binary = null;
  const imageUrls = [];
  const valueCache = new Map();

  // ------------------------------------------------------------------------------------------
  // Payload
  // ------------------------------------------------------------------------------------------

  async function decodePayload() {
    const text = $("explorer-payload").textContent.trim();
    const chars = atob(text);
    const bytes = new Uint8Array(chars.length);
    for (let i = 0; i < chars.length; i++) bytes[i] = chars.charCodeAt(i);
    if (typeof DecompressionStream === "undefined") {
      throw new Error("this browser cannot unpack the page's data (no DecompressionStream); " +
        "open the page in a current Chrome, Edge, Firefox or Safari");
    }
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    const raw = new Uint8Array(await new Response(stream).arrayBuffer());
    const length = new DataView(raw.buffer, raw.byteOffset, 4).getUint32(0, true);
    const json = new TextDecoder().decode(raw.subarray(4, 4 + length));
    return { header: JSON.parse(json), binary: raw.subarray(4 + length) };
  }

  function viewRecord(entry) {
    const [layer, head, offset, h, w, lo, scale, nonfinite, scored] = entry;
    const levels = nonfinite > 0 ? NONFINITE - 1 : NONFINITE;
    return { layer, head, offset, h, w, lo, scale, nonfinite, scored: scored === 1,
      hi: lo + scale * levels };
  }

  // ------------------------------------------------------------------------------------------
  // Views and labels
  // ------------------------------------------------------------------------------------------

  const currentImage = () => header.images[state.image];
  const methodInfo = (name) => header.methods.find((m) => m.name === name);
  const viewsOf = (image, method) => (image.methods[method] || {}).views || [];

  function defaultView(views) {
    return views.find((v) => v.scored) || views[0];
  }

  // The view of ``method`` closest to (layer, head): exact, else the same layer, else default.
  function pickView(image, method, layer, head) {
    const views = viewsOf(image, method);
    if (!views.length) return null;
    return views.find((v) => v.layer === layer && v.head === head) ||
      views.find((v) => v.layer === layer && v.scored) ||
      views.find((v) => v.layer === layer) || defaultView(views);
  }

  function layerName(method, layer) {
    if (layer === METHOD_LAYER) return "the method's layer";
    const info = methodInfo(method);
    return info && info.layer_axis === "end block" ? `ends at block ${layer}` : `layer ${layer}`;
  }
  const headName = (head) => (head === FUSED ? "fused" : `head ${head}`);
  function viewName(method, view) {
    if (view.layer === METHOD_LAYER && view.head === FUSED) return "its map";
    if (view.layer === METHOD_LAYER) return headName(view.head);
    return `${layerName(method, view.layer)}, ${headName(view.head)}`;
  }

  // ------------------------------------------------------------------------------------------
  // Maps: decode, resize (as torch's bilinear, align_corners=False), colour, threshold
  // ------------------------------------------------------------------------------------------

  function gridValues(view) {
    const codes = binary.subarray(view.offset, view.offset + view.h * view.w);
    const values = new Float64Array(codes.length);
    for (let i = 0; i < codes.length; i++) {
      const code = codes[i];
      values[i] = view.nonfinite > 0 && code === NONFINITE ? NaN : view.lo + code * view.scale;
    }
    return values;
  }

  function sourceIndex(out, scale, size) {
    const source = Math.max(scale * (out + 0.5) - 0.5, 0);
    const low = Math.min(Math.floor(source), size - 1);
    const high = Math.min(low + 1, size - 1);
    return [low, high, source - low];
  }

  function bilinear(values, h, w, H, W) {
    if (h === H && w === W) return values;
    const out = new Float64Array(H * W);
    const rows = [];
    for (let y = 0; y < H; y++) rows.push(sourceIndex(y, h / H, h));
    const cols = [];
    for (let x = 0; x < W; x++) cols.push(sourceIndex(x, w / W, w));
    for (let y = 0; y < H; y++) {
      const [y0, y1, ly] = rows[y];
      for (let x = 0; x < W; x++) {
        const [x0, x1, lx] = cols[x];
        const top = (1 - lx) * values[y0 * w + x0] + lx * values[y0 * w + x1];
        const bottom = (1 - lx) * values[y1 * w + x0] + lx * values[y1 * w + x1];
        out[y * W + x] = (1 - ly) * top + ly * bottom;
      }
    }
    return out;
  }

  function mapValues(view, size) {
    // Identical codes are stored once, but maps sharing them may differ in offset and scale.
    const key = [view.offset, view.h, view.w, view.lo, view.scale, view.nonfinite > 0, ...size]
      .join("/");
    if (!valueCache.has(key)) {
      if (valueCache.size > 64) valueCache.clear();
      valueCache.set(key, bilinear(gridValues(view), view.h, view.w, size[0], size[1]));
    }
    return valueCache.get(key);
  }

  function colourRange(method, view) {
    if (state.normalisation === "raw") {
      const range = methodInfo(method).range;
      if (range) return range;
    }
    return [view.lo, view.hi];
  }

  function paintMap(canvas, values, size, range) {
    const [H, W] = size;
    canvas.width = W;
    canvas.height = H;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    const pixels = context.createImageData(W, H);
    const lut = colormapTable(state.colormap);
    const [low, high] = range;
    const span = high - low;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (!Number.isFinite(v)) continue; // alpha stays 0: not-finite pixels are transparent
      const t = span > 0 ? (v - low) / span : 0;
      const k = Math.min(255, Math.max(0, Math.round(t * 255)));
      pixels.data[4 * i] = lut[3 * k];
      pixels.data[4 * i + 1] = lut[3 * k + 1];
      pixels.data[4 * i + 2] = lut[3 * k + 2];
      pixels.data[4 * i + 3] = 255;
    }
    context.putImageData(pixels, 0, 0);
  }

  function colormapTable(name) {
    const offset = header.colormaps[name];
    return binary.subarray(offset, offset + 768);
  }

  function pixelMask(offset, size) {
    return offset === null ? null : binary.subarray(offset, offset + size[0] * size[1]);
  }

  // DINO's rule (visualize_attention.py): sort ascending, normalise the cumulative sum, keep
  // the pixels where it exceeds 1 - mass. Ignored and non-finite pixels take no part; the map
  // is clamped at 0 as the benchmark's MassJaccard does. Ties are broken by pixel index.
  function keptRegion(values, ignore, mass) {
    const kept = new Uint8Array(values.length);
    const order = [];
    let total = 0;
    for (let i = 0; i < values.length; i++) {
      if ((ignore && ignore[i]) || !Number.isFinite(values[i])) continue;
      order.push(i);
      total += Math.max(values[i], 0);
    }
    if (!(total > 0)) return kept;
    const value = (i) => Math.max(values[i], 0);
    order.sort((a, b) => value(a) - value(b) || a - b);
    let cumulative = 0;
    for (const i of order) {
      cumulative += value(i);
      if (cumulative / total > 1 - mass) kept[i] = 1;
    }
    return kept;
  }

  function jaccard(kept, mask, ignore) {
    let intersection = 0;
    let union = 0;
    for (let i = 0; i < kept.length; i++) {
      if (ignore && ignore[i]) continue;
      const k = kept[i] === 1;
      const m = mask[i] === 1;
      if (k && m) intersection++;
      if (k || m) union++;
    }
    return union > 0 ? intersection / union : 1;
  }

  function paintKept(canvas, kept, size) {
    const [H, W] = size;
    canvas.width = W;
    canvas.height = H;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    const pixels = context.createImageData(W, H);
    for (let i = 0; i < kept.length; i++) {
      if (!kept[i]) pixels.data[4 * i + 3] = 160; // darken what the threshold drops
    }
    context.putImageData(pixels, 0, 0);
  }

  function paintOutline(canvas, mask, size) {
    const [H, W] = size;
    canvas.width = W;
    canvas.height = H;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(W, H);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const i = y * W + x;
        if (!mask[i]) continue;
        const edge = x === 0 || y === 0 || x === W - 1 || y === H - 1 ||
          !mask[i - 1] || !mask[i + 1] || !mask[i - W] || !mask[i + W];
        if (edge) pixels.data.set([255, 255, 255, 255], 4 * i);
      }
    }
    context.putImageData(pixels, 0, 0);
  }

  // ------------------------------------------------------------------------------------------
  // Controls
  // ------------------------------------------------------------------------------------------

  function setOptions(select, options, selected) {
    select.replaceChildren(...options.map(([value, label]) => {
      const option = document.createElement("option");
      option.value = String(value);
      option.textContent = label;
      option.selected = value === selected;
      return option;
    }));
    select.disabled = options.length < 2;
  }

  function syncViewControls() {
    const image = currentImage();
    const views = viewsOf(image, state.method);
    const view = pickView(image, state.method, state.layer, state.head);
    if (view) {
      state.layer = view.layer;
      state.head = view.head;
    }
    const layers = [...new Set(views.map((v) => v.layer))].sort((a, b) => a - b);
    const heads = views.filter((v) => v.layer === state.layer).map((v) => v.head)
      .sort((a, b) => a - b);
    const info = methodInfo(state.method);
    $("layer-label").textContent = info && info.layer_axis === "end block"
      ? "Rollout ends at block" : "Layer";
    setOptions($("layer"), layers.map((l) => [l, layerName(state.method, l)]), state.layer);
    setOptions($("head"), heads.map((h) => [h, headName(h)]), state.head);
  }

  function bindControls() {
    const methods = header.methods.map((m) => [m.name, m.name]);
    state.method = methods.length ? methods[0][0] : null;
    setOptions($("method"), methods, state.method);
    setOptions($("colormap"), Object.keys(header.colormaps).map((c) => [c, c]), state.colormap);
    $("method").addEventListener("change", (e) => {
      state.method = e.target.value;
      render();
    });
    $("layer").addEventListener("change", (e) => {
      state.layer = Number(e.target.value);
      render();
    });
    $("head").addEventListener("change", (e) => {
      state.head = Number(e.target.value);
      render();
    });
    for (const radio of document.querySelectorAll("input[name=view]")) {
      radio.addEventListener("change", (e) => {
        state.view = e.target.value;
        render();
      });
    }
    $("opacity").addEventListener("input", (e) => {
      state.opacity = Number(e.target.value);
      render();
    });
    $("colormap").addEventListener("change", (e) => {
      state.colormap = e.target.value;
      render();
    });
    $("normalisation").addEventListener("change", (e) => {
      state.normalisation = e.target.value;
      render();
    });
    $("threshold").addEventListener("change", (e) => {
      state.threshold = e.target.checked;
      render();
    });
    $("mass").addEventListener("input", (e) => {
      state.mass = Number(e.target.value);
      state.threshold = true;
      $("threshold").checked = true;
      render();
    });
    $("outline").addEventListener("change", (e) => {
      state.outline = e.target.checked;
      render();
    });
    window.addEventListener("resize", () => render());
    document.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      if (e.target.closest && e.target.closest("input, select, textarea")) return;
      e.preventDefault();
      selectImage(state.image + (e.key === "ArrowRight" ? 1 : -1));
    });
  }

  function selectImage(index) {
    const count = header.images.length;
    state.image = ((index % count) + count) % count;
    render();
    const button = $("thumbnails").children[state.image];
    if (button) button.scrollIntoView({ block: "nearest", inline: "nearest" });
  }

  // ------------------------------------------------------------------------------------------
  // Rendering
  // ------------------------------------------------------------------------------------------

  function imageUrl(index) {
    if (imageUrls[index] === undefined) {
      const entry = header.images[index].image;
      imageUrls[index] = entry === null ? null : URL.createObjectURL(
        new Blob([binary.subarray(entry[0], entry[0] + entry[1])], { type: entry[2] }));
    }
    return imageUrls[index];
  }

  function buildThumbnails() {
    const strip = $("thumbnails");
    header.images.forEach((image, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("aria-label", `image ${index + 1}: ${image.id}`);
      button.title = image.id;
      const url = imageUrl(index);
      let face;
      if (url) {
        face = document.createElement("img");
        face.src = url;
        face.alt = "";
      } else {
        face = document.createElement("span");
        face.className = "placeholder";
        face.textContent = image.id;
      }
      button.append(face);
      button.addEventListener("click", () => selectImage(index));
      strip.append(button);
    });
  }

  function setStage(stage, img, index, size, fitHeight) {
    stage.style.aspectRatio = `${size[1]} / ${size[0]}`;
    if (fitHeight) {
      // The whole map stays in view on a 1280 x 800 screen: its height leaves room for the
      // header, the thumbnails and the colour bar.
      const height = Math.max(200, window.innerHeight - 280);
      stage.style.maxWidth = `${Math.min(560, (height * size[1]) / size[0])}px`;
    }
    const url = imageUrl(index);
    img.hidden = url === null;
    if (url !== null && img.getAttribute("src") !== url) img.src = url;
  }

  function threshold(values, image) {
    const ignore = pixelMask(image.ignore, image.size);
    const kept = keptRegion(values, ignore, state.mass);
    const mask = pixelMask(image.mask, image.size);
    let share = 0;
    let valid = 0;
    for (let i = 0; i < kept.length; i++) {
      if (ignore && ignore[i]) continue;
      valid++;
      share += kept[i];
    }
    return { kept, share: valid ? share / valid : 0,
      jaccard: mask ? jaccard(kept, mask, ignore) : null };
  }

  function renderSingle(image) {
    const view = pickView(image, state.method, state.layer, state.head);
    const map = $("map");
    const kept = $("kept");
    setStage($("stage"), $("image"), state.image, image.size, true);
    $("single").style.maxWidth = $("stage").style.maxWidth;
    map.style.opacity = String(state.opacity);
    $("caption").textContent = `${image.id}${image.caption ? " · " + image.caption : ""}`;
    $("threshold-readout").textContent = "";
    delete $("threshold-readout").dataset.jaccard;
    const mask = pixelMask(image.mask, image.size);
    $("mask-outline").hidden = !(state.outline && mask);
    if (state.outline && mask) paintOutline($("mask-outline"), mask, image.size);
    if (!view) {
      map.width = map.height = 1;
      map.getContext("2d").clearRect(0, 0, 1, 1);
      map.dataset.view = "";
      map.setAttribute("aria-label", `no map of ${state.method ?? "any method"} for this image`);
      kept.hidden = true;
      paintColorbar(null);
      return;
    }
    const values = mapValues(view, image.size);
    const range = colourRange(state.method, view);
    paintMap(map, values, image.size, range);
    map.dataset.view = JSON.stringify({ image: image.id, method: state.method, layer: view.layer,
      head: view.head, colormap: state.colormap, normalisation: state.normalisation });
    map.setAttribute("aria-label",
      `${state.method} map, ${viewName(state.method, view)}, over image ${image.id}`);
    paintColorbar(range);
    kept.hidden = !state.threshold;
    if (state.threshold) {
      const result = threshold(values, image);
      paintKept(kept, result.kept, image.size);
      let text = `mass ${state.mass.toFixed(2)}: keeps ${(100 * result.share).toFixed(1)} % ` +
        "of the pixels";
      if (result.jaccard !== null) {
        text += ` · Jaccard with the mask ${result.jaccard.toFixed(3)}`;
        $("threshold-readout").dataset.jaccard = String(result.jaccard);
      } else {
        text += " · no mask for this image, so no Jaccard";
      }
      $("threshold-readout").textContent = text;
    }
  }

  function paintColorbar(range) {
    const canvas = $("colorbar-canvas");
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(256, 1);
    const lut = colormapTable(state.colormap);
    for (let k = 0; k < 256; k++) {
      pixels.data.set([lut[3 * k], lut[3 * k + 1], lut[3 * k + 2], 255], 4 * k);
    }
    context.putImageData(pixels, 0, 0);
    $("colorbar-low").textContent = range ? formatNumber(range[0]) : "";
    $("colorbar-high").textContent = range ? formatNumber(range[1]) : "";
  }

  function formatNumber(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "n/a";
    const magnitude = Math.abs(value);
    return magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e4)
      ? value.toExponential(2) : value.toPrecision(3);
  }

  function renderGrid(image) {
    const grid = $("grid");
    grid.replaceChildren();
    for (const method of header.methods) {
      const view = pickView(image, method.name, state.layer, state.head);
      const figure = document.createElement("figure");
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("aria-current", String(method.name === state.method));
      button.setAttribute("aria-label", `show ${method.name} alone`);
      const stage = document.createElement("div");
      stage.className = "stage";
      const img = document.createElement("img");
      img.alt = "";
      stage.append(img);
      setStage(stage, img, state.image, image.size);
      const caption = document.createElement("figcaption");
      if (view) {
        const values = mapValues(view, image.size);
        const canvas = document.createElement("canvas");
        canvas.dataset.method = method.name;
        canvas.setAttribute("role", "img");
        canvas.setAttribute("aria-label", `${method.name} map, ${viewName(method.name, view)}`);
        canvas.style.opacity = String(state.opacity);
        paintMap(canvas, values, image.size, colourRange(method.name, view));
        stage.append(canvas);
        let text = `${method.name} · ${viewName(method.name, view)}`;
        if (state.threshold) {
          const result = threshold(values, image);
          const kept = document.createElement("canvas");
          kept.className = "kept";
          paintKept(kept, result.kept, image.size);
          stage.append(kept);
          if (result.jaccard !== null) text += ` · Jaccard ${result.jaccard.toFixed(3)}`;
        }
        caption.textContent = text;
      } else {
        caption.textContent = `${method.name} · no map for this image`;
      }
      button.append(stage);
      button.addEventListener("click", () => {
        state.method = method.name;
        state.view = "single";
        $("view-single").checked = true;
        $("method").value = method.name;
        render();
      });
      figure.append(button, caption);
      grid.append(figure);
    }
  }

  function renderMask(image) {
    const canvas = $("mask-view");
    const mask = pixelMask(image.mask, image.size);
    $("mask-missing").hidden = mask !== null;
    canvas.hidden = mask === null;
    if (!mask) return;
    const ignore = pixelMask(image.ignore, image.size);
    const [H, W] = image.size;
    canvas.width = W;
    canvas.height = H;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(W, H);
    for (let i = 0; i < mask.length; i++) {
      const grey = ignore && ignore[i] ? 128 : mask[i] ? 255 : 0;
      pixels.data.set([grey, grey, grey, 255], 4 * i);
    }
    context.putImageData(pixels, 0, 0);
  }

  function renderScores(image) {
    const entry = image.methods[state.method] || {};
    const scores = entry.scores || {};
    const body = $("scores").tBodies[0];
    body.replaceChildren();
    const names = Object.keys(scores);
    const view = defaultView(viewsOf(image, state.method));
    $("scored-view").textContent = !names.length
      ? `no benchmark scores of ${state.method ?? "any method"} for this image`
      : view ? `${state.method}, scored map: ${viewName(state.method, view)}` : state.method;
    const categories = {};
    for (const name of names) {
      const category = (header.metrics[name] || {}).category || "other";
      (categories[category] = categories[category] || []).push(name);
    }
    for (const [category, metrics] of Object.entries(categories)) {
      const row = body.insertRow();
      row.className = "category";
      const cell = document.createElement("th");
      cell.colSpan = 3;
      cell.scope = "colgroup";
      cell.textContent = category;
      row.append(cell);
      for (const name of metrics) {
        const line = body.insertRow();
        const label = document.createElement("th");
        label.scope = "row";
        label.textContent = name;
        line.append(label);
        const value = line.insertCell();
        value.className = "value";
        value.textContent = formatNumber(scores[name]);
        const better = (header.metrics[name] || {}).higher_is_better;
        line.insertCell().textContent = better === undefined || better === null
          ? "" : better ? "higher" : "lower";
      }
    }
  }

  const CURVE_COLOURS = ["#1a5fb4", "#c01c28", "#26a269", "#a347ba", "#e66100", "#5e5c64"];

  function renderCurves(image) {
    const box = $("curves");
    const curves = (image.methods[state.method] || {}).curves || {};
    const names = Object.keys(curves);
    if (!names.length) {
      box.textContent =
        `no deletion / insertion curves of ${state.method ?? "any method"} for this image`;
      box.setAttribute("aria-label", box.textContent);
      return;
    }
    const width = 300;
    const left = 34;
    const top = 8;
    const plotWidth = width - left - 8;
    const plotHeight = 130;
    const legendTop = top + plotHeight + 34;
    const height = legendTop + 14 * names.length;
    const svgNS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const add = (tag, attributes, text) => {
      const node = document.createElementNS(svgNS, tag);
      for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    const px = (x) => left + x * plotWidth;
    const py = (y) => top + (1 - y) * plotHeight;
    add("line", { x1: px(0), y1: py(0), x2: px(1), y2: py(0), class: "axis" });
    add("line", { x1: px(0), y1: py(0), x2: px(0), y2: py(1), class: "axis" });
    for (const t of [0, 0.5, 1]) {
      add("text", { x: px(t), y: py(0) + 12, "text-anchor": "middle" }, String(t));
      add("text", { x: px(0) - 4, y: py(t) + 3, "text-anchor": "end" }, String(t));
    }
    add("text", { x: px(0.5), y: py(0) + 25, "text-anchor": "middle" },
      "fraction of patches removed / inserted");
    add("text", { x: 10, y: py(0.5), transform: `rotate(-90 10 ${py(0.5)})`,
      "text-anchor": "middle" }, "probability");
    const scores = (image.methods[state.method] || {}).scores || {};
    const described = [];
    names.forEach((name, k) => {
      const colour = CURVE_COLOURS[k % CURVE_COLOURS.length];
      const { x, probability } = curves[name];
      const points = x.map((xi, i) => [xi, probability[i]])
        .filter(([a, b]) => a !== null && b !== null)
        .map(([a, b]) => `${px(a).toFixed(1)},${py(b).toFixed(1)}`).join(" ");
      add("polyline", { points, fill: "none", stroke: colour, "stroke-width": 1.6 });
      const auc = scores[name];
      const label = `${name}${auc === undefined ? "" : " (AUC " + formatNumber(auc) + ")"}`;
      const lx = left;
      const ly = legendTop + 14 * k + 6;
      add("rect", { x: lx, y: ly - 7, width: 10, height: 3, fill: colour });
      add("text", { x: lx + 14, y: ly - 3 }, label);
      described.push(label);
    });
    box.replaceChildren(svg);
    box.setAttribute("aria-label", `class probability against the fraction of patches: ` +
      described.join("; "));
  }

  function renderNotes(image) {
    const notes = [];
    if (image.image === null) notes.push("the image's pixels were not saved: grey background");
    for (const method of header.methods) {
      if (!viewsOf(image, method.name).length) notes.push(`no map of ${method.name} for this image`);
    }
    const view = pickView(image, state.method, state.layer, state.head);
    if (view && view.nonfinite > 0) {
      notes.push(`${view.nonfinite} of the ${view.h * view.w} values of this map are NaN or ` +
        "infinite: shown transparent, left out of the threshold");
    }
    if (view) {
      const [H, W] = image.size;
      const ratio = (H / view.h) / (W / view.w);
      if (Math.abs(ratio - 1) > 0.25) {
        notes.push(`this map is ${view.h} × ${view.w} but the image is ${H} × ${W}: stretched`);
      }
    }
    if (image.mask === null) notes.push("no mask for this image: no Jaccard");
    $("image-notes").replaceChildren(...notes.map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }));
  }

  function render() {
    if (!header.images.length) return;
    const image = currentImage();
    [...$("thumbnails").children].forEach((button, index) => {
      button.setAttribute("aria-current", String(index === state.image));
    });
    $("opacity-value").textContent = state.opacity.toFixed(2);
    $("mass-value").textContent = state.mass.toFixed(2);
    if (state.method !== null) {
      syncViewControls();
      $("method").value = state.method;
    } else {
      setOptions($("layer"), [], null);
      setOptions($("head"), [], null);
    }
    $("single").hidden = state.view !== "single";
    $("grid").hidden = state.view !== "all";
    if (state.view === "single") renderSingle(image);
    else renderGrid(image);
    renderMask(image);
    renderScores(image);
    renderCurves(image);
    renderNotes(image);
  }

  function renderPageNotes() {
    const notes = [...header.notes];
    if (!header.methods.length) notes.push("this page has no maps to show");
    if (header.methods.length === 1) {
      notes.push("this run has one method: the side-by-side view shows it alone");
    }
    $("notes").replaceChildren(...notes.map((text) => {
      const p = document.createElement("p");
      p.textContent = text;
      return p;
    }));
    const nav = $("pages");
    for (const link of header.page.links) {
      const node = document.createElement(link.current ? "span" : "a");
      if (link.current) node.setAttribute("aria-current", "page");
      else node.href = link.href;
      node.textContent = link.label;
      nav.append(node);
    }
  }

  function fail(error) {
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = `The explorer could not start: ${error.message}`;
    $("notes").append(p);
    console.error(error);
  }

  async function main() {
    ({ header, binary } = await decodePayload());
    for (const image of header.images) {
      for (const entry of Object.values(image.methods)) entry.views = entry.views.map(viewRecord);
    }
    renderPageNotes();
    buildThumbnails();
    bindControls();
    render();
    window.explorer = { state, header, render };
    document.body.dataset.ready = "true";
    document.body.dataset.readyMs = String(performance.now());
  }

  main().catch(fail);
})();
