"""Test-session settings: downloads and cached tokenizers go to a temporary folder, never the user's cache; and
the local HTTP server that download tests fetch from (never the internet)."""

import functools
import http.server
import os
import tempfile
import threading

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache():
    with tempfile.TemporaryDirectory(prefix="minibert-cache-") as tmp:
        old = os.environ.get("MINIBERT_CACHE_DIR")
        os.environ["MINIBERT_CACHE_DIR"] = tmp     # subprocesses inherit it
        yield tmp
        if old is None:
            os.environ.pop("MINIBERT_CACHE_DIR", None)
        else:
            os.environ["MINIBERT_CACHE_DIR"] = old


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; `.requests` lists the paths asked for."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.root, httpd.requests = root, requests
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
