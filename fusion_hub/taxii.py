"""TAXII 2.1 server of the hub, as a Flask application.

Endpoints (OASIS TAXII 2.1, sections 4 and 5), with ``<root>`` the configured API root::

    GET  /taxii2/                                        discovery
    GET  /<root>/                                        API root information
    GET  /<root>/collections/                            collections
    GET  /<root>/collections/<id>/                       one collection
    GET  /<root>/collections/<id>/objects/               get objects (paged)
    POST /<root>/collections/<id>/objects/               add objects (envelope)
    GET  /<root>/collections/<id>/objects/<object-id>/   get one object's versions (paged)
    DELETE /<root>/collections/<id>/objects/<object-id>/ delete versions the caller posted
    GET  /<root>/collections/<id>/objects/<object-id>/versions/
    GET  /<root>/collections/<id>/manifest/              object manifests (paged)
    GET  /<root>/status/<status-id>/                     status of an add request
    GET  /metrics                                        Prometheus text, outside TAXII

Media types are negotiated as section 1.6.8 requires. Every TAXII response, errors included,
carries exactly ``Content-Type: application/taxii+json;version=2.1``, because taxii2-client
rejects anything else. A request whose ``Accept`` allows no TAXII 2.1 response gets 406; an
``application/taxii+json`` without ``version`` is read as 2.1. A POST whose body is not
``application/taxii+json`` gets 415. Errors are TAXII error resources (section 3.6.1).

Objects are served in ``date_added`` order, then by id. ``limit``, ``next`` and ``more`` page
through them (section 3.4). ``X-TAXII-Date-Added-First`` and ``-Last`` carry the first and last
``date_added`` of the page, with microseconds.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cheroot.errors import MaxSizeExceeded
from flask import Flask, Response, g, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from fusion_hub.auth import Authenticator
from fusion_hub.config import HubConfig
from fusion_hub.envelope import read_envelope
from fusion_hub.errors import (
    EnvelopeInvalid,
    EnvelopeTooManyObjects,
    PaginationTokenInvalid,
    TaxiiError,
)
from fusion_hub.intake import Intake
from fusion_hub.metrics import METRICS_CONTENT_TYPE, HubMetrics
from fusion_hub.pagination import PageTokens, query_fingerprint
from fusion_hub.ratelimit import RateLimiter, SharedRateLimiter, retry_after_header
from fusion_hub.registry import Principal
from fusion_hub.storage import HubStorage, ObjectPage, ObjectQuery, StoredObject, VersionFilter
from fusion_hub.timeutil import format_micros, parse_timestamp, to_micros
from stix_mappings.ids import COLLECTIONS, collection_id

log = logging.getLogger(__name__)

# Maximum time spent reading and dropping the rest of an oversized request body.
DRAIN_SECONDS = 5.0

# Most distinct values of one list filter (match[id], match[type], match[spec_version],
# match[version]). Each value becomes a query parameter, and PostgreSQL takes at most 65,535
# parameters per statement.
MAX_FILTER_VALUES = 1000
_DIGITS = re.compile(r"[0-9]+")

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"

_COLLECTION_DESCRIPTIONS = {
    "summaries": "Signed, differentially private round summaries; each site reads only its own.",
    "fused-indicators": "STIX indicators fused from the summaries of several sites.",
    "feedback": "Opinions of sites on fused indicators; each site reads only its own.",
    "keys": "Public keys and encrypted shares exchanged by sites in secure mode.",
}


@dataclass(frozen=True)
class HubServices:
    """The parts of the hub that the HTTP layer calls."""

    config: HubConfig
    storage: HubStorage
    authenticator: Authenticator
    intake: Intake
    metrics: HubMetrics
    page_tokens: PageTokens
    rate_limiter: RateLimiter | SharedRateLimiter


def accepts_taxii21(header: str | None) -> bool:
    """Return whether an ``Accept`` header allows a TAXII 2.1 response.

    A missing header accepts anything (RFC 9110, section 12.5.1); wildcards and
    ``application/taxii+json`` with no version or version 2.1 qualify, unless ``q=0``.
    """
    if header is None or not header.strip():
        return True
    for item in header.split(","):
        media_type, params = _parse_media_type(item)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        if quality <= 0:
            continue
        if media_type in ("*/*", "application/*"):
            return True
        if media_type == "application/taxii+json" and params.get("version", "2.1") == "2.1":
            return True
    return False


def is_taxii21_content_type(header: str | None) -> bool:
    """Return whether a request ``Content-Type`` is a TAXII 2.1 envelope."""
    if not header:
        return False
    media_type, params = _parse_media_type(header)
    return media_type == "application/taxii+json" and params.get("version", "2.1") == "2.1"


def _parse_media_type(text: str) -> tuple[str, dict[str, str]]:
    # Media types and parameter names are case-insensitive (RFC 9110, section 8.3.1).
    parts = text.split(";")
    params: dict[str, str] = {}
    for part in parts[1:]:
        name, _, value = part.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return parts[0].strip().lower(), params


def taxii_response(
    body: str | Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Return a response with the exact TAXII 2.1 media type."""
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    response = Response(text, status=status, content_type=TAXII_MEDIA_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def create_app(services: HubServices) -> Flask:
    """Build the Flask application serving TAXII 2.1 and ``/metrics`` for one hub."""
    config = services.config
    app = Flask("fusion_hub")
    app.config["MAX_CONTENT_LENGTH"] = config.hub.max_content_length_bytes
    root = config.hub.api_root
    names_by_id = {collection_id(name): name for name in COLLECTIONS}

    def begin_request() -> None:
        g.request_id = uuid.uuid4().hex[:16]
        g.started = time.perf_counter()
        g.principal = None
        if request.path == "/metrics":
            return
        # Negotiate before authenticating: a 2.0 client learns it cannot talk to this server
        # even without credentials.
        if not accepts_taxii21(request.headers.get("Accept")):
            raise TaxiiError(406, "Not Acceptable",
                             "this server speaks TAXII 2.1 only; send Accept: "
                             f"{TAXII_MEDIA_TYPE}")
        # No TAXII id, type, timestamp or token contains a NUL, and PostgreSQL text values
        # cannot hold one, so a query with it would fail in the database.
        if "\x00" in request.path or any("\x00" in key or "\x00" in value
                                          for key, value in request.args.items(multi=True)):
            raise TaxiiError(400, "Bad Request",
                             "the URL contains a NUL character (%00); remove it")
        g.principal = services.authenticator.authenticate(
            request.headers.get("Authorization"), request.remote_addr
        )
        wait_secs = services.rate_limiter.acquire(g.principal.name)
        if wait_secs > 0:
            services.metrics.rate_limited.labels(credential_kind=g.principal.kind).inc()
            raise TaxiiError(429, "Too Many Requests",
                             f"{g.principal.name} exceeded {config.hub.rate_limit_per_minute} "
                             "requests per minute; retry after the Retry-After delay",
                             headers={"Retry-After": retry_after_header(wait_secs)})

    def finish_request(response: Response) -> Response:
        elapsed = time.perf_counter() - getattr(g, "started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        services.metrics.requests.labels(method=request.method, endpoint=endpoint,
                                         status=str(response.status_code)).inc()
        services.metrics.request_seconds.labels(endpoint=endpoint).observe(elapsed)
        request_id = getattr(g, "request_id", "-")
        response.headers["X-Request-ID"] = request_id
        principal = getattr(g, "principal", None)
        log.info("request %s %s %s %s %d %.1f ms", request_id,
                 principal.name if principal is not None else "-", request.method, request.path,
                 response.status_code, elapsed * 1000)
        return response

    app.before_request(begin_request)
    app.after_request(finish_request)
    _register_error_handlers(app)

    def current_principal() -> Principal:
        principal = g.principal
        if principal is None:
            raise TaxiiError(401, "Unauthorized", "send HTTP Basic credentials")
        return principal

    def collection_name(collection: str) -> str:
        name = names_by_id.get(collection)
        if name is None:
            raise TaxiiError(404, "Collection Not Found",
                             f"no collection with id {collection}; list them at /{root}/collections/")
        return name

    def readable_collection(collection: str) -> tuple[str, Principal]:
        name = collection_name(collection)
        principal = current_principal()
        if not principal.may_read(name):
            raise TaxiiError(403, "Forbidden", f"{principal.name} may not read collection {name}")
        return name, principal

    def collection_resource(name: str, principal: Principal) -> dict[str, Any]:
        return {
            "id": collection_id(name),
            "title": name,
            "description": _COLLECTION_DESCRIPTIONS[name],
            "can_read": principal.may_read(name),
            "can_write": principal.may_write(name),
            "media_types": [STIX_MEDIA_TYPE],
        }

    def api_root_url() -> str:
        return f"{request.url_root}{root}/"

    @app.get("/taxii2/", strict_slashes=False)
    def discovery() -> Response:
        return taxii_response({
            "title": config.hub.title,
            "description": "fti fusion hub: federated, differentially private threat "
                           "intelligence",
            "default": api_root_url(),
            "api_roots": [api_root_url()],
        })

    @app.get(f"/{root}/", strict_slashes=False)
    def api_root_information() -> Response:
        return taxii_response({
            "title": config.hub.title,
            "description": "Round summaries in, fused indicators out.",
            "versions": [TAXII_MEDIA_TYPE],
            "max_content_length": config.hub.max_content_length_bytes,
        })

    @app.get(f"/{root}/collections/", strict_slashes=False)
    def collections() -> Response:
        principal = current_principal()
        return taxii_response(
            {"collections": [collection_resource(name, principal) for name in COLLECTIONS]}
        )

    @app.get(f"/{root}/collections/<collection>/", strict_slashes=False)
    def collection_information(collection: str) -> Response:
        return taxii_response(collection_resource(collection_name(collection),
                                                  current_principal()))

    @app.get(f"/{root}/collections/<collection>/objects/", strict_slashes=False)
    def get_objects(collection: str) -> Response:
        name, principal = readable_collection(collection)
        query, fingerprint = _build_query(services, name, principal, "objects", object_id=None,
                                          default_version="last")
        page = services.storage.query_objects(query)
        return _envelope_response(services, page, fingerprint)

    @app.post(f"/{root}/collections/<collection>/objects/", strict_slashes=False)
    def add_objects(collection: str) -> Response:
        name = collection_name(collection)
        principal = current_principal()
        if not principal.may_write(name):
            raise TaxiiError(403, "Forbidden", f"{principal.name} may not add objects to "
                                               f"collection {name}")
        if not is_taxii21_content_type(request.headers.get("Content-Type")):
            raise TaxiiError(415, "Unsupported Media Type",
                             f"Add Objects takes a TAXII envelope sent as {TAXII_MEDIA_TYPE}; "
                             f"got {request.headers.get('Content-Type')!r}")
        try:
            body = request.get_data(cache=False)
            # Werkzeug cuts a chunked body (cheroot passes it on unbuffered) at
            # max_content_length without an error. Reading on past the limit raises 413, so a
            # cut envelope is never parsed. A chunked body of exactly the limit gets 413 too.
            if (request.content_length is None
                    and len(body) >= config.hub.max_content_length_bytes):
                request.stream.read(1)
        except MaxSizeExceeded:
            # A single chunk that crosses cheroot's own cap, which is above
            # max_content_length. Its data is not drained like other oversized bodies:
            # nothing after it can be framed, and the connection closes.
            raise TaxiiError(413, "Request Entity Too Large", too_large_description(
                config.hub.max_content_length_bytes)) from None
        except ClientDisconnected as err:
            # Werkzeug raises this for a malformed chunked body too, inside the handler of
            # the error that it replaces.
            reason = err.__context__ or "the client closed the connection"
            raise TaxiiError(400, "Bad Request",
                             f"the request body could not be read: {reason}") from err
        # The intake reads the objects as it checks and stores them. It may find only then
        # that the envelope needs the strict parser, which can still reject it.
        try:
            objects = read_envelope(body, max_objects=config.hub.max_objects_per_request)
            status_text = services.intake.add_objects_and_save_status(name, principal, objects)
        except EnvelopeInvalid as err:
            raise TaxiiError(400, "Bad Request", str(err)) from err
        except EnvelopeTooManyObjects as err:
            raise TaxiiError(413, "Payload Too Large", str(err)) from err
        return taxii_response(status_text, 202)

    @app.get(f"/{root}/collections/<collection>/objects/<object_id>/", strict_slashes=False)
    def get_object(collection: str, object_id: str) -> Response:
        name, principal = readable_collection(collection)
        _require_object(services, name, principal, object_id)
        query, fingerprint = _build_query(services, name, principal, "object",
                                          object_id=object_id, default_version="last")
        page = services.storage.query_objects(query)
        return _envelope_response(services, page, fingerprint)

    @app.delete(f"/{root}/collections/<collection>/objects/<object_id>/", strict_slashes=False)
    def delete_object(collection: str, object_id: str) -> Response:
        name, principal = readable_collection(collection)
        if not principal.may_write(name):
            raise TaxiiError(403, "Forbidden", f"{principal.name} may not delete objects from "
                                               f"collection {name}")
        _require_object(services, name, principal, object_id)

        # Section 5.7 allows only match[version] and match[spec_version]; without
        # match[version] every version of the object is deleted.
        args = {key: ",".join(values) for key, values in request.args.to_dict(flat=False).items()}
        query = ObjectQuery(
            collection_id=collection_id(name), limit=1, ids=(object_id,),
            spec_versions=_filter_values(args, "match[spec_version]"),
            versions=_parse_versions(args.get("match[version]", "all")),
        )
        deleted, kept_contributions = services.storage.delete_objects(query,
                                                                      owner=principal.name)
        if deleted == 0 and kept_contributions > 0:
            raise TaxiiError(403, "Forbidden", f"{object_id} is a round contribution that "
                                               "fusion uses; round evidence cannot be deleted")
        filtered = "match[version]" in args or "match[spec_version]" in args
        if deleted == 0 and filtered and services.storage.object_exists(
                collection_id(name), object_id, None, posted_by=principal.name):
            raise TaxiiError(404, "Object Not Found",
                             f"no version of {object_id} that {principal.name} posted matches "
                             "match[version] and match[spec_version]")
        if deleted == 0:
            raise TaxiiError(403, "Forbidden", f"{principal.name} may delete only versions it "
                                               f"posted, and none of {object_id} matches")
        log.info("%s deleted %d versions of %s from collection %s (%d round contributions "
                 "kept)", principal.name, deleted, object_id, name, kept_contributions)
        return taxii_response("", 200)

    @app.get(f"/{root}/collections/<collection>/objects/<object_id>/versions/",
             strict_slashes=False)
    def get_object_versions(collection: str, object_id: str) -> Response:
        name, principal = readable_collection(collection)
        _require_object(services, name, principal, object_id)
        query, fingerprint = _build_query(services, name, principal, "versions",
                                          object_id=object_id, default_version="all")
        page = services.storage.query_objects(query)
        body: dict[str, Any] = _page_head(services, page, fingerprint)
        if page.objects:
            body["versions"] = [_version_text(obj) for obj in page.objects]
        return taxii_response(body, headers=_date_added_headers(page))

    @app.get(f"/{root}/collections/<collection>/manifest/", strict_slashes=False)
    def get_manifest(collection: str) -> Response:
        name, principal = readable_collection(collection)
        query, fingerprint = _build_query(services, name, principal, "manifest",
                                          object_id=None, default_version="last")
        page = services.storage.query_objects(query)
        body: dict[str, Any] = _page_head(services, page, fingerprint)
        if page.objects:
            body["objects"] = [
                {"id": obj.id, "date_added": format_micros(obj.date_added_us),
                 "version": _version_text(obj), "media_type": STIX_MEDIA_TYPE}
                for obj in page.objects
            ]
        return taxii_response(body, headers=_date_added_headers(page))

    @app.get(f"/{root}/status/<status_id>/", strict_slashes=False)
    def get_status(status_id: str) -> Response:
        principal = current_principal()
        stored = services.storage.load_status(status_id)
        # Another caller's status is reported as missing, so a status id reveals nothing.
        if stored is None or stored[0] != principal.name:
            raise TaxiiError(404, "Status Not Found", f"no status resource {status_id} for "
                                                      f"{principal.name}")
        return taxii_response(stored[1])

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(services.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    return app


def _register_error_handlers(app: Flask) -> None:
    def error_response(status: int, title: str, description: str,
                       headers: Mapping[str, str] | None = None) -> Response:
        body = {
            "title": title,
            "description": description,
            "error_id": getattr(g, "request_id", ""),
            # TAXII 2.1 section 3.6.1 types http_status as a string.
            "http_status": str(status),
        }
        return taxii_response(body, status, headers)

    @app.errorhandler(TaxiiError)
    def handle_taxii_error(err: TaxiiError) -> Response:
        return error_response(err.http_status, err.title, err.description, err.headers)

    @app.errorhandler(HTTPException)
    def handle_http_exception(err: HTTPException) -> Response:
        status = err.code or 500
        headers = {}
        allowed = err.get_headers()
        for name, value in allowed:
            if name.lower() == "allow":
                headers["Allow"] = value
        description = err.description or err.name
        if status == 413:
            drain_input(request.environ, getattr(g, "request_id", "-"))
            description = too_large_description(app.config["MAX_CONTENT_LENGTH"])
        return error_response(status, err.name, description, headers)

    @app.errorhandler(Exception)
    def handle_unexpected(err: Exception) -> Response:
        log.exception("request %s %s %s failed", getattr(g, "request_id", "-"), request.method,
                      request.path)
        return error_response(500, "Internal Server Error",
                              "the hub failed to process the request; the hub log names it by "
                              "error_id")


def too_large_description(max_content_length: int) -> str:
    """Return the description of a 413 for a body over ``max_content_length`` bytes."""
    return (f"the request body is larger than max_content_length ({max_content_length} "
            "bytes); send fewer objects per request")


def drain_input(environ: dict[str, Any], request_id: str) -> None:
    """Read and drop the rest of a request body, starting no read after ``DRAIN_SECONDS``.

    The client has then sent its whole body when the 413 goes out. cheroot, the TLS server,
    closes the connection after a 413 with any unread body left, which makes the kernel
    reset it, and the client may see that reset instead of the response. cheroot stops the
    body at its own size cap (Content-Length or chunked).

    NOTE: one read waits for 64 KiB, or until the client pauses for cheroot's socket timeout
    (10 s), so a client that trickles its body holds the worker thread for longer. Reading
    any request body over TLS has the same exposure.
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    deadline = time.monotonic() + DRAIN_SECONDS
    try:
        while stream.read(65536) and time.monotonic() < deadline:
            pass
    # cheroot's size cap, a malformed chunk, a timeout or a closed connection end it.
    except (MaxSizeExceeded, OSError, ValueError) as err:
        log.info("request %s: stopped reading an oversized body from %s: %s",
                 request_id, environ.get("REMOTE_ADDR"), err)


def _require_object(
    services: HubServices, name: str, principal: Principal, object_id: str
) -> None:
    visible_to = principal.name if principal.sees_only_own(name) else None
    if not services.storage.object_exists(collection_id(name), object_id, visible_to):
        raise TaxiiError(404, "Object Not Found", f"no object {object_id} in collection {name}")


def _build_query(
    services: HubServices, name: str, principal: Principal, endpoint: str, *,
    object_id: str | None, default_version: str,
) -> tuple[ObjectQuery, str]:
    """Turn the request's URL parameters into a storage query (TAXII 2.1 section 3.5)."""
    args = {key: ",".join(values) for key, values in request.args.to_dict(flat=False).items()}
    settings = services.config.hub

    limit = settings.default_page_size
    if "limit" in args:
        # ASCII digits only: int() would also take "1_000", " 5" and digits of other scripts.
        limit = 0
        if _DIGITS.fullmatch(args["limit"]):
            digits = args["limit"].lstrip("0")
            # Past nine digits a limit exceeds any page size, and int() rejects thousands.
            limit = int(digits or "0") if len(digits) <= 9 else settings.max_page_size
        if limit < 1:
            raise TaxiiError(400, "Bad Request", f"limit must be a whole number >= 1; got "
                                                 f"{args['limit']!r}")
        # TAXII lets the server return fewer objects than asked.
        limit = min(limit, settings.max_page_size)

    added_after_us = None
    if "added_after" in args:
        added_after_us = _parse_time_parameter("added_after", args["added_after"])

    versions = _parse_versions(args.get("match[version]", default_version))
    ids = (object_id,) if object_id is not None else _filter_values(args, "match[id]")
    types = () if object_id is not None else _filter_values(args, "match[type]")

    fingerprint = query_fingerprint(
        principal.name, f"{endpoint}:{collection_id(name)}:{object_id or ''}", args
    )
    after = None
    if "next" in args:
        try:
            after = services.page_tokens.resolve(args["next"], fingerprint)
        except PaginationTokenInvalid as err:
            raise TaxiiError(400, "Bad Request", str(err)) from err

    query = ObjectQuery(
        collection_id=collection_id(name), limit=limit, added_after_us=added_after_us,
        ids=ids, types=types, spec_versions=_filter_values(args, "match[spec_version]"),
        versions=versions,
        visible_to=principal.name if principal.sees_only_own(name) else None, after=after,
    )
    return query, fingerprint


def _parse_versions(text: str) -> VersionFilter:
    tokens = tuple(dict.fromkeys(_split(text)))
    if not tokens:
        raise TaxiiError(400, "Bad Request", "match[version] must list first, last, all or "
                                             f"timestamps, separated by commas; got {text!r}")
    if len(tokens) > MAX_FILTER_VALUES:
        raise TaxiiError(400, "Bad Request",
                         f"match[version] lists {len(tokens)} values; at most "
                         f"{MAX_FILTER_VALUES} are accepted, so split the query")
    first = last = every = False
    exact: list[int] = []
    for token in tokens:
        if token == "first":
            first = True
        elif token == "last":
            last = True
        elif token == "all":
            every = True
        else:
            exact.append(_parse_time_parameter("match[version]", token))
    return VersionFilter(first=first, last=last, all=every, exact_us=tuple(exact))


def _parse_time_parameter(name: str, value: str) -> int:
    try:
        return to_micros(parse_timestamp(value))
    except ValueError as err:
        raise TaxiiError(400, "Bad Request", f"{name} must be a timestamp such as "
                                             f"2024-05-01T10:00:00.000Z; got {value!r}") from err


def _filter_values(args: dict[str, str], name: str) -> tuple[str, ...]:
    """Return the distinct values of a list filter such as ``match[id]``, in order.

    Raises
    ------
    TaxiiError
        400 when the filter is given without a value or with more than
        ``MAX_FILTER_VALUES`` distinct values.
    """
    if name not in args:
        return ()
    values = tuple(dict.fromkeys(_split(args[name])))
    if not values:
        raise TaxiiError(400, "Bad Request", f"{name} must list at least one value, "
                                             "separated by commas")
    if len(values) > MAX_FILTER_VALUES:
        raise TaxiiError(400, "Bad Request",
                         f"{name} lists {len(values)} values; at most {MAX_FILTER_VALUES} are "
                         "accepted, so split the query")
    return values


def _split(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _page_head(services: HubServices, page: ObjectPage, fingerprint: str) -> dict[str, Any]:
    head: dict[str, Any] = {"more": page.more}
    if page.more and page.objects:
        last = page.objects[-1]
        head["next"] = services.page_tokens.issue(fingerprint, last.date_added_us, last.id)
    return head


def _envelope_response(services: HubServices, page: ObjectPage, fingerprint: str) -> Response:
    head = json.dumps(_page_head(services, page, fingerprint), ensure_ascii=False)
    if page.objects:
        # Objects go out as the exact text they were stored with.
        text = head[:-1] + ',"objects":[' + ",".join(obj.raw for obj in page.objects) + "]}"
    else:
        text = head
    return taxii_response(text, headers=_date_added_headers(page))


def _date_added_headers(page: ObjectPage) -> dict[str, str]:
    if not page.objects:
        return {}
    return {
        "X-TAXII-Date-Added-First": format_micros(page.objects[0].date_added_us),
        "X-TAXII-Date-Added-Last": format_micros(page.objects[-1].date_added_us),
    }


def _version_text(obj: StoredObject) -> str:
    try:
        parsed = json.loads(obj.raw)
    except ValueError:
        parsed = {}
    for name in ("modified", "created"):
        if isinstance(parsed.get(name), str):
            return str(parsed[name])
    return format_micros(obj.version_us)
