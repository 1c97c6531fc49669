"""A small HTTP server speaking the part of the Hugging Face Hub protocol that `hf_hub_download` uses.

    HEAD/GET {endpoint}/{owner}/{name}/resolve/{revision}/{filename}

answers with X-Repo-Commit, ETag and Content-Length (HEAD) or the bytes (GET, with Range support), and
the Hub's X-Error-Code headers for unknown repositories, revisions and files. Tests point HF_ENDPOINT at it.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class Repo:
    revisions: dict[str, dict[str, bytes]] = field(default_factory=dict)  # revision → filename → content

    def commit(self, revision: str) -> str:
        return hashlib.sha1(f"{id(self)}:{revision}".encode()).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo: str, files: dict[str, bytes], revision: str = "main") -> None:
        self.repos.setdefault(repo, Repo()).revisions[revision] = dict(files)

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def downloads(self, filename: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == "GET" and p.endswith("/" + filename))

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _lookup(self):
                parts = self.path.split("?")[0].lstrip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return 404, {"X-Error-Code": "RepoNotFound"}, None
                repo_id, revision = f"{parts[0]}/{parts[1]}", unquote(parts[3])
                filename = unquote("/".join(parts[4:]))
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, None
                if revision not in repo.revisions:
                    return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, None
                files = repo.revisions[revision]
                headers = {"X-Repo-Commit": repo.commit(revision)}
                if filename not in files:
                    return 404, {**headers, "X-Error-Code": "EntryNotFound", "X-Error-Message": "no file"}, None
                data = files[filename]
                headers["ETag"] = f'"{hashlib.sha256(data).hexdigest()}"'
                return 200, headers, data

            def _reply(self, with_body: bool) -> None:
                hub.requests.append((self.command, self.path, dict(self.headers)))
                status, headers, data = self._lookup()
                body = data or b""
                rng = self.headers.get("Range")
                if with_body and data is not None and rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                    body = data[start:]
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) if with_body else len(data or b"")))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                self._reply(with_body=False)

            def do_GET(self) -> None:
                self._reply(with_body=True)

        return Handler
