"""A local, in-memory HTTP server that speaks the subset of the Hugging Face Hub API used by the real clients.

The installed `huggingface_hub`, `datasets` and `transformers` clients run unmodified against it: point `HF_ENDPOINT`
at the server *before* importing them (they read the endpoint at import time) and disable Xet with
`HF_HUB_DISABLE_XET=1`, so that large files go through the legacy Git LFS "basic" transfer implemented here.

Implemented endpoints (`{type}` is `model`, `dataset`, `space` or `kernel`, `{prefix}` is `""` for models and
`"datasets/"`, `"spaces/"`, ... otherwise; `{rev}` is a branch, a tag, a `refs/pr/N` ref or a commit sha, possibly
abbreviated):

- `GET /api/whoami-v2`, `POST /api/validate-yaml`,
- `POST /api/repos/create`, `DELETE /api/repos/delete`, `PUT /api/{type}s/{repo}/settings`,
- `GET /api/{type}s/{repo}` and `GET /api/{type}s/{repo}/revision/{rev}` (repo info, `blobs` and `expand` supported),
- `GET /api/{type}s/{repo}/tree/{rev}[/{path}]` (`recursive`, `expand`; a single page, no `Link` header),
- `POST /api/{type}s/{repo}/paths-info/{rev}` (form-encoded or JSON body),
- `POST /api/{type}s/{repo}/preupload/{rev}` (upload mode from `.gitattributes`, size and binary content),
- `POST /api/{type}s/{repo}/commit/{rev}` (NDJSON: `header`, `file`, `lfsFile`, `deletedFile`, `deletedFolder`;
  `parentCommit` checked (412), `create_pr=1` opens a `refs/pr/N` ref),
- `GET /api/{type}s/{repo}/refs`, `GET /api/{type}s/{repo}/commits/{rev}`,
- `POST`/`DELETE /api/{type}s/{repo}/branch/{branch}`, `POST /api/{type}s/{repo}/tag/{rev}`,
  `DELETE /api/{type}s/{repo}/tag/{tag}`,
- `POST /{prefix}{repo}.git/info/lfs/objects/batch` (basic transfer, upload + verify actions pointing back here),
  `PUT /lfs-upload/{oid}` (sha256 checked) and `POST /lfs-verify/{oid}`,
- `GET`/`HEAD /{prefix}{repo}/resolve/{rev}/{path}` (`X-Repo-Commit`, `ETag`, `X-Linked-Etag`, `X-Linked-Size`,
  single `Range`s).

Errors follow the Hub conventions the clients rely on: a JSON `{"error": ...}` body and, for 404s, an `X-Error-Code`
header (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) that `hf_raise_for_status` maps to
`RepositoryNotFoundError`, `RevisionNotFoundError` and `RemoteEntryNotFoundError`.

Example:

```python
>>> server = HubServer().start()
>>> os.environ["HF_ENDPOINT"] = server.endpoint  # before importing huggingface_hub
>>> ...
>>> server.files("org/name", repo_type="dataset")
{'.gitattributes': b'...', 'README.md': b'...', 'data/train-00000-of-00001.parquet': b'PAR1...'}
>>> server.stop()
```
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# Name returned by `whoami-v2`, and namespace of repos created without an organization.
DEFAULT_USER = "hub-test-user"

# Plural URL segment -> repo type, and repo type -> prefix of its web/resolve URLs (as in `huggingface_hub.constants`).
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}

# Patterns tracked by Git LFS in the `.gitattributes` of every new repo (a subset of the Hub's default file).
DEFAULT_LFS_PATTERNS = [
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle",
    "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite",
    "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*", "*.mp3", "*.ogg", "*.wav", "*.flac",
    "*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif", "*.tiff", "*.mp4", "*.webm",
]  # fmt: skip
DEFAULT_GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in DEFAULT_LFS_PATTERNS)


def _now() -> str:
    # The clients parse dates with `%Y-%m-%dT%H:%M:%S.%fZ` (see `huggingface_hub.utils.parse_datetime`).
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_oid(content: bytes) -> str:
    """The git object id of a blob: what the Hub reports as `oid`/`ETag` for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class _Blob:
    """A file stored at some path of a commit. Frozen so that snapshots can share blobs safely."""

    content: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        """The Git LFS pointer file that git stores in place of an LFS file."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def oid(self) -> str:
        """Git blob id, as in the Hub's tree listings: that of the pointer file for LFS files."""
        return _git_blob_oid(self.pointer if self.lfs else self.content)

    @property
    def etag(self) -> str:
        """ETag of `resolve` responses: the sha256 of LFS files, the git blob id of regular files."""
        return self.sha256 if self.lfs else self.oid


@dataclass
class _Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, _Blob]


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit sha (also holds "refs/pr/N" refs)
    tags: dict[str, str] = field(default_factory=dict)
    num_prs: int = 0

    @property
    def prefix(self) -> str:
        return URL_PREFIXES[self.repo_type]

    def resolve(self, revision: str) -> _Commit | None:
        """Commit of a branch, tag, PR ref, full sha or unambiguous sha prefix (>= 7 characters)."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.tags:
            return self.commits[self.tags[revision]]
        if revision in self.commits:
            return self.commits[revision]
        if len(revision) >= 7:
            matches = [sha for sha in self.commits if sha.startswith(revision.lower())]
            if len(matches) == 1:
                return self.commits[matches[0]]
        return None

    def history(self, sha: str) -> list[_Commit]:
        """Commits reachable from `sha`, newest first."""
        out = []
        current: str | None = sha
        while current is not None:
            commit = self.commits[current]
            out.append(commit)
            current = commit.parent
        return out


class HubError(Exception):
    """Raised by route handlers to answer with an error status, a JSON `{"error": ...}` body and extra headers."""

    def __init__(self, status: int, message: str, error_code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.extra = extra


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(data: Any, status: int = 200, content_type: str = "application/json") -> _Response:
    return _Response(status, json.dumps(data).encode(), {"Content-Type": content_type})


class HubServer:
    """In-memory Hugging Face Hub for tests, served over HTTP from a daemon thread.

    Args:
        host (`str`, *optional*, defaults to `"127.0.0.1"`):
            Interface to bind.
        port (`int`, *optional*, defaults to `0`):
            Port to bind; `0` picks a free one (see `port` / `endpoint` once started).
        lfs_threshold (`int`, *optional*, defaults to 10 MiB):
            Files at least this large are uploaded through Git LFS, whatever their name. Smaller files go through
            LFS when they match an LFS pattern of the revision's `.gitattributes` (e.g. `*.parquet`,
            `*.safetensors`, `*.png`) or when their first 512 bytes contain a NUL byte (binary content).

    Attributes:
        requests (`list[tuple[str, str]]`):
            Log of every request received, as `(method, path)` with the path percent-decoded and without its query
            string, e.g. `("POST", "/api/datasets/org/name/commit/main")`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, lfs_threshold: int = 10 * 1024 * 1024):
        self.host = host
        self.lfs_threshold = lfs_threshold
        self.requests: list[tuple[str, str]] = []
        self._requested_port = port
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lfs_objects: dict[str, bytes] = {}  # sha256 -> content, shared by all repos
        self._commit_failures: list[int] = []  # statuses of the next failing commit calls
        self._lfs_upload_failures: list[int] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("The server is not started.")
        return self._httpd.server_address[1]

    @property
    def endpoint(self) -> str:
        """Base URL to use as `HF_ENDPOINT`, e.g. `"http://127.0.0.1:8765"`."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> HubServer:
        """Bind the port and serve requests from a daemon thread. Returns the server itself."""
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer((self.host, self._requested_port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers

    def reset(self) -> None:
        """Drop all repos, LFS objects, pending fault injections and the request log."""
        with self._lock:
            self._repos.clear()
            self._lfs_objects.clear()
            self._commit_failures.clear()
            self._lfs_upload_failures.clear()
            self.requests.clear()

    def fail_next_commits(self, n: int = 1, status: int = 500) -> None:
        """Make the next `n` calls to the commit endpoint answer `status` with a JSON `{"error": ...}` body.

        The repo is left untouched by a failed call. `HfApi.create_commit` does not retry commits, so a 500 raises
        `HfHubHTTPError` at once (`datasets`' `push_to_hub` retries 409 and 412 with sleeps, so avoid those there).
        """
        with self._lock:
            self._commit_failures.extend([status] * n)

    def fail_next_lfs_uploads(self, n: int = 1, status: int = 403) -> None:
        """Make the next `n` LFS `PUT` uploads answer `status` without storing anything.

        The client uploads with `http_backoff`, which retries 408, 429 and 5xx up to 5 times with 1-8 s sleeps: the
        default 403 (e.g. an expired signed URL) fails at once, a 5xx with `n <= 5` exercises the retries (slowly).
        """
        with self._lock:
            self._lfs_upload_failures.extend([status] * n)

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        """Content of every file of a repo at a revision (branch, tag or commit sha), by path."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                raise KeyError(f"No {repo_type} repo {repo_id!r}.")
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(f"No revision {revision!r} in {repo_type} repo {repo_id!r}.")
            return {path: blob.content for path, blob in sorted(commit.files.items())}

    def commits(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> list[str]:
        """Shas of the commits reachable from a revision, newest first (the last one is the repo's initial commit)."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            commit = repo.resolve(revision) if repo is not None else None
            if commit is None:
                raise KeyError(f"No revision {revision!r} in {repo_type} repo {repo_id!r}.")
            return [c.sha for c in repo.history(commit.sha)]

    def repo_exists(self, repo_id: str, repo_type: str = "dataset") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    # ------------------------------------------------------------------ storage

    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> _Repo:
        now = _now()
        repo = _Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=now)
        # Like the Hub, a new repo holds one commit with the default `.gitattributes`.
        initial = _Commit(
            sha=self._new_sha(repo),
            parent=None,
            title="initial commit",
            message="",
            date=now,
            files={".gitattributes": _Blob(DEFAULT_GITATTRIBUTES.encode(), lfs=False)},
        )
        repo.commits[initial.sha] = initial
        repo.branches["main"] = initial.sha
        self._repos[(repo_type, repo_id)] = repo
        return repo

    @staticmethod
    def _new_sha(repo: _Repo) -> str:
        # Random rather than content-derived: the clients cache files by commit sha (under `HF_HOME`), so a repo
        # re-created with other content in a later test must never reuse a sha.
        return hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}/{uuid.uuid4()}".encode()).hexdigest()

    def _is_lfs(self, commit: _Commit | None, path: str, size: int, sample: bytes) -> bool:
        if size >= self.lfs_threshold or b"\0" in sample[:512]:
            return True
        gitattributes = commit.files.get(".gitattributes") if commit is not None else None
        text = gitattributes.content.decode(errors="replace") if gitattributes is not None else DEFAULT_GITATTRIBUTES
        name = path.rsplit("/", 1)[-1]
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 2 or line.lstrip().startswith("#") or "filter=lfs" not in parts[1:]:
                continue
            pattern = parts[0]
            # Git matches patterns without a slash against the basename, others against the full path.
            if fnmatch.fnmatchcase(name if "/" not in pattern else path, pattern):
                return True
        return False


def _tree_oid(entries: list[tuple[str, str]]) -> str:
    return hashlib.sha1("\n".join(f"{path} {oid}" for path, oid in sorted(entries)).encode()).hexdigest()


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on")


def _split_revision(segments: list[str]) -> tuple[str, list[str]]:
    """Split `[rev, *path]` URL segments. Special refs (`refs/pr/1`, `refs/convert/parquet`) may arrive unquoted."""
    if len(segments) >= 3 and segments[0] == "refs" and segments[1] in ("pr", "convert"):
        return "/".join(segments[:3]), segments[3:]
    if not segments:
        raise HubError(400, "Missing revision.")
    return segments[0], segments[1:]


class _Handler(BaseHTTPRequestHandler):
    """Request handler; `hub` is bound to the owning `HubServer` by `HubServer.start`."""

    hub: HubServer
    # Keep-alive, as the clients pool connections. Every response therefore carries a `Content-Length`.
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the default writes every request to stderr

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # ------------------------------------------------------------------ plumbing

    def _read_body(self) -> bytes:
        # Bodies of unknown length (e.g. streamed from a generator) come with `Transfer-Encoding: chunked`.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        self.body = self._read_body()  # always drained, so that the kept-alive connection stays in sync
        self.hub.requests.append((method, unquote(url.path)))
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        try:
            response = self._route(method, segments)
        except HubError as err:
            response = _json_response({"error": err.message, **err.extra}, status=err.status)
            if err.error_code is not None:
                response.headers["X-Error-Code"] = err.error_code
            if "commit" in err.extra:
                response.headers["X-Repo-Commit"] = err.extra["commit"]
        except Exception as err:
            # A bug (or a missing case) in this server: report it to the client instead of hanging up. 501 rather
            # than 500, which `http_backoff` would retry 5 times with sleeps before the test sees the error.
            response = _json_response({"error": f"hub_server failed: {err!r}"}, status=501)
        self._send(method, response)

    def _send(self, method: str, response: _Response) -> None:
        self.send_response(response.status)
        headers = {"Content-Type": "application/octet-stream", **response.headers}
        headers.setdefault("Content-Length", str(len(response.body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD" and response.body:
            self.wfile.write(response.body)

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err

    def _param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    # ------------------------------------------------------------------ routing

    def _route(self, method: str, seg: list[str]) -> _Response:
        hub = self.hub
        if seg[:1] == ["api"]:
            rest = seg[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if rest == ["validate-yaml"] and method == "POST":
                return _json_response({"errors": [], "warnings": []})
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if rest == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo()
            if len(rest) >= 3 and rest[0] in REPO_TYPES:
                repo_type, repo_id, action = REPO_TYPES[rest[0]], f"{rest[1]}/{rest[2]}", rest[3:]
                with hub._lock:
                    return self._repo_api(method, repo_type, repo_id, action)
        if seg[:1] == ["lfs-upload"] and len(seg) == 2 and method == "PUT":
            return self._lfs_upload(seg[1])
        if seg[:1] == ["lfs-verify"] and len(seg) == 2 and method == "POST":
            return self._lfs_verify(seg[1])
        # Git LFS batch endpoint: /{prefix}{namespace}/{name}.git/info/lfs/objects/batch
        if seg[-4:] == ["info", "lfs", "objects", "batch"] and method == "POST":
            repo_type, repo_path = self._split_repo_url(seg[:-4])
            if len(repo_path) == 2 and repo_path[1].endswith(".git"):
                with hub._lock:
                    return self._lfs_batch(repo_type, f"{repo_path[0]}/{repo_path[1][: -len('.git')]}")
        # File download: /{prefix}{namespace}/{name}/resolve/{rev}/{path}
        if method in ("GET", "HEAD"):
            repo_type, repo_path = self._split_repo_url(seg)
            if len(repo_path) >= 5 and repo_path[2] == "resolve":
                with hub._lock:
                    return self._resolve(repo_type, f"{repo_path[0]}/{repo_path[1]}", repo_path[3:])
        raise HubError(404, f"Not found: {method} {self.path}")

    @staticmethod
    def _split_repo_url(seg: list[str]) -> tuple[str, list[str]]:
        if seg and seg[0] in REPO_TYPES and seg[0] != "models":
            return REPO_TYPES[seg[0]], seg[1:]
        return "model", seg

    def _repo_api(self, method: str, repo_type: str, repo_id: str, action: list[str]) -> _Response:
        repo = self._get_repo(repo_type, repo_id)
        verb = action[0] if action else ""
        if method == "GET" and verb == "":
            return self._repo_info(repo, "main")
        if method == "GET" and verb == "revision" and len(action) >= 2:
            return self._repo_info(repo, "/".join(action[1:]))
        if method == "GET" and verb == "tree" and len(action) >= 2:
            revision, path = _split_revision(action[1:])
            return self._tree(repo, revision, "/".join(path))
        if method == "POST" and verb == "paths-info" and len(action) >= 2:
            return self._paths_info(repo, "/".join(action[1:]))
        if method == "POST" and verb == "preupload" and len(action) >= 2:
            return self._preupload(repo, "/".join(action[1:]))
        if method == "POST" and verb == "commit" and len(action) >= 2:
            return self._commit(repo, "/".join(action[1:]))
        if method == "GET" and verb == "refs":
            return self._refs(repo)
        if method == "GET" and verb == "commits" and len(action) >= 2:
            return self._list_commits(repo, "/".join(action[1:]))
        if verb == "branch" and len(action) >= 2 and method in ("POST", "DELETE"):
            return self._branch(method, repo, "/".join(action[1:]))
        if verb == "tag" and len(action) >= 2 and method in ("POST", "DELETE"):
            return self._tag(method, repo, "/".join(action[1:]))
        if method == "PUT" and verb == "settings":
            return self._settings(repo)
        raise HubError(404, f"Not found: {method} {self.path}")

    # ------------------------------------------------------------------ lookups

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self.hub._repos.get((repo_type, repo_id))
        # Like the Hub, a private repo looks missing to anonymous requests (the token itself is never checked).
        if repo is None or (repo.private and not self.headers.get("Authorization")):
            raise HubError(404, "Repository not found", error_code="RepoNotFound")
        return repo

    @staticmethod
    def _get_commit(repo: _Repo, revision: str) -> _Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")
        return commit

    def _url(self, repo: _Repo, suffix: str = "") -> str:
        return f"{self.hub.endpoint}/{repo.prefix}{repo.repo_id}{suffix}"

    # ------------------------------------------------------------------ account / repos

    def _whoami(self) -> _Response:
        if not self.headers.get("Authorization"):
            raise HubError(401, "Invalid credentials in Authorization header")
        return _json_response(
            {
                "type": "user",
                "id": "0" * 24,
                "name": DEFAULT_USER,
                "fullname": "Hub Test User",
                "email": None,
                "emailVerified": False,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            }
        )

    def _repo_ref_from_payload(self) -> tuple[str, str, dict]:
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        name = payload.get("name")
        if not name:
            raise HubError(400, "Missing repo name.")
        return repo_type, f"{payload.get('organization') or DEFAULT_USER}/{name}", payload

    def _create_repo(self) -> _Response:
        repo_type, repo_id, payload = self._repo_ref_from_payload()
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        with self.hub._lock:
            existing = self.hub._repos.get((repo_type, repo_id))
            if existing is not None:
                # `HfApi.create_repo(exist_ok=True)` swallows exactly this 409.
                raise HubError(409, f"You already created this {repo_type} repo", url=self._url(existing))
            repo = self.hub._create_repo(repo_type, repo_id, private)
            return _json_response({"url": self._url(repo), "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> _Response:
        repo_type, repo_id, _ = self._repo_ref_from_payload()
        with self.hub._lock:
            self._get_repo(repo_type, repo_id)
            del self.hub._repos[(repo_type, repo_id)]
        return _Response(200, b"", {"Content-Type": "text/plain"})

    def _settings(self, repo: _Repo) -> _Response:
        payload = self._json_body()
        if "private" in payload:
            repo.private = bool(payload["private"])
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        return _json_response({})

    # ------------------------------------------------------------------ reads

    def _file_entry(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict:
        blob = commit.files[path]
        entry: dict[str, Any] = {"type": "file", "oid": blob.oid, "size": blob.size, "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
        if expand:
            entry["lastCommit"] = self._last_commit(repo, commit, lambda files: files.get(path))
            entry["securityFileStatus"] = {
                "status": "safe",
                "avScan": {"virusFound": False, "virusNames": None},
                "pickleImportScan": None,
            }
        return entry

    def _folder_entry(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict:
        prefix = path + "/"
        entries = [(p, b.oid) for p, b in commit.files.items() if p.startswith(prefix)]
        entry: dict[str, Any] = {"type": "directory", "oid": _tree_oid(entries), "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = self._last_commit(
                repo, commit, lambda files: _tree_oid([(p, b.oid) for p, b in files.items() if p.startswith(prefix)])
            )
        return entry

    @staticmethod
    def _last_commit(repo: _Repo, commit: _Commit, state) -> dict:
        """Newest commit, reachable from `commit`, that changed `state(files)` (a file, or a folder's tree oid)."""
        current = commit
        value = state(current.files)
        while current.parent is not None:
            parent = repo.commits[current.parent]
            if state(parent.files) != value:
                break
            current = parent
        return {"id": current.sha, "title": current.title, "date": current.date}

    @staticmethod
    def _folders(commit: _Commit) -> set[str]:
        folders = set()
        for path in commit.files:
            parts = path.split("/")[:-1]
            folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return folders

    def _repo_info(self, repo: _Repo, revision: str) -> _Response:
        commit = self._get_commit(repo, revision)
        blobs = _parse_bool(self._param("blobs", "false"))
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=blob.size, blobId=blob.oid)
                if blob.lfs:
                    sibling["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.md5(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "createdAt": repo.created_at,
            "lastModified": commit.date,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(blob.size for blob in commit.files.values()),
        }
        card_data = _card_data(commit.files.get("README.md"))
        if card_data is not None:
            info["cardData"] = card_data
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            info["library_name"] = (card_data or {}).get("library_name")
            info["pipeline_tag"] = (card_data or {}).get("pipeline_tag")
            config = commit.files.get("config.json")
            if config is not None:
                try:
                    info["config"] = json.loads(config.content)
                except ValueError:
                    pass
        expand = self.query.get("expand", []) + self.query.get("expand[]", [])
        if expand:
            info = {key: value for key, value in info.items() if key in ("_id", "id", *expand)}
        return _json_response(info)

    def _tree(self, repo: _Repo, revision: str, path: str) -> _Response:
        commit = self._get_commit(repo, revision)
        recursive = _parse_bool(self._param("recursive", "false"))
        expand = _parse_bool(self._param("expand", "false"))
        path = path.strip("/")
        folders = self._folders(commit)
        if path and path not in folders:
            # Also for a file path: the clients then fall back to listing the parent folder.
            raise HubError(404, f"Entry not found: {path}", error_code="EntryNotFound", commit=commit.sha)
        prefix = path + "/" if path else ""
        entries = []
        for folder in sorted(folders):
            relative = folder[len(prefix) :]
            if folder.startswith(prefix) and (recursive or "/" not in relative):
                entries.append(self._folder_entry(repo, commit, folder, expand))
        for file_path in sorted(commit.files):
            relative = file_path[len(prefix) :]
            if file_path.startswith(prefix) and (recursive or "/" not in relative):
                entries.append(self._file_entry(repo, commit, file_path, expand))
        # A single page: without a `Link: <...>; rel="next"` header the client stops paginating.
        return _json_response(entries)

    def _paths_info(self, repo: _Repo, revision: str) -> _Response:
        commit = self._get_commit(repo, revision)
        # `HfApi.get_paths_info` posts a form (`paths=a&paths=b&expand=false`); accept JSON as well.
        if "json" in self.headers.get("Content-Type", ""):
            payload = self._json_body()
            paths, expand = payload.get("paths", []), _parse_bool(payload.get("expand", False))
        else:
            form = parse_qs(self.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), _parse_bool(form.get("expand", ["false"])[0])
        if isinstance(paths, str):
            paths = [paths]
        folders = self._folders(commit)
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                entries.append(self._file_entry(repo, commit, path, expand))
            elif path in folders:
                entries.append(self._folder_entry(repo, commit, path, expand))
        return _json_response(entries)

    def _refs(self, repo: _Repo) -> _Response:
        def ref(name: str, full: str, sha: str) -> dict:
            return {"name": name, "ref": full, "targetCommit": sha}

        branches = [ref(n, f"refs/heads/{n}", s) for n, s in repo.branches.items() if not n.startswith("refs/")]
        prs = [ref(n, n, s) for n, s in repo.branches.items() if n.startswith("refs/pr/")]
        data = {
            "branches": branches,
            "tags": [ref(n, f"refs/tags/{n}", s) for n, s in repo.tags.items()],
            "converts": [],
        }
        if self._param("include_prs"):
            data["pullRequests"] = prs
        return _json_response(data)

    def _list_commits(self, repo: _Repo, revision: str) -> _Response:
        commit = self._get_commit(repo, revision)
        return _json_response(
            [
                {
                    "id": c.sha,
                    "authors": [{"user": DEFAULT_USER}],
                    "date": c.date,
                    "title": c.title,
                    "message": c.message,
                    "formatted": {"title": c.title, "message": c.message},
                }
                for c in repo.history(commit.sha)
            ]
        )

    def _resolve(self, repo_type: str, repo_id: str, rest: list[str]) -> _Response:
        repo = self._get_repo(repo_type, repo_id)
        revision, path_segments = _split_revision(rest)
        commit = self._get_commit(repo, revision)
        path = "/".join(path_segments)
        blob = commit.files.get(path)
        if blob is None:
            # `X-Repo-Commit` lets `hf_hub_download` cache the absence of the file for this commit.
            raise HubError(404, f"Entry not found: {path}", error_code="EntryNotFound", commit=commit.sha)
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{blob.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        if blob.lfs:
            # On the Hub these come with a redirect to the CDN; serving the bytes directly is equivalent.
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(blob.size)
        content, status = blob.content, 200
        range_header = self.headers.get("Range")
        if range_header:
            start, end = _parse_range(range_header, blob.size)
            if start is None:
                headers["Content-Range"] = f"bytes */{blob.size}"
                return _Response(416, b"", headers)
            content, status = blob.content[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
        return _Response(status, content, headers)

    # ------------------------------------------------------------------ writes

    def _preupload(self, repo: _Repo, revision: str) -> _Response:
        # `create_pr` uploads target the base branch; the PR ref only appears at commit time.
        commit = self._get_commit(repo, revision)
        files = []
        for item in self._json_body().get("files", []):
            path = item["path"]
            sample = base64.b64decode(item.get("sample", ""))
            lfs = self.hub._is_lfs(commit, path, int(item.get("size", 0)), sample)
            existing = commit.files.get(path)
            # The client compares this remote oid with its local one to drop unchanged files from the commit:
            # sha256 for LFS files, git blob id for regular ones.
            oid = (existing.sha256 if existing.lfs else existing.oid) if existing is not None else None
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return _json_response({"files": files, "commitOid": commit.sha})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> _Response:
        repo = self._get_repo(repo_type, repo_id)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' operation is supported.")
        ref = (payload.get("ref") or {}).get("name")
        if ref is not None:
            self._get_commit(repo, ref)
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            stored = self.hub._lfs_objects.get(oid)
            if stored is None or len(stored) != size:
                # No `actions` at all means "already uploaded": the client then skips the object.
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/lfs-upload/{oid}?size={size}", "header": {}},
                    "verify": {"href": f"{self.hub.endpoint}/lfs-verify/{oid}", "header": {}},
                }
            objects.append(entry)
        return _json_response(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_upload(self, oid: str) -> _Response:
        with self.hub._lock:
            if self.hub._lfs_upload_failures:
                status = self.hub._lfs_upload_failures.pop(0)
                raise HubError(status, f"Injected LFS upload failure ({status}).")
        actual = hashlib.sha256(self.body).hexdigest()
        if actual != oid:
            raise HubError(400, f"sha256 mismatch: expected {oid}, got {actual}.")
        expected_size = self._param("size")
        if expected_size is not None and int(expected_size) != len(self.body):
            raise HubError(400, f"Size mismatch: expected {expected_size}, got {len(self.body)}.")
        with self.hub._lock:
            self.hub._lfs_objects[oid] = self.body
        return _Response(200, b"", {"ETag": f'"{hashlib.md5(self.body).hexdigest()}"'})

    def _lfs_verify(self, oid: str) -> _Response:
        payload = self._json_body()
        with self.hub._lock:
            stored = self.hub._lfs_objects.get(oid)
        if stored is None or ("size" in payload and int(payload["size"]) != len(stored)):
            raise HubError(404, f"LFS object {oid} was not uploaded.")
        return _json_response({"success": True})

    def _commit(self, repo: _Repo, revision: str) -> _Response:
        hub = self.hub
        if hub._commit_failures:
            status = hub._commit_failures.pop(0)
            raise HubError(status, f"Injected commit failure ({status}).")
        create_pr = _parse_bool(self._param("create_pr", "0"))
        if revision not in repo.branches:
            if repo.resolve(revision) is not None:
                raise HubError(400, f"Cannot commit to {revision!r}: not a branch.")
            raise HubError(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")
        base = repo.commits[repo.branches[revision]]
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of the payload must be the commit header.")
        header = lines[0]["value"]
        parent_commit = header.get("parentCommit")
        if parent_commit is not None and not base.sha.startswith(parent_commit.lower()):
            # `datasets`' `push_to_hub` refreshes and retries on exactly this status.
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(base.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "").strip("/")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}.")
                content = base64.b64decode(value["content"])
                # A regular file that should be in LFS is stored as LFS, like git with `.gitattributes` would.
                lfs = len(content) > 0 and hub._is_lfs(base, path, len(content), content[:512])
                files[path] = _Blob(content, lfs=lfs)
            elif key == "lfsFile":
                content = hub._lfs_objects.get(value.get("oid", ""))
                if content is None:
                    raise HubError(
                        422,
                        "Your push was rejected because an LFS pointer pointed to a file that does not exist. "
                        f"For instance: {path}",
                    )
                files[path] = _Blob(content, lfs=True)
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", error_code="EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                prefix = path + "/" if path else ""
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", error_code="EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise HubError(400, f"Unsupported commit operation {key!r}.")
        commit = _Commit(
            sha=hub._new_sha(repo),
            parent=base.sha,
            title=header.get("summary") or "",
            message=header.get("description") or "",
            date=_now(),
            files=files,
        )
        repo.commits[commit.sha] = commit
        pr_url = None
        if create_pr:
            repo.num_prs += 1
            repo.branches[f"refs/pr/{repo.num_prs}"] = commit.sha
            pr_url = self._url(repo, f"/discussions/{repo.num_prs}")
        else:
            repo.branches[revision] = commit.sha
        return _json_response(
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": self._url(repo, f"/commit/{commit.sha}"),
                "commitMessage": commit.title,
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            }
        )

    def _branch(self, method: str, repo: _Repo, branch: str) -> _Response:
        if method == "DELETE":
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", error_code="RevisionNotFound")
            if branch == "main":
                raise HubError(403, "Cannot delete the default branch.")
            del repo.branches[branch]
            return _json_response({})
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        starting_point = self._json_body().get("startingPoint") or "main"
        repo.branches[branch] = self._get_commit(repo, starting_point).sha
        return _json_response({})

    def _tag(self, method: str, repo: _Repo, name: str) -> _Response:
        if method == "DELETE":
            if name not in repo.tags:
                raise HubError(404, f"Invalid rev id: {name}", error_code="RevisionNotFound")
            del repo.tags[name]
            return _json_response({})
        # POST /tag/{revision} with `{"tag": name}`.
        tag = self._json_body().get("tag")
        if not tag:
            raise HubError(400, "Missing tag name.")
        if tag in repo.tags:
            raise HubError(409, f"Tag already exists: {tag}")
        repo.tags[tag] = self._get_commit(repo, name).sha
        return _json_response({})


def _parse_range(header: str, size: int) -> tuple[int | None, int]:
    """Parse one `bytes=a-b`, `bytes=a-` or `bytes=-n` range into inclusive bounds; `(None, 0)` if unsatisfiable."""
    spec = header.strip()
    if not spec.lower().startswith("bytes=") or "," in spec:
        raise HubError(400, f"Unsupported Range header: {header!r}")
    first, _, last = spec[len("bytes=") :].strip().partition("-")
    if first == "":
        length = int(last)
        start, end = max(size - length, 0), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return None, 0
    return start, end


def _card_data(readme: _Blob | None) -> dict | None:
    """YAML metadata of a `README.md` (the repo info's `cardData`), or `None`."""
    if readme is None:
        return None
    text = readme.content.decode(errors="replace")
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end == -1:
        return None
    try:
        import yaml  # a dependency of `datasets` and `transformers`; only needed for this field

        data = yaml.safe_load(text[3:end])
    except Exception:
        return None
    return data if isinstance(data, dict) else None
