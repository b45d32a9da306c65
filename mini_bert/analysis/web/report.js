/* The report page (`minibert report`): draws the data that html_report.py put in <script id="mb-data">. */
(function (root) {
  "use strict";
  const MB = root.MiniBert;
  const D = JSON.parse(document.getElementById("mb-data").textContent);
  const app = document.getElementById("mb-app");
  const pct = function (x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%"; };
  const acc = function (x) { return x === null || x === undefined ? "–" : x.toFixed(4); };
  const RUN = D.commands.run, EVAL = D.commands.eval_dir;

  function section(id, title, lead) {
    const s = MB.html("section", {"class": "mb-section", id: id}, null, main);
    MB.html("h2", {}, title, s);
    if (lead) MB.html("p", {"class": "mb-lead"}, lead, s);
    return s;
  }

  function missing(parent, what, how) {
    const box = MB.html("div", {"class": "mb-missing"}, null, parent);
    MB.html("strong", {}, what + " ", box);
    how.forEach(function (part) {
      if (part.code) MB.html("code", {}, part.code, box); else box.appendChild(document.createTextNode(part));
    });
    return box;
  }

  // --- header and navigation
  const top = MB.html("header", {"class": "mb-top"}, null, app);
  MB.html("h1", {}, D.title, top);
  const m = D.model;
  MB.html("p", {}, m.layers + " layers, hidden " + m.hidden + ", " + m.heads + " heads, FFN " + m.intermediate +
          ", vocabulary " + m.vocab + ", " + (m.parameters / 1e6).toFixed(2) + "M parameters (" + m.norm_position +
          "-LN, " + m.activation + ") · checkpoint " + D.checkpoint + (D.step !== undefined && D.step !== null ?
          " (step " + D.step + ")" : "") + " · generated " + D.generated + " by mini-bert " + D.version, top);
  const tr = D.training;
  MB.html("p", {}, "Trained on " + tr.corpus + ": " + tr.max_steps + " steps of " + tr.batch_size + " rows × " +
          tr.seq_len + " tokens, peak learning rate " + tr.lr + " (" + tr.schedule + " schedule)", top);
  const nav = MB.html("nav", {"class": "mb-nav"}, null, app);
  [["curves", "Training curves"], ["issues", "Training issues"], ["attention", "Attention"],
   ["gradients", "Gradient flow"], ["pos", "POS probe"], ["sst2", "SST-2"]].forEach(function (p) {
    MB.html("a", {href: "#" + p[0]}, p[1], nav);
  });
  const main = MB.html("main", {}, null, app);

  // --- what is missing, at a glance
  const absent = [];
  if (!Object.keys(D.curves).length) absent.push("training curves");
  if (!D.pos.length) absent.push("a POS-probe result");
  if (!D.sst2.length) absent.push("an SST-2 result");
  if (absent.length) {
    const box = MB.html("div", {"class": "mb-missing", id: "mb-missing-summary"}, null, main);
    box.textContent = "This report has no " + absent.join(", no ") + ". Each section below says how to produce it.";
  }

  // --- training curves
  const curves = section("curves", "Training curves",
    "What the trainer logged in metrics.jsonl: the training loss every few steps, and every eval_every steps the " +
    "masked accuracy and perplexity on held-out text the model never trains on. Hover a chart to read values.");
  if (!Object.keys(D.curves).length) {
    missing(curves, "No training log.", D.metrics.path ? ["Looked for ", {code: D.metrics.path},
      "; a run folder written by ", {code: "minibert train"}, " has one."] :
      ["This checkpoint is not inside a run folder, so there is no metrics.jsonl to read. Point ",
       {code: "--checkpoint"}, " at the run folder that ", {code: "minibert train"}, " wrote."]);
  } else {
    const c = D.curves;
    const last = c.train_loss ? c.train_loss.values[c.train_loss.values.length - 1] : null;
    let facts = D.metrics.records + " logged steps";
    if (last !== null) facts += "; last training loss " + MB.fmt(last, 4) + " at step " +
                                c.train_loss.steps[c.train_loss.steps.length - 1];
    if (c.valid_masked_acc) {
      const v = c.valid_masked_acc.values, best = Math.max.apply(null, v.filter(function (x) { return x !== null; }));
      facts += "; best held-out masked accuracy " + pct(best) + " (at step " +
               c.valid_masked_acc.steps[v.indexOf(best)] + ")";
    }
    if (c.valid_perplexity) facts += ", last held-out perplexity " +
                                     MB.fmt(c.valid_perplexity.values[c.valid_perplexity.values.length - 1], 4);
    MB.html("p", {}, facts + ".", curves);
    if (D.metrics.dropped_lines) MB.html("p", {"class": "mb-missing"}, D.metrics.dropped_lines +
      " unreadable line(s) of metrics.jsonl were skipped (a torn write, as a crash leaves).", curves);
    const figs = MB.html("div", {"class": "mb-figures"}, null, curves);
    Object.keys(c).forEach(function (key, k) {
      MB.lineChart(figs, {title: c[key].title, name: "curve-" + key, xLabel: "step", xName: "step",
                          yLabel: c[key].y_label, logY: c[key].log,
                          series: [{name: c[key].title.toLowerCase(), x: c[key].steps, y: c[key].values,
                                    color: MB.PALETTE[k % MB.PALETTE.length]}]});
    });
  }

  // --- training issues
  const iss = section("issues", "Training issues",
    "The detector (mini_bert.analysis.issues) reads the same log with small named rules: loss spikes, divergence, " +
    "exploding or vanishing gradients, dead units, a learning rate too high or too low, plateaus, collapsed " +
    "attention. Each finding says what is happening and what to change.");
  if (!D.metrics.records) {
    missing(iss, "Nothing to check:", ["without a training log the rules have nothing to read."]);
  } else if (!D.issues.length) {
    MB.html("p", {"class": "mb-none"}, "No issue found in " + D.metrics.records + " logged steps.", iss);
  } else {
    const ul = MB.html("ul", {"class": "mb-issues"}, null, iss);
    D.issues.forEach(function (i) {
      const li = MB.html("li", {"class": "mb-" + i.severity}, null, ul);
      MB.html("span", {"class": "mb-kind"}, "[" + i.severity + "] " + i.kind.replace(/_/g, " "), li);
      if (i.step !== null) li.appendChild(document.createTextNode(" (from step " + i.step + ")"));
      MB.html("div", {}, i.explanation, li);
      MB.html("div", {}, "Try: " + i.suggestion, li);
    });
  }
  if (D.metrics.records && !D.metrics.monitored) {
    MB.html("p", {"class": "mb-caption"}, "This run logged only the loss, learning rate and gradient norm, so the " +
      "rules on per-layer gradients, update ratios, dead units and attention entropy had nothing to read; train " +
      "with training.analysis_every=100 to log them.", iss);
  }

  // --- attention
  const att = section("attention", "Attention",
    "Self-attention of the checkpoint on one sentence (change it with --sentence). Each head turns every token " +
    "into a mix of the tokens it attends to; [CLS] and [SEP] are the markers added around the sentence.");
  MB.html("p", {}, "Sentence: “" + D.sentence + "” (" + D.attention.tokens.length + " tokens)", att);
  MB.attentionViewer(att, D.attention);

  // --- gradient flow
  const gr = section("gradients", "Gradient flow",
    "Gradient norm of each group's weight matrices for the masked-LM loss of the sentence above, repeated " +
    D.gradients.copies + " times with different random maskings (loss " + MB.fmt(D.gradients.loss, 4) + "). " +
    "Layers are counted from 0 at the bottom; a group far below the others is not learning (vanishing), one far " +
    "above dominates each update (exploding).");
  const gf = MB.html("div", {"class": "mb-figures"}, null, gr);
  MB.barChart(gf, {title: "Gradient norm per group", name: "gradient-norm", labels: D.gradients.groups, logY: true,
                   yLabel: "|dL/dW| (log)", series: [{name: "gradient norm", values: D.gradients.grad_norm}]});
  MB.barChart(gf, {title: "Gradient / weight norm", name: "gradient-to-weight", labels: D.gradients.groups, logY: true,
                   yLabel: "|dL/dW| / |W| (log)", series: [{name: "grad / weight", values: D.gradients.grad_to_weight,
                                                             color: MB.PALETTE[2]}]});
  const flags = [];
  if (D.gradients.vanishing.length) flags.push("vanishing: " + D.gradients.vanishing.join(", "));
  if (D.gradients.exploding.length) flags.push("exploding: " + D.gradients.exploding.join(", "));
  MB.html("p", {}, flags.length ? "Flagged " + flags.join("; ") + " (below 1/1000 or above 1000 × the median group)."
                                : "No group is below 1/1000 or above 1000 × the median group.", gr);

  // --- evaluation results
  function howTo(parent, what, command) {
    missing(parent, "No " + what + " result found.", [
      "Looked for the JSON that the command writes in " + (D.searched.length ? D.searched.join(" and ") :
      "the folders beside the run") + ". Produce one with ", {code: command},
      ", then run ", {code: "minibert report --checkpoint " + RUN}, " again (or pass the file with ",
      {code: "--results FILE"}, ")."]);
  }

  const pos = section("pos", "POS probe",
    "A linear probe per layer predicts each word's part of speech (UD English-EWT) from the frozen hidden " +
    "states. Baselines: the majority tag, the same probe on a randomly initialised model (what the architecture " +
    "gives without training), and a control task with random tags per word type (selectivity = probe − control).");
  if (!D.pos.length) howTo(pos, "POS-probe", "minibert probe-pos --checkpoint " + RUN + " --output " + EVAL + "/pos.json");
  D.pos.forEach(function (r, n) {
    MB.html("h3", {}, "UD EWT " + String(r.tagset).toUpperCase() + ", " + r.num_tags + " tags: " +
            r.train.sentences + " training sentences (" + r.train.words + " words), dev " + r.dev.sentences +
            " sentences (" + r.dev.words + " words)", pos);
    MB.html("p", {"class": "mb-caption"}, "From " + r.source + ". Majority-tag baseline " + acc(r.majority_baseline) +
            (r.best ? "; best: layer " + r.best.layer + " (" + r.best.pooling + " pooling), " + acc(r.best.accuracy) : "") +
            ".", pos);
    const cols = [["trained", "probe"], ["random_init", "random-init"], ["control_task", "control"],
                  ["selectivity", "selectivity"]].filter(function (c) { return r.layers[0][c[0]] !== undefined; });
    const header = ["layer"];
    cols.forEach(function (c) { r.poolings.forEach(function (p) { header.push(c[1] + " (" + p + ")"); }); });
    const rows = r.layers.map(function (row) {
      const cells = [row.name || ("layer " + row.layer)];
      cols.forEach(function (c) {
        r.poolings.forEach(function (p) {
          const isBest = c[0] === "trained" && r.best && r.best.layer === row.layer && r.best.pooling === p;
          cells.push({text: acc(row[c[0]][p]), cls: isBest ? "mb-best" : null});
        });
      });
      return cells;
    });
    MB.table(pos, header, rows, "mb-pos");
    const pool = r.best ? r.best.pooling : r.poolings[0];
    const series = [{name: "probe", x: r.layers.map(function (l) { return l.layer; }),
                     y: r.layers.map(function (l) { return l.trained[pool]; })}];
    if (r.layers[0].random_init) series.push({name: "random init", x: series[0].x,
                                              y: r.layers.map(function (l) { return l.random_init[pool]; })});
    if (r.layers[0].control_task) series.push({name: "control task", x: series[0].x,
                                               y: r.layers.map(function (l) { return l.control_task[pool]; })});
    series.push({name: "majority tag", x: series[0].x, y: series[0].x.map(function () { return r.majority_baseline; }),
                 color: "#5b6475", width: 1});
    MB.lineChart(MB.html("div", {"class": "mb-figures"}, null, pos),
                 {title: "POS accuracy by layer (" + pool + " pooling)", name: "pos-probe-" + n, xLabel: "layer (0 = embeddings)",
                  xName: "layer", yLabel: "dev accuracy", series: series, width: 420, height: 260});
  });

  const sst = section("sst2", "SST-2 sentiment",
    "The checkpoint fine-tuned end to end on SST-2 (positive / negative movie-review sentences), beside the same " +
    "fine-tuning from random initialisation, a bag-of-words logistic regression, and always guessing the " +
    "majority class. Dev accuracy, mean ± std over seeds.");
  if (!D.sst2.length) howTo(sst, "SST-2", "minibert finetune-sst2 --checkpoint " + RUN + " --output " + EVAL + "/sst2.json");
  D.sst2.forEach(function (r, n) {
    MB.html("h3", {}, "Trained on " + r.train_size + " " + (r.train_set === "glue" ? "GLUE phrases" : "sentences") +
            ", dev " + r.dev_size + " sentences, " + r.epochs + " epoch(s), " + (r.seeds || []).length + " seed(s)", sst);
    MB.html("p", {"class": "mb-caption"}, "From " + r.source + ".", sst);
    const names = {pretrained: "fine-tuned checkpoint", adapted: "task-adaptive MLM (" + r.adaptation_steps +
                   " steps), then fine-tuned", random_init: "fine-tuned from random init"};
    const rows = [], labels = [], values = [];
    ["pretrained", "adapted", "random_init"].forEach(function (k) {
      const a = r.arms[k];
      if (!a) return;
      rows.push([names[k], acc(a.mean) + (a.runs.length > 1 ? " ± " + a.std.toFixed(4) : ""),
                 a.runs.map(function (x) { return acc(x); }).join(", ")]);
      labels.push(k === "pretrained" ? "checkpoint" : k === "adapted" ? "adapted" : "random init");
      values.push(a.mean);
    });
    if (r.bag_of_words !== null && r.bag_of_words !== undefined) {
      rows.push(["bag of words (logistic regression)", acc(r.bag_of_words), ""]);
      labels.push("bag of words"); values.push(r.bag_of_words);
    }
    rows.push(["majority class", acc(r.majority_class), ""]);
    MB.table(sst, ["model", "dev accuracy", "per seed"], rows, "mb-sst2");
    MB.barChart(MB.html("div", {"class": "mb-figures"}, null, sst),
                {title: "SST-2 dev accuracy", name: "sst2-" + n, labels: labels, yMin: 0.4, yLabel: "dev accuracy",
                 series: [{name: "dev accuracy", values: values}],
                 refLines: [{value: r.majority_class, label: "majority class"}], width: 380});
  });

  // Drawn: a mark for timing the page (benchmarks/browser_pages.py) and a flag for tests.
  performance.mark("mb-rendered");
  document.body.dataset.state = "ready";
})(window);
