"""The report and the explorer in a real browser: Debian's Chromium, headless, driven by Playwright.

The report is opened from disk (file://) and must fetch nothing; the explorer is the real `minibert explore`
command in a subprocess on a free port of 127.0.0.1. Both must run without console or page errors, draw one
attention cell per layer and head, and react to hovering a token and clicking a head; the explorer must update for
a new sentence, show a message for bad input and keep answering. Screenshots go to $MINIBERT_ARTIFACTS (or a
temporary folder), whose path is printed.

Skipped without the `playwright` package or /usr/bin/chromium (CI installs both: see .ci/run, where a missing
one fails instead of skipping).
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mini_bert import cli

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Without these, Chromium keeps trying to reach update, sync and field-trial servers (this machine has no network).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000


def _missing(what: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing, but CI installs it (.ci/run)")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package (pip install -e '.[browser-tests]')")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MINIBERT_ARTIFACTS") or tmp_path_factory.mktemp("browser-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {folder}")
    return folder


class Watched:
    """A page with its console errors, page errors and requests recorded."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))


def lines_shown(page) -> tuple[int, int]:
    """(visible, hidden) lines of the head view."""
    return page.evaluate("""() => {
        const ls = [...document.querySelectorAll('figure[data-name^="attention-head"] line')];
        const hidden = ls.filter(l => l.getAttribute('visibility') === 'hidden').length;
        return [ls.length - hidden, hidden];
    }""")


def check_attention_viewer(page, layers: int, heads: int):
    """One cell per head; hovering a token keeps only its lines and says where it looks; clicking a head
    enlarges it."""
    assert page.locator(".mb-attn-cell").count() == layers * heads
    assert page.locator(".mb-attn-title").inner_text().startswith("Layer 0, head 0")
    before = page.locator(".mb-attn-readout").inner_text()
    all_visible, _ = lines_shown(page)
    page.locator('figure[data-name^="attention-head"] text[data-side="query"][data-index="2"]').hover()
    readout = page.locator(".mb-attn-readout").inner_text()
    assert readout != before and "attends to" in readout
    visible, hidden = lines_shown(page)
    assert hidden > 0 and visible < all_visible
    page.locator(f'.mb-attn-cell[data-layer="{layers - 1}"][data-head="{heads - 1}"]').click()
    assert page.locator(".mb-attn-title").inner_text().startswith(f"Layer {layers - 1}, head {heads - 1}")
    assert page.locator('figure[data-name^="attention-head"]').get_attribute("data-name") == \
        f"attention-head-l{layers - 1}-h{heads - 1}"


def test_the_report_opens_from_disk_and_reacts(tiny_run, browser, artifacts, tmp_path):
    out = tmp_path / "report.html"
    assert cli.main(["report", "--checkpoint", str(tiny_run), "--output", str(out)]) == 0
    w = Watched(browser)
    page = w.page
    page.goto(out.resolve().as_uri())
    page.wait_for_selector(".mb-attn-cell")
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    assert w.errors == []
    # Self-contained: the file itself, and nothing else but the page's own data: and blob: URLs.
    assert [u for u in w.requests if not u.startswith(("data:", "blob:"))] == [out.resolve().as_uri()]
    assert page.locator("#curves figure.mb-figure").count() == 5
    assert "No POS-probe result found" in page.locator("#pos").inner_text()
    assert "minibert probe-pos --checkpoint" in page.locator("#pos").inner_text()
    assert "No SST-2 result found" in page.locator("#sst2").inner_text()
    check_attention_viewer(page, layers=2, heads=2)
    page.screenshot(path=str(artifacts / "report-attention-hovered.png"), full_page=True)
    # Every figure saves as SVG and PNG.
    fig = page.locator('figure[data-name="curve-train_loss"]')
    with page.expect_download() as d:
        fig.locator('button[data-format="svg"]').click()
    svg = Path(d.value.path()).read_text(encoding="utf-8")
    assert d.value.suggested_filename == "curve-train_loss.svg" and svg.startswith("<?xml") and "<path" in svg
    with page.expect_download() as d:
        page.locator('figure[data-name="attention-grid"] button[data-format="png"]').click()
    png = Path(d.value.path()).read_bytes()
    assert d.value.suggested_filename == "attention-grid.png" and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert w.errors == []
    page.close()


@pytest.fixture(scope="module")
def explorer_url(tiny_run, tmp_path_factory):
    """The real `minibert explore` in a subprocess on a free port; its URL from its first line of output."""
    pytest.importorskip("flask", reason="the explore extra (Flask) is not installed")
    log = tmp_path_factory.mktemp("explorer") / "server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mini_bert", "explore", "--checkpoint", str(tiny_run),
                                 "--port", "0"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
        try:
            first = lines.get(timeout=60)            # None: the process ended without a line
        except queue.Empty:
            first = None
        if first is None:
            proc.kill()
            pytest.fail(f"minibert explore printed no address; its log: {log.read_text()}")
        m = re.search(r"http://127\.0\.0\.1:\d+/", first)
        assert m, f"unexpected first line {first!r}; log: {log.read_text()}"
        yield m.group(0)
        proc.terminate()
        proc.wait(timeout=30)


def wait_render(page, count: int):
    page.wait_for_function(f"() => Number(document.body.dataset.renders || 0) >= {count}")


def test_the_explorer_updates_live_and_survives_bad_input(explorer_url, browser, artifacts):
    w = Watched(browser)
    page = w.page
    page.goto(explorer_url)
    wait_render(page, 1)
    page.screenshot(path=str(artifacts / "explorer.png"), full_page=True)
    assert w.errors == []
    assert page.locator("#mb-message").inner_text() == ""
    check_attention_viewer(page, layers=2, heads=2)

    # A new sentence: new tokens everywhere.
    page.fill("#mb-sentence", "carol buys green plums and reads")
    page.click("#mb-show")
    wait_render(page, 2)
    tokens = page.locator("#mb-tokens .mb-token").all_inner_texts()
    assert tokens == ["[CLS]", "carol", "buys", "green", "plums", "and", "reads", "[SEP]"]
    assert page.locator(".mb-attn-cell").count() == 4
    assert "plums" in page.locator("#lens").inner_text()
    assert "No [MASK] yet" in page.locator("#predictions").inner_text()

    # Clicking a token masks it: the model's guesses for it appear, and the lens reads [MASK] there.
    page.locator('#mb-tokens .mb-token[data-index="3"]').click()
    wait_render(page, 3)
    assert page.locator('figure[data-name="predictions-3"]').count() == 1
    assert "[MASK]" in page.locator("#lens thead").inner_text()
    # Step through the forward pass.
    first = page.locator("#mb-step-card").inner_text()
    page.click("#mb-step-next")
    assert page.locator("#mb-step-where").inner_text().startswith("step 2 of")
    assert page.locator("#mb-step-card").inner_text() != first
    page.screenshot(path=str(artifacts / "explorer-masked.png"), full_page=True)
    assert w.errors == []

    # Bad input: a message in the page; the server keeps answering. (The browser logs each 400 answer.)
    for text, expect in (("   ", "type a sentence first"), (" ".join(["alice"] * 40), "this model reads at most 30")):
        page.fill("#mb-sentence", text)
        page.click("#mb-show")
        page.wait_for_function("(s) => document.querySelector('#mb-message').textContent.includes(s)", arg=expect)
    # Text that is not valid UTF-8 (a lone surrogate, as a bad paste leaves) gets a message too.
    page.evaluate("() => { document.querySelector('#mb-sentence').value = 'alice \\ud800 likes'; }")
    page.click("#mb-show")
    page.wait_for_function("() => document.querySelector('#mb-message').textContent.includes('not valid UTF-8')")
    page.screenshot(path=str(artifacts / "explorer-error.png"), full_page=True)
    status, body = page.evaluate("""async () => {
        const r = await fetch('api/attention', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                               body: new Uint8Array([123, 34, 116, 101, 120, 116, 34, 58, 34, 255, 34, 125])});
        return [r.status, await r.json()];
    }""")
    assert status == 400 and "not valid UTF-8" in body["error"]
    page.fill("#mb-sentence", "dave sells purple plums and swims")
    page.click("#mb-show")
    page.wait_for_function("() => document.querySelector('#mb-message').textContent === ''")
    assert page.locator("#mb-tokens .mb-token").all_inner_texts()[1] == "dave"
    unexpected = [e for e in w.errors if "status of 400" not in e]
    assert unexpected == []
    page.close()
