"""`minibert report` (the self-contained HTML page) and the `minibert explore` server's JSON endpoints, on the
tiny run of conftest.py, without a browser (tests/integration/test_browser.py opens both in Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from mini_bert import cli
from mini_bert.analysis import html_report as HR
from mini_bert.analysis.webpage import json_for_script, render_page

SVG_NS = "http://www.w3.org/2000/svg"


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="mb-data">(.*?)</script>', html, re.S)
    assert m, "the page holds no data element"
    return json.loads(m.group(1))


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@dataclass
class Tagged:
    words: list
    upos: list
    xpos: list


@pytest.fixture(scope="module")
def results(tiny_run, tiny_sentences, tmp_path_factory):
    """A real POS-probe and SST-2 result of the tiny model (the functions the commands call), as JSON files."""
    from mini_bert.evaluation.downstream import run_sst2
    from mini_bert.evaluation.probing import run_pos_probe
    from mini_bert.training.checkpointing import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(tiny_run)
    tags = ["PROPN", "VERB", "ADJ", "NOUN", "CCONJ", "VERB"]
    data = [Tagged(s.split(), tags, ["_"] * 6) for s in tiny_sentences]
    pos = run_pos_probe(model, tok, data[:4], data[4:], seed=0, log=None, random_model=True, control_task=True)
    texts = tiny_sentences * 2
    labels = np.array([i % 2 for i in range(len(texts))])
    sst2 = run_sst2(model, tok, texts, labels, texts, labels, epochs=1, seeds=[0], log=None, batch_size=4)
    folder = tmp_path_factory.mktemp("results")
    (folder / "pos.json").write_text(json.dumps(pos))
    (folder / "sst2.json").write_text(json.dumps(sst2))
    (folder / "evaluate.json").write_text(json.dumps({"checkpoint": str(tiny_run), "pos_probe": pos,
                                                       "sst2": {"skipped": "no data"}}))
    return folder


def test_report_is_one_self_contained_page_beside_the_run(tiny_run, capsys):
    before = listing(tiny_run)
    assert cli.main(["report", "--checkpoint", str(tiny_run)]) == 0
    out = tiny_run.parent / f"{tiny_run.name}-analysis" / "report.html"
    assert str(out) in capsys.readouterr().out
    assert listing(tiny_run) == before                                   # nothing written into the run folder
    html = out.read_text(encoding="utf-8")
    # Nothing to fetch: no external script, style, image or font; the only URL is the SVG namespace.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", html)
    assert set(re.findall(r"https?://[^\s\"'<>)]+", html)) <= {SVG_NS}
    data = page_data(html)
    assert {"train_loss", "valid_masked_acc", "valid_perplexity", "lr", "tokens_per_s"} <= set(data["curves"])
    log = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert data["curves"]["train_loss"]["steps"] == [r["step"] for r in log if "train_loss" in r]
    assert len(data["attention"]["heads"]) == 2 * 2                      # layers x heads of the tiny model
    T = len(data["attention"]["tokens"])
    assert all(np.asarray(h["weights"]).shape == (T, T) for h in data["attention"]["heads"])
    np.testing.assert_allclose(np.asarray(data["attention"]["heads"][0]["weights"]).sum(axis=1), 1.0, atol=1e-3)
    assert data["gradients"]["groups"] == ["embeddings", "layer_0", "layer_1", "head"]
    # No evaluation results: the page says so and names the folders it searched.
    assert data["pos"] == [] and data["sst2"] == []
    assert str(tiny_run.parent / f"{tiny_run.name}-eval") in data["searched"]


def test_report_finds_results_beside_the_run_and_takes_more_with_results(tiny_run, results, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (tmp_path / "run-eval").mkdir()
    shutil.copy(results / "pos.json", tmp_path / "run-eval" / "pos.json")
    (tmp_path / "run-eval" / "notes.json").write_text('{"something": "else"}')     # not a result: ignored
    out = tmp_path / "page.html"
    assert cli.main(["report", "--checkpoint", str(run), "--output", str(out),
                     "--results", str(results / "sst2.json"), str(results / "evaluate.json")]) == 0
    data = page_data(out.read_text(encoding="utf-8"))
    pos = json.loads((results / "pos.json").read_text())
    # The same POS result beside the run and inside the evaluate report, shown once each with its source.
    assert [p["source"] for p in data["pos"]] == [str(results / "evaluate.json"), str(tmp_path / "run-eval" / "pos.json")]
    assert data["pos"][1]["majority_baseline"] == pos["majority_baseline"]
    assert [row["trained"] for row in data["pos"][1]["layers"]] == [row["trained"] for row in pos["layers"]]
    sst2 = json.loads((results / "sst2.json").read_text())
    assert len(data["sst2"]) == 1 and data["sst2"][0]["arms"]["pretrained"]["mean"] == sst2["pretrained"]["mean"]
    assert data["sst2"][0]["bag_of_words"] == sst2["bag_of_words"]["dev_accuracy"]


@pytest.mark.parametrize("case", ["folder", "file-as-parent", "inside-run", "missing-results", "not-a-result",
                                  "too-long"])
def test_mistakes_exit_2_before_any_work(case, tiny_run, tmp_path, monkeypatch, capsys):
    """Each mistake is reported before the checkpoint is loaded, and nothing is written."""
    import mini_bert.training.checkpointing as C

    args = ["report", "--checkpoint", str(tiny_run), "--output", str(tmp_path / "r.html")]
    if case == "folder":
        args[-1] = str(tmp_path)
        expect = "is a folder"
    elif case == "file-as-parent":
        (tmp_path / "f").write_text("x")
        args[-1] = str(tmp_path / "f" / "r.html")
        expect = "is a file"
    elif case == "inside-run":
        args[-1] = str(tiny_run / "report.html")
        expect = "inside the run folder"
    elif case == "missing-results":
        args += ["--results", str(tmp_path / "nope.json")]
        expect = "does not exist"
    elif case == "not-a-result":
        (tmp_path / "x.json").write_text("[1, 2]")
        args += ["--results", str(tmp_path / "x.json")]
        expect = "is not a result"
    else:
        args += ["--sentence", " ".join(["alice"] * 40)]                 # the tiny model reads 30 tokens
        expect = "this model reads at most 30"
    if case != "too-long":
        monkeypatch.setattr(C, "load_checkpoint", lambda *a, **k: pytest.fail("loaded the checkpoint first"))
    before = listing(tmp_path)
    assert cli.main(args) == 2
    assert expect in capsys.readouterr().err
    assert listing(tmp_path) == before and not (tiny_run / "report.html").exists()


def test_a_lone_checkpoint_renders_and_says_the_log_is_missing(tiny_run, tmp_path):
    lone = tmp_path / "ckpt"
    shutil.copytree(tiny_run / "best", lone)
    out = HR.write_report(lone, output=tmp_path / "lone.html")
    data = page_data(out.read_text(encoding="utf-8"))
    assert data["run_dir"] is None and data["curves"] == {} and data["issues"] == [] and data["searched"] == []
    assert len(data["attention"]["heads"]) == 4


def test_the_log_reader_drops_a_torn_line_and_thins_long_curves(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train_loss": 2.0}\n{"step": 2, "train_lo')
    records, bad = HR.read_metrics(tmp_path)
    assert records == [{"step": 1, "train_loss": 2.0}] and bad == 1
    xs = list(range(10_000))
    tx, ty = HR.thin(xs, xs, limit=100)
    assert len(tx) == 100 and tx[0] == 0 and tx[-1] == 9999 and tx == ty
    c = HR.curves([{"step": s, "train_loss": float(s), "lr": 1e-3} for s in range(5000)])
    assert len(c["train_loss"]["steps"]) == HR.MAX_POINTS and c["train_loss"]["steps"][-1] == 4999


def test_page_data_cannot_close_its_script_element():
    text = json_for_script({"token": "</script><script>alert(1)</script>", "x": float("nan")})
    assert "</" not in text and json.loads(text) == {"token": "</script><script>alert(1)</script>", "x": None}
    page = render_page("a <title>", "report.js", {"a": 1})
    assert "<title>a &lt;title&gt;</title>" in page and page.count("</script>") == 4


# ---------------------------------------------------------------------------------------------------------------
# The explorer's endpoints


@pytest.fixture(scope="module")
def client(tiny_run):
    pytest.importorskip("flask", reason="the explore extra (Flask) is not installed")
    from mini_bert.analysis.webapp import create_app
    from mini_bert.training.checkpointing import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(tiny_run)
    return create_app(model, tok, title="tiny").test_client()


def ask(client, name, **body):
    r = client.post(f"/api/{name}", json=body)
    return r.status_code, r.get_json()


def test_the_explorer_serves_its_page_and_every_view(client):
    page = client.get("/")
    assert page.status_code == 200 and b'id="mb-data"' in page.data and b"explorer.js" in page.data
    text = "alice likes red apples and sings"
    code, att = ask(client, "attention", text=text, masked=[3])
    assert code == 200 and att["tokens"][3] == "[MASK]" and len(att["heads"]) == 4
    code, pred = ask(client, "predictions", text=text, masked=[3], top_k=3)
    assert code == 200 and pred["original_tokens"][3] == "red"
    assert [p["position"] for p in pred["predictions"]] == [3] and len(pred["predictions"][0]["top"]) == 3
    probs = [p for _, p in pred["predictions"][0]["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    code, lens = ask(client, "logit-lens", text=text, masked=[3], top_k=2)
    assert code == 200 and lens["layers"] == ["embeddings", "layer 0", "layer 1"]
    assert len(lens["top"]) == 3 and len(lens["top"][0]) == len(att["tokens"])
    # The lens's last row is the model's own prediction.
    (lens_word, lens_p), (word, p) = lens["top"][-1][3][0], pred["predictions"][0]["top"][0]
    assert lens_word == word and lens_p == pytest.approx(p, rel=1e-4)
    code, fwd = ask(client, "forward-pass", text=text)
    assert code == 200 and "layers.0.attn.attention_weights" in [s["name"] for s in fwd["steps"]]
    code, grads = ask(client, "gradient-flow", text=text)
    assert code == 200 and grads["groups"] == ["embeddings", "layer_0", "layer_1", "head"] and grads["loss"] > 0
    code, reps = ask(client, "representations", text=text)
    assert code == 200 and np.asarray(reps["cka"]).shape == (3, 3) and len(reps["effective_rank"]) == 3
    assert client.get("/api/model").get_json()["max_tokens"] == 30


@pytest.mark.parametrize("body, expect", [
    (b'{"text": ""}', "type a sentence first"),
    (b'{"text": "   "}', "type a sentence first"),
    (json.dumps({"text": " ".join(["alice"] * 40)}).encode(), "this model reads at most 30"),
    (b'{"text": "alice \xff\xfe likes"}', "not valid UTF-8"),
    (b'{"text": "alice \\ud800 likes"}', "not valid UTF-8"),
    (b'{"text": "alice likes", "masked": [0]}', "cannot mask position 0"),
    (b'{"text": "alice likes", "masked": ["a"]}', "list of token positions"),
    (b'{"text": "alice likes", "top_k": 0}', "top_k"),
    (b"not json", "not JSON"),
    (b"[1]", "JSON object"),
])
def test_bad_input_gets_a_message_and_the_server_keeps_serving(client, body, expect):
    r = client.post("/api/attention", data=body, content_type="application/json")
    assert r.status_code == 400 and expect in r.get_json()["error"]
    assert ask(client, "attention", text="bob eats green pears")[0] == 200


def test_explore_without_flask_names_the_extra(tiny_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "flask", None)                     # import flask -> ImportError
    assert cli.main(["explore", "--checkpoint", str(tiny_run)]) == 2
    assert "mini-bert[explore]" in capsys.readouterr().err


def test_explore_refuses_a_port_that_is_not_one(tiny_run, capsys):
    pytest.importorskip("flask", reason="the explore extra (Flask) is not installed")
    assert cli.main(["explore", "--checkpoint", str(tiny_run), "--port", "70000"]) == 2
    assert "not a TCP port" in capsys.readouterr().err


def test_explore_on_a_busy_port_says_so(tiny_run, capsys):
    pytest.importorskip("flask", reason="the explore extra (Flask) is not installed")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert cli.main(["explore", "--checkpoint", str(tiny_run), "--port", str(s.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
