// The slide viewer: Deep Zoom tiles from /v1/slides/<id>.dzi, heatmaps as an overlay image.
"use strict";

const viewer = OpenSeadragon({
  id: "viewer",
  prefixUrl: "/static/vendor/openseadragon/images/",
  showNavigator: true,
  maxZoomPixelRatio: 2,
  crossOriginPolicy: false,
});
const slideSelect = document.getElementById("slide");
const overlaySelect = document.getElementById("overlay");
const opacity = document.getElementById("opacity");
const info = document.getElementById("info");
let slides = [];
let overlayItem = null;

function current() {
  return slides.find((s) => s.id === slideSelect.value);
}

function showOverlay() {
  if (overlayItem) {
    viewer.world.removeItem(overlayItem);
    overlayItem = null;
  }
  const slide = current();
  const name = overlaySelect.value;
  if (!slide || !name) return;
  viewer.addSimpleImage({
    url: `/v1/slides/${encodeURIComponent(slide.id)}/heatmaps/${name}.png`,
    x: 0, y: 0, width: 1, opacity: Number(opacity.value),
    success: (event) => { overlayItem = event.item; },
  });
}

function openSlide() {
  const slide = current();
  if (!slide) return;
  info.textContent = `${slide.width} × ${slide.height} px` +
    (slide.mpp ? `, ${slide.mpp} µm/px` : "") + (slide.label ? `, ${slide.label}` : "");
  overlaySelect.replaceChildren(new Option("none", ""),
    ...slide.heatmaps.map((m) => new Option(m, m)));
  if (slide.heatmaps.length) overlaySelect.value = slide.heatmaps[0];
  overlayItem = null;
  viewer.open(`/v1/slides/${encodeURIComponent(slide.id)}.dzi`);
}

viewer.addHandler("open", showOverlay);
slideSelect.addEventListener("change", openSlide);
overlaySelect.addEventListener("change", showOverlay);
opacity.addEventListener("input", () => {
  if (overlayItem) overlayItem.setOpacity(Number(opacity.value));
});

fetch("/v1/slides").then((r) => r.json()).then((list) => {
  slides = list;
  slideSelect.replaceChildren(...list.map((s) => new Option(s.id, s.id)));
  const wanted = new URLSearchParams(location.search).get("slide");
  if (wanted && list.some((s) => s.id === wanted)) slideSelect.value = wanted;
  openSlide();
});
