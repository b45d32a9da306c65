/* Mini-BERT figures: small SVG charts drawn with plain DOM calls, and their download as SVG or PNG.
   Shared by the report (`minibert report`) and the explorer (`minibert explore`).

   Every figure is an <svg class="mb-plot"> inside a <figure class="mb-figure"> with PNG and SVG buttons. Colours,
   fonts and sizes are SVG attributes (not page CSS), so the serialised SVG, and the PNG rasterised from it through
   a canvas, look like the page. Elements marked data-export="omit" (hover marks) are left out of downloads. */
(function (root) {
  "use strict";
  const MB = root.MiniBert = root.MiniBert || {};
  const NS = "http://www.w3.org/2000/svg";
  const FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif";
  MB.FONT = FONT;
  MB.PALETTE = ["#2660a4", "#d1495b", "#3f8f4f", "#e09f3e", "#6b4c9a", "#5b6475"];

  /* An SVG element with attributes, appended to parent when given. */
  MB.svg = function (tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const k in attrs || {}) {
      if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, attrs[k]);
    }
    if (parent) parent.appendChild(node);
    return node;
  };

  /* An HTML element with attributes and text, appended to parent when given. */
  MB.html = function (tag, attrs, text, parent) {
    const node = document.createElement(tag);
    for (const k in attrs || {}) {
      if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, attrs[k]);
    }
    if (text !== undefined && text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  };

  MB.text = function (parent, x, y, str, attrs) {
    const t = MB.svg("text", Object.assign({x: x, y: y, "font-family": FONT, "font-size": 11, fill: "#1d2330"},
                                           attrs || {}), parent);
    t.textContent = str;
    return t;
  };

  /* A number for a label: 3 significant digits, exponent form for very small or large values. */
  MB.fmt = function (x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    digits = digits || 3;
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(digits - 1);
    return Number(x.toPrecision(digits)).toString();
  };

  /* t in [0, 1] -> a colour from white to dark blue (the weight of an attention cell). */
  MB.shade = function (t) {
    t = Math.max(0, Math.min(1, t));
    const r = Math.round(255 + (8 - 255) * t), g = Math.round(255 + (48 - 255) * t), b = Math.round(255 + (107 - 255) * t);
    return "rgb(" + r + "," + g + "," + b + ")";
  };

  /* "Nice" tick values covering [lo, hi]. */
  MB.ticks = function (lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / Math.max(1, count || 5);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).find(function (s) { return s >= raw; });
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  };

  MB.logTicks = function (lo, hi) {
    // Powers of ten; over less than two decades also 2x and 5x them, so a log axis always has a few labels.
    const decades = Math.log10(hi / lo), out = [];
    const mults = decades < 2 ? [1, 2, 5] : [1];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      mults.forEach(function (m) {
        const v = m * Math.pow(10, e);
        if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
      });
    }
    if (out.length < 2) { out.length = 0; out.push(lo, hi); }
    return out;
  };

  /* A figure box: title, the SVG, PNG/SVG buttons and a caption. Returns {box, svg}. */
  MB.figure = function (parent, opts) {
    const box = MB.html("figure", {"class": "mb-figure", "data-name": opts.name}, null, parent);
    if (opts.title) MB.html("figcaption", {}, opts.title, box);
    const svg = MB.svg("svg", {"class": "mb-plot", width: opts.width, height: opts.height, xmlns: NS,
                               viewBox: "0 0 " + opts.width + " " + opts.height}, box);
    MB.svg("rect", {x: 0, y: 0, width: opts.width, height: opts.height, fill: "#ffffff"}, svg);
    const tools = MB.html("div", {"class": "mb-figure-tools"}, null, box);
    ["png", "svg"].forEach(function (format) {
      const b = MB.html("button", {type: "button", "data-format": format, title: "save this figure as " +
                                   format.toUpperCase()}, format.toUpperCase(), tools);
      b.addEventListener("click", function () { MB.saveFigure(box.querySelector("svg.mb-plot"), box.dataset.name, format); });
    });
    if (opts.caption) MB.html("p", {"class": "mb-caption"}, opts.caption, box);
    return {box: box, svg: svg};
  };

  /* Resize a figure's SVG (its content was drawn for a size known only afterwards). */
  MB.resize = function (svg, width, height) {
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    const bg = svg.querySelector("rect");
    if (bg) { bg.setAttribute("width", width); bg.setAttribute("height", height); }
  };

  /* The SVG as a standalone document (hover marks left out). */
  MB.svgText = function (svg) {
    const copy = svg.cloneNode(true);
    copy.setAttribute("xmlns", NS);
    copy.querySelectorAll("[data-export=omit]").forEach(function (n) { n.remove(); });
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(copy);
  };

  function offer(blob, filename) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 5000);
  }

  /* Download `svg` as name.svg, or as name.png rasterised at twice its size through a canvas. */
  MB.saveFigure = function (svg, name, format) {
    const text = MB.svgText(svg);
    if (format === "svg") {
      offer(new Blob([text], {type: "image/svg+xml"}), name + ".svg");
      return;
    }
    const w = Number(svg.getAttribute("width")), h = Number(svg.getAttribute("height")), scale = 2;
    const img = new Image();
    img.onload = function () {
      const canvas = document.createElement("canvas");
      canvas.width = Math.round(w * scale);
      canvas.height = Math.round(h * scale);
      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      canvas.toBlob(function (blob) { offer(blob, name + ".png"); }, "image/png");
    };
    img.onerror = function () { console.warn("could not rasterise figure " + name); };
    img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(text);
  };

  /* Axes with ticks; returns {x(v), y(v)} mapping data to pixels. */
  function axes(svg, box, xr, yr, opts) {
    const g = MB.svg("g", {}, svg);
    const logY = !!opts.logY;
    const ly = function (v) { return Math.log10(v); };
    const y0 = logY ? ly(yr[0]) : yr[0], y1 = logY ? ly(yr[1]) : yr[1];
    const X = function (v) { return box.x + (v - xr[0]) / ((xr[1] - xr[0]) || 1) * box.w; };
    const Y = function (v) { const t = logY ? ly(v) : v; return box.y + box.h - (t - y0) / ((y1 - y0) || 1) * box.h; };
    MB.svg("rect", {x: box.x, y: box.y, width: box.w, height: box.h, fill: "none", stroke: "#c7ccd6"}, g);
    if (!opts.noXTicks) {
      MB.ticks(xr[0], xr[1], 5).forEach(function (v) {
        MB.svg("line", {x1: X(v), x2: X(v), y1: box.y + box.h, y2: box.y + box.h + 4, stroke: "#8a91a0"}, g);
        MB.text(g, X(v), box.y + box.h + 15, MB.fmt(v, 4), {"text-anchor": "middle", fill: "#5b6475"});
      });
    }
    (logY ? MB.logTicks(yr[0], yr[1]) : MB.ticks(yr[0], yr[1], 4)).forEach(function (v) {
      MB.svg("line", {x1: box.x, x2: box.x + box.w, y1: Y(v), y2: Y(v), stroke: "#eceef2"}, g);
      MB.text(g, box.x - 5, Y(v) + 4, MB.fmt(v), {"text-anchor": "end", fill: "#5b6475"});
    });
    if (opts.xLabel) MB.text(g, box.x + box.w / 2, box.y + box.h + 30, opts.xLabel, {"text-anchor": "middle"});
    if (opts.yLabel) {
      MB.text(g, 12, box.y + box.h / 2, opts.yLabel, {"text-anchor": "middle",
                                                      transform: "rotate(-90 12 " + (box.y + box.h / 2) + ")"});
    }
    return {x: X, y: Y};
  }

  function extent(values, logY) {
    let lo = Infinity, hi = -Infinity;
    values.forEach(function (v) {
      if (v === null || !Number.isFinite(v) || (logY && v <= 0)) return;
      lo = Math.min(lo, v); hi = Math.max(hi, v);
    });
    if (lo === Infinity) return [0, 1];
    if (lo === hi) { return logY ? [lo / 2, hi * 2] : [lo - (Math.abs(lo) || 1) * 0.1, hi + (Math.abs(hi) || 1) * 0.1]; }
    if (logY) return [lo / 1.2, hi * 1.2];
    const pad = (hi - lo) * 0.05;
    return [lo - pad, hi + pad];
  }

  /* A line chart. opts: title, name, caption, series [{name, x, y, color}], xLabel, yLabel, logY,
     width, height. Hovering shows the values at the nearest x. */
  MB.lineChart = function (parent, opts) {
    // A legend (more than one series) goes in rows below the axis label, never over the lines.
    const legendRows = opts.series.length > 1 ? Math.ceil(opts.series.length / 3) : 0;
    const W = opts.width || 330, H = (opts.height || 230) + 16 * legendRows;
    const f = MB.figure(parent, {title: opts.title, name: opts.name, caption: opts.caption, width: W, height: H});
    const box = {x: 58, y: 12, w: W - 72, h: H - 58 - 16 * legendRows};
    const xs = [], ys = [];
    opts.series.forEach(function (s) { xs.push.apply(xs, s.x); ys.push.apply(ys, s.y); });
    const xr = extent(xs, false), yr = extent(ys, opts.logY);
    if (xs.length) { xr[0] = Math.min.apply(null, xs); xr[1] = Math.max.apply(null, xs); }
    const ax = axes(f.svg, box, xr, yr, opts);
    opts.series.forEach(function (s, k) {
      const color = s.color || MB.PALETTE[k % MB.PALETTE.length];
      let d = "", pen = false;
      for (let i = 0; i < s.x.length; i++) {
        const v = s.y[i];
        if (v === null || !Number.isFinite(v) || (opts.logY && v <= 0)) { pen = false; continue; }
        d += (pen ? "L" : "M") + ax.x(s.x[i]).toFixed(1) + "," + ax.y(v).toFixed(1);
        pen = true;
      }
      MB.svg("path", {d: d, fill: "none", stroke: color, "stroke-width": s.width || 1.5, "data-series": s.name}, f.svg);
      if (s.x.length === 1 && s.y[0] !== null) MB.svg("circle", {cx: ax.x(s.x[0]), cy: ax.y(s.y[0]), r: 3, fill: color}, f.svg);
      if (legendRows) {
        const lx = box.x - 40 + (k % 3) * ((W - box.x + 40) / 3), ly = box.y + box.h + 44 + 16 * Math.floor(k / 3);
        MB.svg("rect", {x: lx, y: ly - 4, width: 12, height: 3, fill: color}, f.svg);
        MB.text(f.svg, lx + 16, ly, s.name, {fill: "#1d2330"});
      }
    });
    // hover: a vertical mark and the values at the nearest logged x
    const mark = MB.svg("g", {"data-export": "omit", visibility: "hidden"}, f.svg);
    const vline = MB.svg("line", {y1: box.y, y2: box.y + box.h, stroke: "#8a91a0", "stroke-dasharray": "3,3"}, mark);
    const label = MB.text(mark, 0, box.y + 12, "", {"font-size": 11, fill: "#1d2330"});
    const hit = MB.svg("rect", {x: box.x, y: box.y, width: box.w, height: box.h, fill: "transparent"}, f.svg);
    hit.addEventListener("mousemove", function (ev) {
      const r = f.svg.getBoundingClientRect();
      const px = (ev.clientX - r.left) * (W / r.width);
      const xv = xr[0] + (px - box.x) / box.w * (xr[1] - xr[0]);
      const parts = [];
      let xNear = null;
      opts.series.forEach(function (s) {
        let best = -1, bd = Infinity;
        for (let i = 0; i < s.x.length; i++) { const dd = Math.abs(s.x[i] - xv); if (dd < bd) { bd = dd; best = i; } }
        if (best >= 0) { xNear = s.x[best]; parts.push(s.name + " " + MB.fmt(s.y[best], 4)); }
      });
      if (xNear === null) return;
      vline.setAttribute("x1", ax.x(xNear)); vline.setAttribute("x2", ax.x(xNear));
      label.textContent = (opts.xName || "x") + " " + xNear + ": " + parts.join(", ");
      const right = ax.x(xNear) > box.x + box.w / 2;
      label.setAttribute("x", ax.x(xNear) + (right ? -6 : 6));
      label.setAttribute("text-anchor", right ? "end" : "start");
      mark.setAttribute("visibility", "visible");
    });
    hit.addEventListener("mouseleave", function () { mark.setAttribute("visibility", "hidden"); });
    return f;
  };

  /* A bar chart of groups. opts: title, name, caption, labels, series [{name, values, color}], logY, yLabel,
     refLines [{value, label}] (horizontal lines, e.g. a baseline). */
  MB.barChart = function (parent, opts) {
    const n = opts.labels.length, k = opts.series.length;
    const W = opts.width || Math.max(300, 80 + n * (18 * k + 22)), H = opts.height || 250;
    const f = MB.figure(parent, {title: opts.title, name: opts.name, caption: opts.caption, width: W, height: H});
    const box = {x: 58, y: 12, w: W - 70, h: H - 78};
    const all = [];
    opts.series.forEach(function (s) { all.push.apply(all, s.values); });
    (opts.refLines || []).forEach(function (r) { all.push(r.value); });
    let yr = extent(all, opts.logY);
    if (!opts.logY) yr = [opts.yMin !== undefined ? opts.yMin : Math.min(0, yr[0]), yr[1]];
    const ax = axes(f.svg, box, [0, n], yr, Object.assign({}, opts, {noXTicks: true}));
    const slot = box.w / n, bw = Math.min(28, (slot - 10) / k);
    opts.labels.forEach(function (lab, i) {
      const cx = box.x + slot * (i + 0.5);
      MB.text(f.svg, cx, box.y + box.h + 14, lab, {"text-anchor": "end", transform: "rotate(-35 " + cx + " " +
                                                   (box.y + box.h + 14) + ")", fill: "#1d2330"});
      opts.series.forEach(function (s, j) {
        const v = s.values[i];
        if (v === null || !Number.isFinite(v) || (opts.logY && v <= 0)) return;
        const x = cx - (k * bw) / 2 + j * bw, base = opts.logY ? box.y + box.h : ax.y(Math.max(yr[0], 0));
        const top = ax.y(v);
        const bar = MB.svg("rect", {x: x, y: Math.min(top, base), width: bw - 2, height: Math.abs(base - top),
                                    fill: s.color || MB.PALETTE[j % MB.PALETTE.length]}, f.svg);
        MB.svg("title", {}, bar).textContent = lab + ", " + s.name + ": " + MB.fmt(v, 4);
      });
    });
    (opts.refLines || []).forEach(function (r) {
      MB.svg("line", {x1: box.x, x2: box.x + box.w, y1: ax.y(r.value), y2: ax.y(r.value), stroke: r.color || "#5b6475",
                      "stroke-dasharray": "5,3"}, f.svg);
      MB.text(f.svg, box.x + box.w - 4, ax.y(r.value) - 4, r.label, {"text-anchor": "end", fill: r.color || "#5b6475",
                                                                   stroke: "#ffffff", "stroke-width": 3,
                                                                   "paint-order": "stroke"});
    });
    if (k > 1) {
      opts.series.forEach(function (s, j) {
        const lx = box.x + 8 + j * 150;
        MB.svg("rect", {x: lx, y: box.y + 6, width: 10, height: 10, fill: s.color || MB.PALETTE[j % MB.PALETTE.length]}, f.svg);
        MB.text(f.svg, lx + 14, box.y + 15, s.name);
      });
    }
    return f;
  };

  /* A matrix as coloured cells with values (e.g. CKA between layers). */
  MB.matrixChart = function (parent, opts) {
    const m = opts.matrix, n = m.length, c = opts.cell || 44, pad = 90, head = 70;
    const W = pad + n * c + 16, H = head + n * c + 12;
    const f = MB.figure(parent, {title: opts.title, name: opts.name, caption: opts.caption, width: W, height: H});
    const lo = opts.vmin !== undefined ? opts.vmin : 0, hi = opts.vmax !== undefined ? opts.vmax : 1;
    for (let i = 0; i < n; i++) {
      MB.text(f.svg, pad - 6, head + i * c + c / 2 + 4, opts.labels[i], {"text-anchor": "end"});
      const x = pad + i * c + c / 2, y = head - 6;
      MB.text(f.svg, x, y, opts.labels[i], {transform: "rotate(-40 " + x + " " + y + ")"});
      for (let j = 0; j < n; j++) {
        const v = m[i][j], t = v === null ? 0 : (v - lo) / ((hi - lo) || 1);
        MB.svg("rect", {x: pad + j * c, y: head + i * c, width: c - 1, height: c - 1, fill: MB.shade(t)}, f.svg);
        MB.text(f.svg, pad + j * c + c / 2, head + i * c + c / 2 + 4, MB.fmt(v, 2),
                {"text-anchor": "middle", fill: t > 0.55 ? "#ffffff" : "#1d2330"});
      }
    }
    return f;
  };

  /* An HTML table from a header row and body rows (cells: text, or {text, cls}). */
  MB.table = function (parent, header, rows, cls) {
    const t = MB.html("table", {"class": "mb-table " + (cls || "")}, null, parent);
    const tr = MB.html("tr", {}, null, MB.html("thead", {}, null, t));
    header.forEach(function (h) { MB.html("th", {}, h, tr); });
    const body = MB.html("tbody", {}, null, t);
    rows.forEach(function (row) {
      const r = MB.html("tr", {}, null, body);
      row.forEach(function (cell) {
        const obj = (cell !== null && typeof cell === "object") ? cell : {text: cell};
        MB.html("td", obj.cls ? {"class": obj.cls} : {}, obj.text, r);
      });
    });
    return t;
  };
})(window);
