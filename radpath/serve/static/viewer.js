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

function formatProbability(value) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(3) : "–";
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
    $("model").textContent =
      `Model: ${model.algorithm || "?"} on ${model.backbone || "?"} (run ${model.run || "?"}).`;
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
  for (const kind of ["mammo", "histo", "fused"]) {
    $(`score-${kind}`).textContent = formatProbability(predictions[kind]);
  }
  renderContributions(result.modality_contributions);
  renderViews(result);
  renderRegions(result);
  $("rationale").textContent = result.rationale || "";
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  const blob = new Blob([JSON.stringify(result, null, 2)], { type: "application/json" });
  downloadUrl = URL.createObjectURL(blob);
  $("download").href = downloadUrl;
  $("results").hidden = false;
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

// A view's size in the pixels the regions are given in (its original pixels).
function viewSize(view, image) {
  if (view && Number.isFinite(view.width) && Number.isFinite(view.height)) {
    return [view.width, view.height];
  }
  if (view && Array.isArray(view.size) && view.size.length === 2) {
    return [view.size[1], view.size[0]];  // (height, width)
  }
  return [image.naturalWidth, image.naturalHeight];
}

function renderViews(result) {
  const container = $("views");
  container.replaceChildren();
  const images = (result.images && result.images.views) || [];
  const views = result.views || [];
  images.forEach((urls, index) => {
    const view = views[index] || {};
    const base = element("img", { className: "base", alt: `mammogram view ${index + 1}`,
                                  src: urls.base, id: `base-${index}` });
    const heat = element("img", { className: "heatmap", alt: `attention map of view ${index + 1}`,
                                  src: urls.heatmap, id: `heatmap-${index}` });
    const stage = element("div", { className: "stage" }, [base, heat]);
    const caption = element("figcaption", { text: viewCaption(view, index) });
    container.append(element("figure", { className: "view" }, [stage, caption]));
    const place = () => placeMarkers(stage, base, view, index, result.regions || []);
    if (base.complete && base.naturalWidth) place();
    else base.addEventListener("load", place, { once: true });
  });
}

function viewCaption(view, index) {
  const bits = [`view ${index + 1}`];
  for (const key of ["name", "file", "laterality", "view"]) {
    if (typeof view[key] === "string" && view[key]) bits.push(view[key]);
  }
  return bits.join(" · ");
}

function placeMarkers(stage, image, view, index, regions) {
  const [width, height] = viewSize(view, image);
  if (!width || !height) return;
  for (const region of regions) {
    if (region.view !== index) continue;
    const r = Math.max(region.r || 0, Math.min(width, height) * 0.02);
    const marker = element("div", { className: "marker", title: `region ${region.rank}` },
                           [element("span", { text: String(region.rank) })]);
    marker.style.left = `${(100 * region.x) / width}%`;
    marker.style.top = `${(100 * region.y) / height}%`;
    marker.style.width = `${(200 * r) / width}%`;
    marker.style.height = `${(200 * r) / height}%`;
    stage.append(marker);
  }
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
  loadModel();
});
