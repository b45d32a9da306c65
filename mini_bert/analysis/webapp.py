"""`minibert explore`: a small local web app (Flask) where a learner types a sentence and sees, live, what the
model computes on it.

    app = create_app(model, tokenizer, title="runs/default")     # a Flask app
    serve(app, port=8000)                                         # http://127.0.0.1:8000/ until Ctrl-C

GET / is the page (web/explorer.js with the shared figure and attention scripts, all inline). The page posts JSON
{"text": str, "masked": [positions], "top_k": int} to endpoints that each call one `MathematicalExplorer` method:

    /api/model            the model's size and how many tokens it reads (GET)
    /api/attention        tokens and every head's weights and entropy      explore_attention_heads
    /api/predictions      top-k tokens at each [MASK]                      predict_masked
    /api/logit-lens       what each layer would predict at each position    logit_lens
    /api/forward-pass     every intermediate of the forward pass in order   step_through_forward_pass
    /api/gradient-flow    gradient norm per layer for an MLM loss          analyze_gradient_flow
    /api/representations  CKA / cosine between layers, effective rank      compare_layer_representations

Bad input (not UTF-8, not JSON, an empty text, more tokens than the model's positions, a position that cannot be
masked) is answered with 400 and {"error": message}, which the page shows; the server keeps serving. The model is
shared by the server's threads, so one lock lets one request at a time use it.
"""

from __future__ import annotations

import json
import threading

from ..errors import MiniBertError
from .explorer import MathematicalExplorer
from .figures import to_jsonable
from .webpage import attention_view, fitting_sentence, gradient_view, render_page, rounded

MAX_TOP_K = 20
MAX_BODY_BYTES = 64_000          # a sentence the model can read is far shorter
DEFAULT_SENTENCE = "The movie was slow at first, but the ending made me [MASK] it."


class BadRequest(MiniBertError):
    """A request the page can fix: answered with 400 and the message."""


def parse_request(body: bytes, max_tokens: int) -> dict:
    """{"text", "masked", "top_k"} from a request body; BadRequest with a message a learner can act on."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"the request is {len(body)} bytes; this model reads at most {max_tokens} tokens")
    try:
        raw = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the text is not valid UTF-8; type or paste it again") from None
    try:
        req = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
        raise BadRequest(f"the request is not JSON ({e.msg})") from None
    if not isinstance(req, dict):
        raise BadRequest('the request must be a JSON object {"text": ...}')
    text = req.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("type a sentence first: the text is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("the text is not valid UTF-8 (it holds a lone surrogate); type or paste it again") from None
    masked = req.get("masked", [])
    if not isinstance(masked, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in masked):
        raise BadRequest("masked must be a list of token positions (integers)")
    top_k = req.get("top_k", 5)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        raise BadRequest(f"top_k must be an integer from 1 to {MAX_TOP_K}")
    return {"text": text, "masked": sorted(set(masked)), "top_k": top_k}


def create_app(model, tokenizer, title: str = "Mini-BERT"):
    """The Flask app serving the explorer page and its JSON endpoints for `model` and `tokenizer`."""
    from flask import Flask, Response, jsonify, request

    app = Flask("mini_bert.explorer")
    explorer = MathematicalExplorer(model, tokenizer, truncate=False)
    lock = threading.Lock()
    cfg = model.config
    info = {"title": title, "layers": cfg.num_layers, "hidden": cfg.hidden_size, "heads": cfg.num_heads,
            "vocab": cfg.vocab_size, "max_tokens": cfg.max_position_embeddings - 2,
            "parameters": model.num_parameters, "norm_position": cfg.norm_position,
            "default_sentence": fitting_sentence(tokenizer, cfg.max_position_embeddings, DEFAULT_SENTENCE),
            "max_top_k": MAX_TOP_K}

    def endpoint(name, compute):
        def view():
            try:
                req = parse_request(request.get_data(cache=False), info["max_tokens"])
                with lock:
                    out = compute(req)
            except MiniBertError as e:
                return jsonify({"error": str(e)}), 400
            return Response(json.dumps(to_jsonable(out), allow_nan=False), mimetype="application/json")
        app.add_url_rule(f"/api/{name}", name, view, methods=["POST"])

    endpoint("attention", lambda r: attention_view(explorer, r["text"], r["masked"]))
    endpoint("predictions", lambda r: {"tokens": explorer.tokens(r["text"], r["masked"]),
                                       "original_tokens": explorer.tokens(r["text"]),
                                       "predictions": explorer.predict_masked(r["text"], r["masked"], r["top_k"])})
    endpoint("logit-lens", lambda r: explorer.logit_lens(r["text"], r["masked"], r["top_k"]))
    endpoint("forward-pass", lambda r: {"tokens": explorer.tokens(r["text"], r["masked"]),
                                        "steps": explorer.step_through_forward_pass(r["text"], r["masked"])})
    endpoint("gradient-flow", lambda r: gradient_view(explorer, r["text"], masked=r["masked"]))
    endpoint("representations", lambda r: _representations(explorer, r["text"], r["masked"]))

    @app.get("/api/model")
    def model_info():
        return jsonify(info)

    page = render_page(f"Mini-BERT explorer: {title}", "explorer.js", info)

    @app.get("/")
    def index():
        return Response(page, mimetype="text/html")

    @app.errorhandler(404)
    def not_found(_):
        return jsonify({"error": "no such page; the explorer is at /"}), 404

    @app.errorhandler(405)
    def not_allowed(_):
        return jsonify({"error": "this address takes POST with a JSON body"}), 405

    return app


def _representations(explorer, text, masked):
    sim = explorer.compare_layer_representations(text, masked)
    n = len(sim["effective_rank"])
    return {"labels": ["embeddings"] + [f"layer {l}" for l in range(n - 1)], "cka": rounded(sim["cka"], 3),
            "cosine": rounded(sim["cosine"], 3), "effective_rank": sim["effective_rank"]}


def make_server(app, port: int = 8000, host: str = "127.0.0.1"):
    """A threaded WSGI server (Werkzeug's) listening on host:port; port 0 picks a free one (server.port).
    MiniBertError when the port is taken or not allowed. The socket is bound here, so a busy port is a message,
    not Werkzeug's exit."""
    import socket

    from werkzeug.serving import make_server as werkzeug_server

    if not 0 <= int(port) <= 65535:
        raise MiniBertError(f"--port {port} is not a TCP port (0-65535; 0 picks a free one)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)      # a restart need not wait out TIME_WAIT
    try:
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise MiniBertError(f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port, or 0 for "
                            f"a free one") from None
    try:
        return werkzeug_server(host, sock.getsockname()[1], app, threaded=True, fd=sock.fileno())
    finally:
        sock.close()                    # Werkzeug holds its own duplicate of the socket


def serve(server) -> None:
    """Answer requests until interrupted (Ctrl-C, which Werkzeug's loop turns into a return)."""
    try:
        server.serve_forever()
    finally:
        server.server_close()
