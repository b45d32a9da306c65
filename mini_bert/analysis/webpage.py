"""One self-contained HTML page from the shared web assets (mini_bert/analysis/web/): the report and the explorer
are both built here, so they draw attention, curves and bars with the same script and styles.

    render_page(title, script="report.js", data={...})   -> the HTML text
    attention_view(explorer, text), gradient_view(explorer, text)   -> the JSON that attention.js and the
                                                                        gradient bars draw, from a MathematicalExplorer

The page holds everything inline: the CSS, the scripts (figures.js and attention.js, then the page's own script)
and the data as JSON in <script type="application/json" id="mb-data">, so it opens from disk with no network.
"""

from __future__ import annotations

import html
import json
from importlib import resources

import numpy as np

from .figures import to_jsonable
from .report import MLM_BATCH_COPIES

SHARED_SCRIPTS = ("figures.js", "attention.js")
PAGE_SCRIPTS = ("report.js", "explorer.js")


def asset(name: str) -> str:
    """The text of a file in mini_bert/analysis/web/ (package data)."""
    return resources.files(__package__).joinpath("web", name).read_text(encoding="utf-8")


def json_for_script(data) -> str:
    """JSON that is safe inside a <script> element: '<', '>' and '&' are written as \\u escapes, so no string in
    the data (a token, a file name) can close the element."""
    text = json.dumps(to_jsonable(data), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(title: str, script: str, data) -> str:
    """The whole page: styles, shared scripts, the page script (one of PAGE_SCRIPTS) and its data."""
    if script not in PAGE_SCRIPTS:
        raise ValueError(f"unknown page script {script!r}; one of {PAGE_SCRIPTS}")
    scripts = []
    for name in SHARED_SCRIPTS + (script,):
        text = asset(name)
        if "</script" in text.lower():
            raise ValueError(f"web/{name} contains '</script', which would end the inline script early")
        scripts.append(f"<script>/* {name} */\n{text}</script>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        '<link rel="icon" href="data:,">',          # no icon, so the browser asks the server for none
        f"<style>\n{asset('minibert.css')}</style>",
        "</head>",
        "<body>",
        '<div id="mb-app"></div>',
        f'<script type="application/json" id="mb-data">{json_for_script(data)}</script>',
        *scripts,
        "</body>",
        "</html>",
        "",
    ])


def fitting_sentence(tokenizer, max_len: int, text: str) -> str:
    """`text` with words dropped from its end until [CLS] text [SEP] fits in max_len positions (a sample sentence
    for a small model)."""
    words = text.split()
    while len(words) > 1 and len(tokenizer.encode(" ".join(words))) + 2 > max_len:
        words.pop()
    return " ".join(words)


def rounded(a, digits: int = 4):
    """An array as nested lists of floats rounded to `digits` decimals (a smaller page, the same picture)."""
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


def attention_view(explorer, text: str, masked=()) -> dict:
    """{"tokens", "heads": [{layer, head, entropy, weights (T, T) rounded to 4 decimals}]}: what the attention
    viewer (web/attention.js) draws."""
    heads = explorer.explore_attention_heads(text, masked)
    return {"tokens": explorer.tokens(text, masked),
            "heads": [{"layer": h["layer"], "head": h["head"], "entropy": h["entropy"],
                       "weights": rounded(h["weights"])} for h in heads]}


def gradient_view(explorer, text: str, seed: int = 0, masked=()) -> dict:
    """The gradient norm per parameter group for the MLM loss of `text` repeated with different maskings
    (`analyze_gradient_magnitudes_by_layer`, through the explorer): groups, grad_norm, grad_to_weight, vanishing,
    exploding, loss, copies."""
    g = explorer.analyze_gradient_flow(text, seed=seed, masked=masked)
    return {"groups": g["groups"], "grad_norm": [g["grad_norm"][k] for k in g["groups"]],
            "grad_to_weight": [g["grad_to_weight"][k] for k in g["groups"]], "vanishing": g["vanishing"],
            "exploding": g["exploding"], "loss": g["loss"], "copies": MLM_BATCH_COPIES}
