// Region labels that never overlap one another: a small greedy layout, kept apart from the
// viewer so the browser tests can call it on crafted circles.
"use strict";

// Rectangles [x, y, w, h] overlap (touching is not overlapping).
function rectsOverlap(a, b) {
  return a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3];
}

// Where each label goes: circles [{rank, x, y, r}] in pixels, labels of size w x h, inside
// bounds {width, height} when possible. Labels try eight places around their circle, then
// rings farther out; the first place that overlaps no placed label (and, on the first pass,
// covers no other circle's centre) wins. Returns [{rank, x, y, w, h, cx, cy, far}], where
// far says a leader line is needed to tie the label to its circle.
function layoutLabels(circles, w, h, bounds) {
  const placed = [];
  const order = [...circles].sort((a, b) => a.rank - b.rank);
  const inside = (box) => box[0] >= 0 && box[1] >= 0 && box[0] + box[2] <= bounds.width &&
    box[1] + box[3] <= bounds.height;
  const free = (box) => placed.every((p) => !rectsOverlap(box, [p.x, p.y, p.w, p.h]));
  const coversCentre = (box, self) => circles.some((c) => c !== self &&
    c.x > box[0] && c.x < box[0] + box[2] && c.y > box[1] && c.y < box[1] + box[3]);
  for (const circle of order) {
    let chosen = null;
    for (const strict of [true, false]) {
      for (let ring = 0; ring < 12 && !chosen; ring += 1) {
        const d = circle.r * 0.72 + 3 + ring * (h + 2);
        const spots = [[d, -d - h], [-d - w, -d - h], [d, d], [-d - w, d],
                       [circle.r + 3 + ring * (w + 2), -h / 2],
                       [-circle.r - 3 - w - ring * (w + 2), -h / 2],
                       [-w / 2, -circle.r - 3 - h - ring * (h + 2)],
                       [-w / 2, circle.r + 3 + ring * (h + 2)]];
        for (const [dx, dy] of spots) {
          const box = [circle.x + dx, circle.y + dy, w, h];
          if (free(box) && (!strict || (inside(box) && !coversCentre(box, circle)))) {
            chosen = { box, far: ring > 0 };
            break;
          }
        }
      }
      if (chosen) break;
    }
    if (!chosen) {  // crowded beyond every ring: a free slot down the left edge
      let y = 0;
      while (!free([0, y, w, h])) y += h + 2;
      chosen = { box: [0, y, w, h], far: true };
    }
    const [x, y] = chosen.box;
    placed.push({ rank: circle.rank, x, y, w, h, cx: circle.x, cy: circle.y, far: chosen.far });
  }
  return placed;
}

window.radpathLabels = { layoutLabels, rectsOverlap };
