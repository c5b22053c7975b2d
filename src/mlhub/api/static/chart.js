// A small line chart on <canvas>: several series overlaid, axes with round ticks, NaN gaps, a legend, and zoom:
// drag across the plot to pick an x range (the owner refetches that range from the API at full resolution);
// double-click to zoom out. The API sends min/max-preserving downsampled series, so a chart draws at most a few
// thousand points per series however long the run is.

export const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
  "#7f7f7f", "#bcbd22"];

const PAD = { left: 56, right: 12, top: 10, bottom: 30 };

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const scaled = raw / power;
  return (scaled >= 5 ? 10 : scaled >= 2 ? 5 : scaled >= 1 ? 2 : 1) * power;
}

function ticks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const step = niceStep(hi - lo, count);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

export function formatNumber(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v; // "NaN", "Infinity"
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
  if (Number.isInteger(v)) return String(v);
  return v.toPrecision(4).replace(/\.?0+$/, "");
}

export class LineChart {
  // options: {title, xLabel, onZoom(lo, hi) | onZoom(null) to reset}
  constructor(container, options = {}) {
    this.options = options;
    this.series = [];
    this.root = document.createElement("figure");
    this.root.className = "chart";
    this.caption = document.createElement("figcaption");
    this.caption.textContent = options.title || "";
    this.canvas = document.createElement("canvas");
    this.canvas.height = 220;
    this.legend = document.createElement("div");
    this.legend.className = "legend";
    this.root.append(this.caption, this.canvas, this.legend);
    container.appendChild(this.root);
    this.drag = null;
    this.canvas.addEventListener("mousedown", (e) => this.startDrag(e));
    window.addEventListener("mousemove", (this.onMove = (e) => this.moveDrag(e)));
    window.addEventListener("mouseup", (this.onUp = (e) => this.endDrag(e)));
    this.canvas.addEventListener("dblclick", () => this.options.onZoom && this.options.onZoom(null));
  }

  destroy() {
    window.removeEventListener("mousemove", this.onMove);
    window.removeEventListener("mouseup", this.onUp);
    this.root.remove();
  }

  // series: [{label, color, xs: number[], ys: (number|string)[]}]; note: a line under the chart (e.g. downsampled)
  setData(series, { xLabel, note } = {}) {
    this.series = series;
    if (xLabel) this.options.xLabel = xLabel;
    this.legend.innerHTML = "";
    for (const s of series) {
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${s.color}"></i>`;
      item.append(document.createTextNode(s.label));
      this.legend.appendChild(item);
    }
    if (note) {
      const n = document.createElement("span");
      n.className = "muted";
      n.textContent = note;
      this.legend.appendChild(n);
    }
    this.draw();
  }

  bounds() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const s of this.series) {
      for (let i = 0; i < s.xs.length; i++) {
        const y = s.ys[i];
        if (typeof y !== "number" || !Number.isFinite(y)) continue;
        if (s.xs[i] < x0) x0 = s.xs[i];
        if (s.xs[i] > x1) x1 = s.xs[i];
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
    if (x0 === Infinity) return null;
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const margin = (y1 - y0) * 0.05;
    return { x0, x1, y0: y0 - margin, y1: y1 + margin };
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(200, this.root.clientWidth || 480);
    const height = 220;
    this.canvas.width = width * ratio;
    this.canvas.height = height * ratio;
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const b = this.bounds();
    this.box = { left: PAD.left, right: width - PAD.right, top: PAD.top, bottom: height - PAD.bottom };
    this.scale = b;
    let drawn = 0;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#555";
    if (!b) {
      ctx.fillText("no points", width / 2 - 24, height / 2);
      this.canvas.dataset.points = "0";
      return;
    }
    const { left, right, top, bottom } = this.box;
    const sx = (x) => left + ((x - b.x0) / (b.x1 - b.x0)) * (right - left);
    const sy = (y) => bottom - ((y - b.y0) / (b.y1 - b.y0)) * (bottom - top);
    // grid and ticks
    ctx.strokeStyle = "#e6e6e6";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of ticks(b.y0, b.y1, 5)) {
      const y = Math.round(sy(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
      ctx.fillText(formatNumber(v), left - 4, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const v of ticks(b.x0, b.x1, Math.max(2, Math.floor((right - left) / 80)))) {
      const x = Math.round(sx(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
      ctx.fillText(formatNumber(v), x, bottom + 4);
    }
    ctx.fillText(this.options.xLabel || "step", (left + right) / 2, bottom + 16);
    ctx.strokeStyle = "#999";
    ctx.strokeRect(left + 0.5, top + 0.5, right - left, bottom - top);
    // the series, clipped to the plot; a NaN or infinity breaks the line
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top, right - left, bottom - top); ctx.clip();
    ctx.lineWidth = 1.5;
    for (const s of this.series) {
      ctx.strokeStyle = s.color;
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < s.xs.length; i++) {
        const y = s.ys[i];
        if (typeof y !== "number" || !Number.isFinite(y)) { pen = false; continue; }
        const px = sx(s.xs[i]), py = sy(y);
        if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        pen = true;
        drawn++;
      }
      if (s.xs.length === 1) { ctx.fillStyle = s.color; ctx.fillRect(sx(s.xs[0]) - 2, sy(s.ys[0]) - 2, 4, 4); }
      ctx.stroke();
    }
    ctx.restore();
    if (this.drag && this.drag.x1 !== undefined) {
      ctx.fillStyle = "rgba(31,119,180,0.15)";
      const a = Math.min(this.drag.x0, this.drag.x1), w = Math.abs(this.drag.x1 - this.drag.x0);
      ctx.fillRect(a, top, w, bottom - top);
    }
    this.canvas.dataset.points = String(drawn);
  }

  xAt(clientX) {
    const r = this.canvas.getBoundingClientRect();
    return Math.min(this.box.right, Math.max(this.box.left, clientX - r.left));
  }

  startDrag(e) {
    if (!this.scale || !this.options.onZoom) return;
    this.drag = { x0: this.xAt(e.clientX) };
    e.preventDefault();
  }

  moveDrag(e) {
    if (!this.drag) return;
    this.drag.x1 = this.xAt(e.clientX);
    this.draw();
  }

  endDrag() {
    if (!this.drag) return;
    const { x0, x1 } = this.drag;
    this.drag = null;
    this.draw();
    if (x1 === undefined || Math.abs(x1 - x0) < 4) return;
    const { left, right } = this.box;
    const toX = (px) => this.scale.x0 + ((px - left) / (right - left)) * (this.scale.x1 - this.scale.x0);
    this.options.onZoom(toX(Math.min(x0, x1)), toX(Math.max(x0, x1)));
  }
}
