"""The browser pages' cost: the size of `minibert report`'s page and its render time in headless Chromium, and how
long `minibert explore` takes to answer one sentence.

    python benchmarks/browser_pages.py --checkpoint runs/default [--results F ...] [--output /tmp/report.html]
                                       [--repeats 7]

Report: the page is built as `minibert report` builds it (build time printed too), then opened from disk in a fresh
tab `repeats` times; the render time is the `mb-rendered` performance mark that the page sets once everything is
drawn, in ms from the start of navigation (parsing the inline data and scripts included). Explorer: the app served
on a free port of 127.0.0.1 in this process (Werkzeug, threaded, as the command runs it); one answer is every
request the page makes for a new sentence (attention, predictions, logit lens, forward pass, gradient flow,
representations), sent one after another over HTTP, each repeat with a different sentence (no cached forward pass).
Medians are printed. Needs the `explore` and `browser-tests` extras and Debian's chromium (/usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ENDPOINTS = ("attention", "predictions", "logit-lens", "forward-pass", "gradient-flow", "representations")
SENTENCES = ["The movie was slow at first, but the ending made me [MASK] it.",
             "I have never seen a film with such a [MASK] cast and so little story.",
             "The acting is wonderful and the music fits every scene of the movie.",
             "It was the worst two hours I have spent in a cinema this year.",
             "Her performance alone makes this [MASK] worth watching on a rainy day.",
             "The plot falls apart in the second half, and the jokes stop working.",
             "A quiet, beautiful story about a father and his son on the road.",
             "Nothing in this film makes sense, yet I could not stop laughing."]


def bench_report(checkpoint, results, output: Path, repeats: int) -> None:
    from playwright.sync_api import sync_playwright

    from mini_bert.analysis.html_report import write_report

    t0 = time.perf_counter()
    path = write_report(checkpoint, output=output, results=results)
    build = time.perf_counter() - t0
    size = path.stat().st_size
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for _ in range(repeats):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(path.resolve().as_uri())
            page.wait_for_function("() => document.body.dataset.state === 'ready'")
            times.append(page.evaluate("() => performance.getEntriesByName('mb-rendered')[0].startTime"))
            page.close()
        browser.close()
    print(f"report: {path}  {size / 1e6:.3f} MB ({size:,} bytes)  built in {build:.2f} s")
    print(f"report render in headless Chromium, median of {repeats}: {statistics.median(times):.0f} ms "
          f"(min {min(times):.0f}, max {max(times):.0f})")


def bench_explorer(checkpoint, repeats: int) -> None:
    from mini_bert.analysis.webapp import create_app, make_server
    from mini_bert.training.checkpointing import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(checkpoint)
    server = make_server(create_app(model, tok, title=str(checkpoint)), 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.port}/api/"

    def post(name, text):
        req = urllib.request.Request(base + name, data=json.dumps({"text": text}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    logging.getLogger("werkzeug").setLevel(logging.WARNING)          # no line per request
    post("attention", "warm up")
    total, first, ntok = [], [], []
    for i in range(repeats):
        text = SENTENCES[i % len(SENTENCES)] + (f" ({i})" if i >= len(SENTENCES) else "")
        t0 = time.perf_counter()
        att = post("attention", text)
        first.append(time.perf_counter() - t0)
        for name in ENDPOINTS[1:]:
            post(name, text)
        total.append(time.perf_counter() - t0)
        ntok.append(len(att["tokens"]))
    print(f"explorer, {model.num_parameters:,} parameters, sentences of {min(ntok)}-{max(ntok)} tokens, median of "
          f"{repeats}: all {len(ENDPOINTS)} requests over HTTP {1000 * statistics.median(total):.0f} ms "
          f"(min {1000 * min(total):.0f}, max {1000 * max(total):.0f}); attention alone "
          f"{1000 * statistics.median(first):.0f} ms")
    # The same in the page: from pressing Show to every panel drawn (the page's own "answered in N ms").
    from playwright.sync_api import sync_playwright

    shown = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base[:-len("api/")])
        page.wait_for_function("() => Number(document.body.dataset.renders || 0) >= 1")
        for i in range(repeats):
            page.fill("#mb-sentence", SENTENCES[(i + 3) % len(SENTENCES)] + f" ({i})")
            page.click("#mb-show")
            page.wait_for_function(f"() => Number(document.body.dataset.renders) >= {i + 2}")
            busy = page.locator("#mb-busy")
            shown.append([int(re.search(r"answered in (\d+) ms", busy.inner_text()).group(1)),
                          int(busy.get_attribute("data-fetch-ms")), int(busy.get_attribute("data-draw-ms"))])
        browser.close()
    server.shutdown()
    med = [statistics.median(col) for col in zip(*shown)]
    print(f"explorer in headless Chromium, Show to every panel drawn, median of {repeats}: {med[0]:.0f} ms "
          f"(min {min(s[0] for s in shown)}, max {max(s[0] for s in shown)}): answers {med[1]:.0f} ms, "
          f"drawing {med[2]:.0f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--results", nargs="*", default=[])
    p.add_argument("--output", default=None, help="where to write the report (default: a temporary folder)")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    output = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="minibert-report-")) / "report.html"
    bench_report(args.checkpoint, args.results, output, args.repeats)
    bench_explorer(args.checkpoint, args.repeats)


if __name__ == "__main__":
    main()
