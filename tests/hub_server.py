"""A loopback HTTP server standing in for the Hugging Face Hub in tests (127.0.0.1 only, bounded, stops itself).

Serves ``/<org>/<name>/resolve/<revision>/<path>`` (HEAD and GET) from in-memory repos the way
huggingface_hub expects: X-Repo-Commit and ETag headers; 404 with X-Error-Code EntryNotFound / RepoNotFound /
RevisionNotFound. Records every request path; refuses after ``max_requests`` and shuts down after
``lifetime_s`` even if the test forgets to stop it.
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class FakeHub:
    """``repos``: {repo_id: {"commit": sha, "refs": {"main": sha, ...}, "files": {path: bytes}}}."""

    def __init__(self, repos: dict, *, max_requests: int = 200, lifetime_s: float = 60.0, fail_status=None):
        self.repos = repos
        self.fail_status = fail_status          # answer every request with this HTTP status (error paths)
        self.requests: list = []
        self.max_requests = max_requests
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):        # keep pytest output clean
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body):
                hub.requests.append((self.command, self.path))
                if len(hub.requests) > hub.max_requests:
                    return self._fail(503, "TooManyRequests")
                if hub.fail_status:
                    return self._fail(hub.fail_status, "Teapot")
                parts = unquote(self.path.split("?", 1)[0]).lstrip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._fail(404, "RepoNotFound")
                repo_id, rev, path = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._fail(404, "RepoNotFound")
                commit = repo["refs"].get(rev, rev if rev == repo["commit"] else None)
                if commit is None:
                    return self._fail(404, "RevisionNotFound")
                data = repo["files"].get(path)
                if data is None:
                    return self._fail(404, "EntryNotFound", commit)
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", '"' + hashlib.sha1(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _fail(self, status, code, commit=None):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    def __enter__(self):
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._timer.cancel()
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
