// The radpath viewer: upload a case, show the scores, the attention map over the
// mammogram, the numbered regions with their linked histology tiles, and the rationale.
// Plain DOM, no framework and no innerHTML: every text from the server is set as text.
"use strict";

const $ = (id) => document.getElementById(id);
let downloadUrl = null;

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "className") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function formatProbability(value, digits = 3) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
}

// Decimals (3 to 6) enough for a probability and its threshold to print in their order.
function orderKeepingDigits(value, threshold) {
  if (typeof value !== "number" || typeof threshold !== "number") return 3;
  let digits = 3;
  while (digits < 6 && value !== threshold &&
         value.toFixed(digits) === threshold.toFixed(digits)) digits += 1;
  return digits;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/health");
    const health = await response.json();
    const model = health.model || {};
    const started = typeof model.started === "string" ? `, trained ${model.started.slice(0, 10)}` : "";
    $("model").textContent =
      `Model: ${model.algorithm || "?"} on ${model.backbone || "?"} — run ${model.name || model.run || "?"}${started}.`;
    $("run-name").textContent = model.name || model.run || "";
  } catch (_) {
    $("model").textContent = "";
  }
}

async function submitCase(event) {
  event.preventDefault();
  showError("");
  const data = new FormData();
  for (const file of $("mammo").files) data.append("mammo", file, file.name);
  for (const file of $("histo").files) data.append("histo", file, file.name);
  data.append("pairing", $("pairing").value);
  const headers = {};
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;

  $("submit").disabled = true;
  $("status").textContent = "Explaining…";
  try {
    const response = await fetch("/v1/cases", { method: "POST", body: data, headers });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = { detail: `the server answered ${response.status} without JSON` };
    }
    if (!response.ok) {
      showError(`Error ${response.status}: ${body.detail || "request refused"}`);
      $("status").textContent = "";
      return;
    }
    render(body);
    $("status").textContent = "Done.";
  } catch (error) {
    showError(`The request failed: ${error}`);
    $("status").textContent = "";
  } finally {
    $("submit").disabled = false;
  }
}

function render(result) {
  const predictions = result.predictions || {};
  const thresholds = result.thresholds || {};
  for (const kind of ["mammo", "histo", "fused"]) {
    const value = predictions[kind];
    const chosen = thresholds[kind] || {};
    const threshold = chosen.threshold;
    const digits = orderKeepingDigits(value, threshold);
    $(`score-${kind}`).textContent = formatProbability(value, digits);
    const side = typeof value === "number" && typeof threshold === "number"
      ? (value >= threshold ? "at or above" : "below") : "";
    $(`threshold-${kind}`).textContent = typeof threshold === "number"
      ? `threshold ${threshold.toFixed(digits)} (${chosen.from || "?"})${side ? ": " + side : ""}`
      : "no threshold";
  }
  renderContributions(result.modality_contributions);
  renderRegions(result);
  $("rationale").textContent = result.rationale || "";
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  const blob = new Blob([JSON.stringify(result, null, 2)], { type: "application/json" });
  downloadUrl = URL.createObjectURL(blob);
  $("download").href = downloadUrl;
  $("results").hidden = false;
  renderViews(result);
  applyOpacity();
}

function renderContributions(contributions) {
  if (!contributions || typeof contributions !== "object") {
    $("contributions").textContent = "";
    return;
  }
  const parts = Object.entries(contributions)
    .filter(([, value]) => typeof value === "number")
    .map(([name, value]) => `${name} ${(100 * value).toFixed(0)}%`);
  $("contributions").textContent = parts.length ? `Modality contributions: ${parts.join(", ")}` : "";
}

// The deep-zoom viewers of the current case (one per view), kept for the browser tests.
const viewers = [];
window.radpathViewers = viewers;
const LABEL_W = 26;
const LABEL_H = 20;

function viewCaption(view, index) {
  const bits = [`view ${index + 1}`];
  for (const key of ["name", "file", "laterality", "view"]) {
    if (typeof view[key] === "string" && view[key]) bits.push(view[key]);
  }
  if (Number.isFinite(view.width) && Number.isFinite(view.height)) {
    bits.push(`${view.width} × ${view.height} px`);
  }
  return bits.join(" · ");
}

function renderViews(result) {
  for (const viewer of viewers.splice(0)) viewer.destroy();
  const container = $("views");
  container.replaceChildren();
  const images = (result.images && result.images.views) || [];
  const views = result.views || [];
  images.forEach((urls, index) => {
    const view = views[index] || {};
    const stage = element("div", { className: "osd", id: `osd-${index}` });
    const caption = element("figcaption", { text: viewCaption(view, index) });
    const figure = element("figure", { className: "view", "data-zoom": "1" }, [stage, caption]);
    container.append(figure);
    const regions = (result.regions || []).filter((region) => region.view === index);
    viewers.push(openView(stage, figure, urls, view, index, regions));
  });
}

// OpenSeadragon builds a zoom pyramid from the full-resolution film ("image" tile source);
// the heat map and the region circles are overlays pinned to image coordinates, so they
// follow zoom and pan; the labels are laid out again in screen space after every move.
function openView(stage, figure, urls, view, index, regions) {
  const viewer = OpenSeadragon({
    element: stage,
    prefixUrl: "/static/vendor/openseadragon/images/",
    tileSources: { type: "image", url: urls.full || urls.base, buildPyramid: true },
    drawer: "canvas",
    showNavigator: true,
    maxZoomPixelRatio: 4,
    crossOriginPolicy: false,
    gestureSettingsMouse: { clickToZoom: false },
  });
  const labels = element("div", { className: "labels" });
  viewer.addHandler("open", () => {
    const item = viewer.world.getItemAt(0);
    const size = item.getContentSize();
    const heat = element("img", { className: "heatmap", alt: `attention map of view ${index + 1}`,
                                  src: urls.heatmap, id: `heatmap-${index}` });
    heat.style.opacity = $("opacity").value;
    viewer.addOverlay({ element: heat, location: item.imageToViewportRectangle(0, 0, size.x, size.y) });
    const scale = Number.isFinite(view.width) && view.width ? size.x / view.width : 1;
    const circles = regions.map((region) => {
      const r = Math.max(region.r || 0, Math.min(size.x, size.y) * 0.01) * scale;
      const marker = element("div", { className: "marker", title: `region ${region.rank}`,
                                      "data-rank": String(region.rank) });
      viewer.addOverlay({ element: marker, location: item.imageToViewportRectangle(
        region.x * scale - r, region.y * scale - r, 2 * r, 2 * r) });
      return { rank: region.rank, x: region.x * scale, y: region.y * scale, r };
    });
    viewer.element.append(labels);
    const relayout = () => {
      placeLabels(viewer, item, labels, circles);
      figure.dataset.zoom = viewer.viewport.getZoom(true).toFixed(3);
    };
    viewer.addHandler("update-viewport", relayout);
    viewer.addHandler("resize", relayout);
    relayout();
    applyWindowLevel();
    figure.dataset.ready = "true";
  });
  return viewer;
}

function placeLabels(viewer, item, layer, circles) {
  const toPixel = (x, y) => viewer.viewport.pixelFromPoint(item.imageToViewportCoordinates(x, y), true);
  const onScreen = circles.map((c) => {
    const centre = toPixel(c.x, c.y);
    return { rank: c.rank, x: centre.x, y: centre.y, r: toPixel(c.x + c.r, c.y).x - centre.x };
  });
  const bounds = { width: viewer.element.clientWidth, height: viewer.element.clientHeight };
  layer.replaceChildren();
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "leaders");
  for (const spot of window.radpathLabels.layoutLabels(onScreen, LABEL_W, LABEL_H, bounds)) {
    const label = element("span", { className: "region-label", text: String(spot.rank),
                                    "data-rank": String(spot.rank) });
    label.style.left = `${spot.x}px`;
    label.style.top = `${spot.y}px`;
    layer.append(label);
    if (spot.far) {
      const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
      line.setAttribute("x1", String(spot.x + spot.w / 2));
      line.setAttribute("y1", String(spot.y + spot.h / 2));
      line.setAttribute("x2", String(spot.cx));
      line.setAttribute("y2", String(spot.cy));
      svg.append(line);
    }
  }
  layer.prepend(svg);
}

// Window/level as a linear map of the displayed grey values, out = (v - level) / window
// + 0.5, clamped to [0, 1]: an SVG transfer function applied to the film's canvas only
// (the heat map and markers are overlays above it and keep their colours).
function applyWindowLevel() {
  const width = Math.max(Number($("window").value), 0.01);
  const level = Number($("level").value);
  $("window-value").textContent = width.toFixed(2);
  $("level-value").textContent = level.toFixed(2);
  for (const id of ["wl-r", "wl-g", "wl-b"]) {
    $(id).setAttribute("slope", String(1 / width));
    $(id).setAttribute("intercept", String(0.5 - level / width));
  }
}

function resetWindowLevel() {
  $("window").value = "1";
  $("level").value = "0.5";
  applyWindowLevel();
}

function renderRegions(result) {
  const list = $("regions");
  list.replaceChildren();
  const tiles = (result.images && result.images.tiles) || [];
  const tileInfo = result.tiles || [];
  for (const region of result.regions || []) {
    const head = element("div", {
      className: "region-head",
      text: `Region ${region.rank} — view ${region.view + 1}, score ${formatProbability(region.score)}`,
    });
    const row = element("div", { className: "tiles" });
    for (const link of region.links || []) {
      const url = tiles[link.tile];
      if (!url) continue;
      const info = tileInfo[link.tile] || {};
      const label = typeof info.file === "string" ? `${info.file} #${link.tile + 1}` : `tile ${link.tile + 1}`;
      row.append(element("figure", { className: "tile-card" }, [
        element("img", { className: "tile", src: url, alt: `linked histology ${label}` }),
        element("figcaption", { text: `${label} · similarity ${formatSigned(link.similarity)}` }),
      ]));
    }
    list.append(element("li", { value: String(region.rank) }, [head, row]));
  }
  $("no-tiles").hidden = tiles.length > 0;
  $("link-method").textContent = result.link_method
    ? `Similarity: ${result.link_method}.` : "";
}

function formatSigned(value) {
  return typeof value === "number" ? (value >= 0 ? "+" : "") + value.toFixed(2) : "–";
}

function applyOpacity() {
  const value = $("opacity").value;
  $("opacity-value").textContent = Number(value).toFixed(2);
  for (const heat of document.querySelectorAll("img.heatmap")) heat.style.opacity = value;
}

document.addEventListener("DOMContentLoaded", () => {
  $("case-form").addEventListener("submit", submitCase);
  $("opacity").addEventListener("input", applyOpacity);
  $("window").addEventListener("input", applyWindowLevel);
  $("level").addEventListener("input", applyWindowLevel);
  $("wl-reset").addEventListener("click", resetWindowLevel);
  applyWindowLevel();
  loadModel();
});
