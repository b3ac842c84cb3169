"""A local HTTP server on 127.0.0.1 that responds like Elasticsearch 8.x to fti's requests.

It follows the documented bulk API: NDJSON bodies that must end in a newline, a 200 response
with ``took``, ``errors`` and one item per action, each with its own ``status``. Data
streams (indices matching an installed template with ``data_stream``, or the built-in
``logs-*-*``) accept only ``create`` and need ``@timestamp``. A second ``create`` of one
``_id`` gets 409 ``version_conflict_engine_exception``. Values are checked against the
template's ``ip``, ``long`` and ``date`` mappings (400 ``document_parsing_exception``).
It also serves ``PUT _ilm/policy``, ``PUT _index_template`` and ``_delete_by_query`` with a
``term`` or ``range`` query, and rejects requests without the expected credential with 401
``security_exception``. A body over ``max_content_length`` gets 413 with an empty body, as
Elasticsearch does past ``http.max_content_length``. ``proxy_bodies`` plays a proxy in front of Elasticsearch that
responds to bulk requests with 200 and a body of its own, which indexes nothing.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class EsState:
    """Indices, templates and the failures the server returns next."""

    authorization: str
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    # index -> _id -> source
    documents: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Reject this many next bulk requests as a whole with 429.
    reject_requests: int = 0
    # _id -> item status to answer once (429, 503 ...) before accepting it.
    reject_items_once: dict[str, int] = field(default_factory=dict)
    # Raw 200 bodies sent in order in response to the next bulk requests, indexing nothing.
    proxy_bodies: list[bytes] = field(default_factory=list)
    # http.max_content_length: larger request bodies get 413 with an empty body.
    max_content_length: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _error(status: int, error_type: str, reason: str) -> tuple[int, dict[str, Any]]:
    cause = {"type": error_type, "reason": reason}
    return status, {"error": {"root_cause": [cause], **cause}, "status": status}


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in document.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _mapping_types(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    types: dict[str, str] = {}
    for name, spec in properties.items():
        if "properties" in spec:
            types.update(_mapping_types(spec["properties"], f"{prefix}{name}."))
        elif "type" in spec:
            types[f"{prefix}{name}"] = spec["type"]
    return types


class _EsHandler(BaseHTTPRequestHandler):
    server: "_EsHttpServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def do_PUT(self) -> None:  # noqa: N802 - stdlib name
        self._handle("PUT")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._handle("POST")

    def _handle(self, method: str) -> None:
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        with state.lock:
            state.requests.append({"method": method, "path": path, "body": raw})
            if state.max_content_length is not None and len(raw) > state.max_content_length:
                status, body = 413, b""
            elif path == "/_bulk" and state.proxy_bodies:
                status, body = 200, state.proxy_bodies.pop(0)
            else:
                status, payload = self._route(state, method, path, raw)
                body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, state: EsState, method: str, path: str,
               raw: bytes) -> tuple[int, dict[str, Any]]:
        if self.headers.get("Authorization") != state.authorization:
            return _error(401, "security_exception",
                          f"missing authentication credentials for REST request [{path}]")
        parts = path.strip("/").split("/")
        if method == "PUT" and parts[:2] == ["_ilm", "policy"] and len(parts) == 3:
            state.policies[parts[2]] = json.loads(raw)
            return 200, {"acknowledged": True}
        if method == "PUT" and parts[0] == "_index_template" and len(parts) == 2:
            state.templates[parts[1]] = json.loads(raw)
            return 200, {"acknowledged": True}
        if method == "POST" and parts == ["_bulk"]:
            return self._bulk(state, raw)
        if method == "POST" and len(parts) == 2 and parts[1] == "_delete_by_query":
            return self._delete_by_query(state, parts[0], json.loads(raw)["query"])
        return _error(400, "illegal_argument_exception", f"no handler for [{method} {path}]")

    def _template_for(self, state: EsState, index: str) -> dict[str, Any] | None:
        matches = [t for t in state.templates.values()
                   if any(fnmatch.fnmatch(index, p) for p in t["index_patterns"])]
        return max(matches, key=lambda t: t.get("priority", 0)) if matches else None

    def _bulk(self, state: EsState, raw: bytes) -> tuple[int, dict[str, Any]]:
        content_type = self.headers.get("Content-Type", "")
        if content_type.split(";")[0] not in ("application/x-ndjson", "application/json"):
            return 406, {"error": f"Content-Type header [{content_type}] is not supported",
                         "status": 406}
        if not raw.endswith(b"\n"):
            return _error(400, "illegal_argument_exception",
                          "The bulk request must be terminated by a newline [\\n]")
        if state.reject_requests > 0:
            state.reject_requests -= 1
            return _error(429, "es_rejected_execution_exception",
                          "rejected execution of coordinating operation")
        lines = raw.decode().splitlines()
        items = []
        for number in range(0, len(lines), 2):
            action = json.loads(lines[number])
            op, meta = next(iter(action.items()))
            source = json.loads(lines[number + 1])
            items.append({op: self._index_one(state, op, meta, source)})
        errors = any(next(iter(i.values()))["status"] >= 300 for i in items)
        return 200, {"took": 3, "errors": errors, "items": items}

    def _index_one(self, state: EsState, op: str, meta: dict[str, Any],
                   source: dict[str, Any]) -> dict[str, Any]:
        index, doc_id = meta["_index"], meta.get("_id")
        template = self._template_for(state, index)
        is_stream = (template is not None and "data_stream" in template) or \
            fnmatch.fnmatch(index, "logs-*-*")
        base = {"_index": index, "_id": doc_id}

        def failure(status: int, error_type: str, reason: str) -> dict[str, Any]:
            return {**base, "status": status,
                    "error": {"type": error_type, "reason": reason}}

        if doc_id in state.reject_items_once:
            status = state.reject_items_once.pop(doc_id)
            return failure(status, "es_rejected_execution_exception",
                           "rejected execution of primary operation")
        if is_stream and op != "create":
            return failure(400, "illegal_argument_exception",
                           "only write ops with an op_type of create are allowed in data streams")
        if is_stream and "@timestamp" not in source:
            return failure(400, "document_parsing_exception",
                           "[1:2] failed to parse: data stream timestamp field [@timestamp] is "
                           "missing")
        types = _mapping_types(template["template"]["mappings"]["properties"]) if template else {}
        for name, value in _flatten(source).items():
            problem = _value_problem(types.get(name), value)
            if problem:
                return failure(400, "document_parsing_exception",
                               f"[1:1] failed to parse field [{name}] of type [{types[name]}] in "
                               f"document with id '{doc_id}'. Preview of field's value: "
                               f"'{value}'")
        documents = state.documents.setdefault(index, {})
        if doc_id in documents:
            return failure(409, "version_conflict_engine_exception",
                           f"[{doc_id}]: version conflict, document already exists "
                           "(current version [1])")
        documents[doc_id] = source
        return {**base, "_version": 1, "result": "created", "status": 201,
                "_shards": {"total": 2, "successful": 1, "failed": 0},
                "_seq_no": len(documents) - 1, "_primary_term": 1}

    def _delete_by_query(self, state: EsState, index: str,
                         query: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if index not in state.documents:
            return _error(404, "index_not_found_exception", f"no such index [{index}]")
        documents = state.documents[index]
        doomed = [doc_id for doc_id, source in documents.items() if _matches(query, source)]
        for doc_id in doomed:
            del documents[doc_id]
        return 200, {"took": 2, "timed_out": False, "total": len(doomed),
                     "deleted": len(doomed), "batches": 1, "version_conflicts": 0, "noops": 0,
                     "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
                     "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": []}


def _value_problem(mapping_type: str | None, value: Any) -> bool:
    """Return whether Elasticsearch would fail to parse ``value`` for ``mapping_type``."""
    values = value if isinstance(value, list) else [value]
    for item in values:
        try:
            if mapping_type == "ip":
                ipaddress.ip_address(item)
            elif mapping_type == "long" and (isinstance(item, bool) or not isinstance(item, int)):
                return True
            elif mapping_type == "date":
                datetime.fromisoformat(str(item).replace("Z", "+00:00"))
        except ValueError:
            return True
    return False


def _matches(query: dict[str, Any], source: dict[str, Any]) -> bool:
    flat = _flatten(source)
    kind, clause = next(iter(query.items()))
    name, condition = next(iter(clause.items()))
    if kind == "term":
        return flat.get(name) == condition
    if kind == "range":
        value = flat.get(name)
        if value is None:
            return False
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment < datetime.fromisoformat(condition["lt"].replace("Z", "+00:00"))
    raise ValueError(f"query {kind} not supported by this server")


class _EsHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: EsState) -> None:
        super().__init__(("127.0.0.1", 0), _EsHandler)
        self.state = state


class EsServer:
    """Run the fake Elasticsearch on a free port of 127.0.0.1; use as a context manager."""

    def __init__(self, *, authorization: str) -> None:
        self.state = EsState(authorization=authorization)
        self._server = _EsHttpServer(self.state)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "EsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
