/* The explorer page (`minibert explore`): type a sentence, click tokens to mask them, and see what the model
   computes. Every panel is one JSON endpoint of webapp.py (one MathematicalExplorer method). */
(function (root) {
  "use strict";
  const MB = root.MiniBert;
  const INFO = JSON.parse(document.getElementById("mb-data").textContent);
  const app = document.getElementById("mb-app");
  const state = {text: "", masked: [], topK: 5, step: 0, steps: [], renders: 0, shown: false};

  // --- layout
  const top = MB.html("header", {"class": "mb-top"}, null, app);
  MB.html("h1", {}, "Mini-BERT explorer", top);
  MB.html("p", {}, INFO.title + " · " + INFO.layers + " layers, hidden " + INFO.hidden + ", " + INFO.heads +
          " heads, vocabulary " + INFO.vocab + ", " + (INFO.parameters / 1e6).toFixed(2) + "M parameters (" +
          INFO.norm_position + "-LN) · reads up to " + INFO.max_tokens + " tokens", top);
  const nav = MB.html("nav", {"class": "mb-nav"}, null, app);
  [["sentence", "Sentence"], ["predictions", "Predictions"], ["attention", "Attention"], ["lens", "Logit lens"],
   ["forward", "Forward pass"], ["gradients", "Gradient flow"], ["representations", "Representations"]]
    .forEach(function (p) { MB.html("a", {href: "#" + p[0]}, p[1], nav); });
  const main = MB.html("main", {}, null, app);

  function section(id, title, lead) {
    const s = MB.html("section", {"class": "mb-section", id: id}, null, main);
    MB.html("h2", {}, title, s);
    if (lead) MB.html("p", {"class": "mb-lead"}, lead, s);
    return {section: s, body: MB.html("div", {"class": "mb-body"}, null, s)};
  }

  const sen = section("sentence", "Sentence",
    "Type a sentence and press Show. Click a token to mask it (it becomes [MASK], and the model guesses it); click " +
    "it again to unmask. Writing [MASK] in the sentence works too.");
  const form = MB.html("form", {"class": "mb-input"}, null, sen.section);
  const input = MB.html("input", {type: "text", id: "mb-sentence", "aria-label": "sentence",
                                  value: INFO.default_sentence}, null, form);
  const topk = MB.html("select", {id: "mb-topk", "aria-label": "predictions per mask"}, null, form);
  [3, 5, 10].forEach(function (k) {
    const o = MB.html("option", {value: k}, "top " + k, topk);
    if (k === 5) o.selected = true;
  });
  MB.html("button", {type: "submit", id: "mb-show"}, "Show", form);
  const busy = MB.html("span", {"class": "mb-busy", id: "mb-busy"}, "", form);
  const message = MB.html("div", {"class": "mb-message mb-error", id: "mb-message", role: "alert"}, "", sen.section);
  const tokenRow = MB.html("div", {"class": "mb-tokens", id: "mb-tokens"}, null, sen.section);

  const pred = section("predictions", "Masked-token predictions",
    "At each [MASK], the MLM head's most probable tokens: softmax of the logits over the whole vocabulary.");
  const att = section("attention", "Attention",
    "Every layer's self-attention on the sentence. Click a head in the grid to enlarge it; hover a token to see " +
    "where it looks.");
  const lens = section("lens", "Logit lens",
    "The MLM head applied to every layer's hidden state, not only the last: what the model would predict at each " +
    "position if it stopped after that layer (pre-LN models get the final LayerNorm first). Shade = probability " +
    "of the top token; hover a cell for the top-k.");
  const fwd = section("forward", "Forward pass, step by step",
    "Every intermediate the forward pass keeps for the backward pass, in the order it is computed, with its " +
    "shape and statistics.");
  const gra = section("gradients", "Gradient flow",
    "Gradient norm per group of weight matrices for the masked-LM loss of this sentence, repeated with different " +
    "random maskings.");
  const rep = section("representations", "Layer representations",
    "How similar the layers' token vectors are (linear CKA: 1 = the same up to rotation and scale) and over how " +
    "many directions each layer spreads them (effective rank).");

  // --- talking to the server
  function post(name) {
    return fetch("api/" + name, {method: "POST", headers: {"Content-Type": "application/json"},
                                 body: JSON.stringify({text: state.text, masked: state.masked, top_k: state.topK})})
      .then(function (r) {
        return r.json().catch(function () { return {error: "the server answered " + r.status + " without JSON"}; })
          .then(function (body) {
            if (!r.ok) throw new Error(body.error || ("the server answered " + r.status));
            return body;
          });
      });
  }

  function showError(text) {
    message.textContent = text;
  }

  function run() {
    const t0 = performance.now();
    busy.textContent = "computing…";
    document.body.dataset.state = "busy";
    return post("attention").then(function (attention) {
      return Promise.all(["predictions", "logit-lens", "forward-pass", "gradient-flow", "representations"].map(post))
        .then(function (rest) {
          const t1 = performance.now();
          showError("");
          render(attention, rest[0], rest[1], rest[2], rest[3], rest[4]);
          state.shown = true;
          const t2 = performance.now();
          busy.textContent = "answered in " + Math.round(t2 - t0) + " ms";
          busy.title = Math.round(t1 - t0) + " ms for the server's answers, " + Math.round(t2 - t1) + " ms to draw them";
          busy.dataset.fetchMs = Math.round(t1 - t0);
          busy.dataset.drawMs = Math.round(t2 - t1);
        });
    }).catch(function (e) {
      showError(e.message + (state.shown ? " (the panels below still show the last sentence that worked)" : ""));
      busy.textContent = "";
    }).then(function () {
      state.renders += 1;
      document.body.dataset.state = "ready";
      document.body.dataset.renders = state.renders;
    });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (input.value !== state.text) state.masked = [];
    state.text = input.value;
    state.topK = Number(topk.value);
    run();
  });
  topk.addEventListener("change", function () { state.topK = Number(topk.value); if (state.text) run(); });

  // --- drawing the answers
  function render(attention, predictions, lensData, forward, gradients, reps) {
    drawTokens(attention.tokens, predictions.original_tokens);
    drawPredictions(predictions);
    att.body.innerHTML = "";
    MB.attentionViewer(att.body, attention);
    drawLens(lensData);
    state.steps = forward.steps;
    state.step = Math.min(state.step, forward.steps.length - 1);
    drawForward();
    gra.body.innerHTML = "";
    const gf = MB.html("div", {"class": "mb-figures"}, null, gra.body);
    MB.barChart(gf, {title: "Gradient norm per group (loss " + MB.fmt(gradients.loss, 4) + ")", name: "gradient-norm",
                     labels: gradients.groups, logY: true, yLabel: "|dL/dW| (log)",
                     series: [{name: "gradient norm", values: gradients.grad_norm}]});
    MB.barChart(gf, {title: "Gradient / weight norm", name: "gradient-to-weight", labels: gradients.groups, logY: true,
                     yLabel: "|dL/dW| / |W| (log)", series: [{name: "grad / weight", values: gradients.grad_to_weight,
                                                               color: MB.PALETTE[2]}]});
    rep.body.innerHTML = "";
    const rf = MB.html("div", {"class": "mb-figures"}, null, rep.body);
    MB.matrixChart(rf, {title: "Linear CKA between layers", name: "layer-cka", matrix: reps.cka, labels: reps.labels});
    MB.barChart(rf, {title: "Effective rank per layer", name: "effective-rank", labels: reps.labels,
                     yLabel: "effective rank", series: [{name: "effective rank", values: reps.effective_rank,
                                                         color: MB.PALETTE[4]}]});
  }

  function drawTokens(tokens, original) {
    // The sentence as the model reads it; a token masked by a click keeps its own text, shaded.
    tokenRow.innerHTML = "";
    tokens.forEach(function (t, i) {
      const special = i === 0 || i === tokens.length - 1;
      const clicked = state.masked.indexOf(i) >= 0;
      const written = t === "[MASK]" && !clicked;
      const b = MB.html("button", {type: "button", "class": "mb-token" + (special ? " mb-special" : "") +
                                   (clicked || written ? " mb-masked" : ""), "data-index": i,
                                   title: special ? "added around every sentence" : written ? "[MASK] written in the text" :
                                          clicked ? "masked: the model reads [MASK] here; click to unmask" :
                                          "click to mask"},
                        clicked ? original[i] : t, tokenRow);
      if (special || written) return;
      b.addEventListener("click", function () {
        const k = state.masked.indexOf(i);
        if (k >= 0) state.masked.splice(k, 1); else state.masked.push(i);
        run();
      });
    });
  }

  function drawPredictions(p) {
    pred.body.innerHTML = "";
    if (!p.predictions.length) {
      MB.html("p", {"class": "mb-caption"}, "No [MASK] yet: click a token above to mask it.", pred.body);
      return;
    }
    const figs = MB.html("div", {"class": "mb-figures"}, null, pred.body);
    p.predictions.forEach(function (q) {
      const was = state.masked.indexOf(q.position) >= 0 ? " (the text has “" + p.original_tokens[q.position] + "”)" : "";
      MB.barChart(figs, {title: "[MASK] at position " + q.position + was, name: "predictions-" + q.position,
                         labels: q.top.map(function (x) { return x[0]; }), yLabel: "probability",
                         series: [{name: "probability", values: q.top.map(function (x) { return x[1]; })}],
                         width: Math.max(280, 60 + 46 * q.top.length), height: 220});
    });
  }

  function drawLens(l) {
    lens.body.innerHTML = "";
    const t = MB.html("table", {"class": "mb-table mb-lens"}, null, lens.body);
    const head = MB.html("tr", {}, null, MB.html("thead", {}, null, t));
    MB.html("th", {}, "after", head);
    l.tokens.forEach(function (tok, i) { MB.html("th", {title: "position " + i}, tok, head); });
    const body = MB.html("tbody", {}, null, t);
    l.top.forEach(function (row, k) {
      const tr = MB.html("tr", {}, null, body);
      MB.html("td", {}, l.layers[k], tr);
      row.forEach(function (cands, i) {
        const p = cands[0][1];
        const td = MB.html("td", {title: cands.map(function (c) { return c[0] + " " + (100 * c[1]).toFixed(1) + "%"; })
                                             .join("\n"), "class": l.tokens[i] === "[MASK]" ? "mb-lens-masked" : null},
                           cands[0][0], tr);
        td.style.background = MB.shade(0.75 * p);
        td.style.color = p > 0.6 ? "#ffffff" : "#1d2330";
      });
    });
  }

  const EXPLAIN = [
    [/^ln_emb\.0$/, "x̂ of the embedding LayerNorm: (E_token + E_pos + E_type − mean) / √(var + ε)"],
    [/\.ln\d\.0$|^ln_f\.0$/, "x̂ = (x − mean) / √(var + ε) per token: the normalised input of this LayerNorm"],
    [/(ln\d|ln_emb|ln_f)\.1$/, "1 / √(var + ε) per token, kept for the LayerNorm's backward pass"],
    [/(ln\d|ln_emb|ln_f)\.2$/, "γ, the LayerNorm's learned gain per feature"],
    [/attn\.x$/, "the attention's input"],
    [/attn\.Q$/, "queries Q = x W_Q + b_Q, split into heads (batch, heads, tokens, d = D / heads)"],
    [/attn\.K$/, "keys K = x W_K + b_K, split into heads"],
    [/attn\.V$/, "values V = x W_V + b_V, split into heads"],
    [/attn\.attention_weights$/, "A = softmax(Q Kᵀ / √d + mask): row i is how token i spreads its attention; rows sum to 1"],
    [/attn\.A_drop$/, "A after attention dropout (equal to A outside training)"],
    [/attn\.context$/, "A V with the heads joined again: each token's mix of the values"],
    [/ffn\.x$/, "the feed-forward network's input"],
    [/ffn\.h$/, "h = x W1 + b1: the FFN's pre-activation, one value per unit"],
    [/ffn\.a$/, "act(h): the FFN's activation (GELU or ReLU)"],
    [/ffn\.act\.\d$/, "kept by the activation for its backward pass"],
    [/^hidden_states\.0$/, "the residual stream entering layer 0 (the embeddings)"],
    [/^hidden_states\.(\d+)$/, "the residual stream after layer N − 1"],
    [/^attention_weights\.\d+$/, "the same attention weights, gathered per layer for the analysis tools"]
  ];

  function explain(name) {
    for (let k = 0; k < EXPLAIN.length; k++) {
      const m = name.match(EXPLAIN[k][0]);
      if (m) return EXPLAIN[k][1].replace("N − 1", m[1] !== undefined ? String(Number(m[1]) - 1) : "N − 1");
    }
    return "";
  }

  function drawForward() {
    fwd.body.innerHTML = "";
    const steps = state.steps;
    const bar = MB.html("div", {"class": "mb-stepper"}, null, fwd.body);
    const prev = MB.html("button", {type: "button", "class": "mb-button", id: "mb-step-prev"}, "◀ previous", bar);
    const next = MB.html("button", {type: "button", "class": "mb-button", id: "mb-step-next"}, "next ▶", bar);
    const where = MB.html("span", {id: "mb-step-where"}, "", bar);
    const card = MB.html("div", {"class": "mb-step-card", id: "mb-step-card"}, null, fwd.body);
    const scroller = MB.html("div", {"class": "mb-steps-scroll"}, null, fwd.body);
    const t = MB.table(scroller,
                       ["step", "name", "shape", "mean", "std", "min", "max"],
                       steps.map(function (s, i) {
                         return [String(i + 1), s.name, "(" + s.shape.join(", ") + ")", MB.fmt(s.mean, 4),
                                 MB.fmt(s.std, 4), MB.fmt(s.min, 4), MB.fmt(s.max, 4)];
                       }), "mb-steps");
    const rows = t.querySelectorAll("tbody tr");
    function go(i) {
      state.step = Math.max(0, Math.min(steps.length - 1, i));
      rows.forEach(function (r, k) { r.classList.toggle("mb-current", k === state.step); });
      const r = rows[state.step];       // keep the current row in view, scrolling the table only (not the page)
      if (r.offsetTop < scroller.scrollTop || r.offsetTop + r.offsetHeight > scroller.scrollTop + scroller.clientHeight) {
        scroller.scrollTop = r.offsetTop - scroller.clientHeight / 2;
      }
      const s = steps[state.step];
      where.textContent = "step " + (state.step + 1) + " of " + steps.length;
      card.innerHTML = "";
      MB.html("strong", {"class": "mb-mono"}, s.name + "  (" + s.shape.join(" × ") + ")", card);
      MB.html("div", {}, explain(s.name), card);
      MB.html("div", {"class": "mb-caption"}, "mean " + MB.fmt(s.mean, 4) + ", std " + MB.fmt(s.std, 4) + ", min " +
              MB.fmt(s.min, 4) + ", max " + MB.fmt(s.max, 4), card);
    }
    prev.addEventListener("click", function () { go(state.step - 1); });
    next.addEventListener("click", function () { go(state.step + 1); });
    rows.forEach(function (r, k) { r.addEventListener("click", function () { go(k); }); });
    go(state.step);
  }

  // the first answer, for the default sentence
  state.text = input.value;
  run();
})(window);
