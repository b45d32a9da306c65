/* The attention viewer, in the spirit of bertviz's model and head views; shared by the report and the explorer.

   MiniBert.attentionViewer(parent, {tokens: [T strings], heads: [{layer, head, entropy, weights: T x T}]})
   draws
   - the model view: a layer x head grid of small heatmaps (one <g class="mb-attn-cell"> per head; row i of a
     heatmap is how token i spreads its attention over the tokens, each head scaled to its own largest weight);
     clicking a cell enlarges that head;
   - the head view of the chosen head: the tokens twice, queries on the left and keys on the right, joined by lines
     whose opacity is the weight; hovering a token keeps only its lines and says in words where it looks;
   - the chosen head's heatmap with the tokens on both axes (hovering a cell gives its weight).
   Returns {select(layer, head), root}. */
(function (root) {
  "use strict";
  const MB = root.MiniBert;

  function thumbnail(weights, size) {
    // One head as a small image: a canvas of T x T blocks, turned into a data URL for an SVG <image>.
    const T = weights.length, k = Math.max(1, Math.ceil(size / T));
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = T * k;
    const ctx = canvas.getContext("2d");
    let max = 0;
    weights.forEach(function (row) { row.forEach(function (v) { if (v > max) max = v; }); });
    for (let i = 0; i < T; i++) {
      for (let j = 0; j < T; j++) {
        ctx.fillStyle = MB.shade(max > 0 ? weights[i][j] / max : 0);
        ctx.fillRect(j * k, i * k, k, k);
      }
    }
    return canvas.toDataURL("image/png");
  }

  function topTargets(row, tokens, n) {
    return row.map(function (w, j) { return [w, j]; }).sort(function (a, b) { return b[0] - a[0]; }).slice(0, n)
      .map(function (p) { return "“" + tokens[p[1]] + "” " + (100 * p[0]).toFixed(0) + "%"; }).join(", ");
  }

  MB.attentionViewer = function (parent, data) {
    const tokens = data.tokens, heads = data.heads;
    const L = 1 + Math.max.apply(null, heads.map(function (h) { return h.layer; }));
    const H = 1 + Math.max.apply(null, heads.map(function (h) { return h.head; }));
    const byKey = {};
    heads.forEach(function (h) { byKey[h.layer + "," + h.head] = h; });
    const wrap = MB.html("div", {"class": "mb-attn"}, null, parent);
    const heading = MB.html("h3", {"class": "mb-attn-title"}, "", wrap);
    const readout = MB.html("p", {"class": "mb-attn-readout"}, "", wrap);
    const figs = MB.html("div", {"class": "mb-attn-figures"}, null, wrap);

    // --- model view: the grid
    const S = 64, gap = 10, left = 58, top = 22;
    const grid = MB.figure(figs, {
      title: "Every head: " + L + " layers × " + H + " heads", name: "attention-grid",
      width: left + H * (S + gap), height: top + L * (S + gap) + 4,
      caption: "Row i of a square is where token i looks (its attention weights over the tokens); darker = more " +
               "weight, each head scaled to its own largest weight. Click a square to enlarge that head."});
    for (let h = 0; h < H; h++) {
      MB.text(grid.svg, left + h * (S + gap) + S / 2, 14, "head " + h, {"text-anchor": "middle", fill: "#5b6475"});
    }
    const cells = {};
    for (let l = 0; l < L; l++) {
      MB.text(grid.svg, left - 8, top + l * (S + gap) + S / 2 + 4, "layer " + l, {"text-anchor": "end", fill: "#5b6475"});
      for (let h = 0; h < H; h++) {
        const head = byKey[l + "," + h];
        if (!head) continue;
        const x = left + h * (S + gap), y = top + l * (S + gap);
        const g = MB.svg("g", {"class": "mb-attn-cell", "data-layer": l, "data-head": h}, grid.svg);
        MB.svg("image", {x: x, y: y, width: S, height: S, href: thumbnail(head.weights, S),
                         preserveAspectRatio: "none"}, g);
        const frame = MB.svg("rect", {x: x - 1, y: y - 1, width: S + 2, height: S + 2, fill: "none",
                                      stroke: "#c7ccd6", "stroke-width": 1}, g);
        MB.svg("title", {}, g).textContent = "layer " + l + ", head " + h + ": entropy " + MB.fmt(head.entropy) +
          " nats (uniform over " + tokens.length + " tokens: " + MB.fmt(Math.log(tokens.length)) + ")";
        g.addEventListener("click", function () { select(l, h); });
        cells[l + "," + h] = frame;
      }
    }

    // --- the chosen head: head view and heatmap, beside the grid
    let current = null, detail = [];

    function select(layer, head) {
      const h = byKey[layer + "," + head];
      if (!h) return;
      if (current) cells[current.layer + "," + current.head].setAttribute("stroke", "#c7ccd6");
      if (current) cells[current.layer + "," + current.head].setAttribute("stroke-width", 1);
      cells[layer + "," + head].setAttribute("stroke", "#d1495b");
      cells[layer + "," + head].setAttribute("stroke-width", 3);
      current = h;
      heading.textContent = "Layer " + layer + ", head " + head + " (entropy " + MB.fmt(h.entropy) + " nats)";
      readout.textContent = "Hover a token in the head view to see where it looks (left column) or who looks at " +
                            "it (right column).";
      detail.forEach(function (f) { f.box.remove(); });
      detail = [drawHeadView(h), drawHeatmap(h)];
    }

    function drawHeadView(h) {
      const T = tokens.length, rowH = 18, colW = 92, mid = 80;
      const W = 2 * colW + mid, Hh = 26 + T * rowH;
      const f = MB.figure(figs, {title: "Head view", name: "attention-head-l" + h.layer + "-h" + h.head, width: W,
                                 height: Hh, caption: "Line opacity = attention weight from the token on the left " +
                                                      "(query) to the token on the right (key)."});
      MB.text(f.svg, colW - 6, 14, "query", {"text-anchor": "end", fill: "#5b6475"});
      MB.text(f.svg, colW + mid + 6, 14, "key", {fill: "#5b6475"});
      const y = function (i) { return 26 + i * rowH + rowH / 2; };
      const lines = [];
      const g = MB.svg("g", {}, f.svg);
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) {
          const w = h.weights[i][j];
          if (w < 0.01) continue;
          const ln = MB.svg("line", {x1: colW, y1: y(i), x2: colW + mid, y2: y(j), stroke: "#2660a4",
                                     "stroke-width": 2, "stroke-opacity": w.toFixed(3)}, g);
          lines.push([i, j, ln]);
        }
      }
      function show(pred) {
        lines.forEach(function (p) { p[2].setAttribute("visibility", pred(p[0], p[1]) ? "visible" : "hidden"); });
      }
      const left = [], right = [];
      for (let i = 0; i < T; i++) {
        const a = MB.text(f.svg, colW - 6, y(i) + 4, tokens[i], {"text-anchor": "end", "font-size": 12,
                                                                 "class": "mb-attn-token", "data-side": "query",
                                                                 "data-index": i});
        const b = MB.text(f.svg, colW + mid + 6, y(i) + 4, tokens[i], {"font-size": 12, "class": "mb-attn-token",
                                                                      "data-side": "key", "data-index": i});
        left.push(a); right.push(b);
        a.addEventListener("mouseenter", function () {
          show(function (q) { return q === i; });
          a.setAttribute("font-weight", "bold");
          readout.textContent = "“" + tokens[i] + "” (position " + i + ") attends to: " +
                                topTargets(h.weights[i], tokens, 4) + ".";
          highlight(i, null);
        });
        b.addEventListener("mouseenter", function () {
          show(function (q, k) { return k === i; });
          b.setAttribute("font-weight", "bold");
          const col = h.weights.map(function (row) { return row[i]; });
          readout.textContent = "“" + tokens[i] + "” (position " + i + ") is looked at most by: " +
                                topTargets(col, tokens, 4) + ".";
          highlight(null, i);
        });
        [a, b].forEach(function (t) {
          t.addEventListener("mouseleave", function () {
            show(function () { return true; });
            t.removeAttribute("font-weight");
            highlight(null, null);
          });
        });
      }
      return f;
    }

    let highlight = function () {};

    function drawHeatmap(h) {
      const T = tokens.length, c = Math.max(5, Math.min(22, Math.floor(260 / T))), pad = 76;
      const W = pad + T * c + 10, Hh = pad + T * c + 10;
      const f = MB.figure(figs, {title: "Heatmap", name: "attention-heatmap-l" + h.layer + "-h" + h.head, width: W,
                                 height: Hh, caption: "Row = query token, column = key token; colour = weight " +
                                                      "(white 0, dark blue = this head's largest)."});
      let max = 0;
      h.weights.forEach(function (row) { row.forEach(function (v) { if (v > max) max = v; }); });
      const fs = Math.min(11, c);
      for (let i = 0; i < T; i++) {
        MB.text(f.svg, pad - 4, pad + i * c + c / 2 + fs / 3, tokens[i], {"text-anchor": "end", "font-size": fs});
        const x = pad + i * c + c / 2 + fs / 3, yy = pad - 4;
        MB.text(f.svg, x, yy, tokens[i], {"font-size": fs, transform: "rotate(-60 " + x + " " + yy + ")"});
      }
      const g = MB.svg("g", {}, f.svg);
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) {
          MB.svg("rect", {x: pad + j * c, y: pad + i * c, width: c, height: c, "data-i": i, "data-j": j,
                          fill: MB.shade(max > 0 ? h.weights[i][j] / max : 0)}, g);
        }
      }
      const rowMark = MB.svg("rect", {x: pad, y: pad, width: T * c, height: c, fill: "none", stroke: "#d1495b",
                                      "stroke-width": 2, visibility: "hidden", "data-export": "omit"}, f.svg);
      const colMark = MB.svg("rect", {x: pad, y: pad, width: c, height: T * c, fill: "none", stroke: "#d1495b",
                                      "stroke-width": 2, visibility: "hidden", "data-export": "omit"}, f.svg);
      highlight = function (i, j) {
        rowMark.setAttribute("visibility", i === null ? "hidden" : "visible");
        if (i !== null) rowMark.setAttribute("y", pad + i * c);
        colMark.setAttribute("visibility", j === null ? "hidden" : "visible");
        if (j !== null) colMark.setAttribute("x", pad + j * c);
      };
      g.addEventListener("mouseover", function (ev) {
        const i = ev.target.getAttribute("data-i"), j = ev.target.getAttribute("data-j");
        if (i === null) return;
        readout.textContent = "“" + tokens[i] + "” → “" + tokens[j] + "”: weight " +
                              h.weights[i][j].toFixed(3) + ".";
        highlight(Number(i), Number(j));
      });
      g.addEventListener("mouseleave", function () { highlight(null, null); });
      return f;
    }

    select(0, 0);
    return {select: select, root: wrap};
  };
})(window);
