"""Open the hub's TAXII collections with taxii2-client, with a timeout on every request.

taxii2-client 2.3 takes no timeout argument, so a hung hub would block the agent forever;
the connection built here gives its ``requests`` session a default timeout. It also checks
the ``Content-Type`` of POST responses, which taxii2-client checks only on GET.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import requests
from taxii2client.common import _HTTPConnection, _to_json
from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import ApiRoot, Collection, Server

from agent.config import HubSection
from agent.errors import DeliveryError


TAXII21_MEDIA_TYPE = "application/taxii+json;version=2.1"


def is_taxii21_media_type(content_type: str | None) -> bool:
    """Return whether a response ``Content-Type`` passes taxii2-client 2.3's TAXII 2.1 check.

    That check, applied to every GET, ignores spaces and extra parameters but compares
    case-sensitively, so ``Application/TAXII+json; Version=2.1`` fails although media types
    are case-insensitive (RFC 9110, section 8.3.1). POST responses are held to the same rule,
    so the agent never accepts from a server what its reads of that server would reject.
    """
    tokens = (content_type or "").replace(" ", "").split(";")
    return tokens[0] == "application/taxii+json" and "version=2.1" in tokens[1:]


class _MediaTypeCheckingConnection(_HTTPConnection):
    """A taxii2-client connection that rejects POST responses of another media type."""

    def post(self, url, headers=None, params=None, **kwargs):  # type: ignore[no-untyped-def]
        response = self.session.post(url, headers=headers, params=params, **kwargs)
        response.raise_for_status()
        received = response.headers.get("Content-Type")
        if not is_taxii21_media_type(received):
            raise TAXIIServiceException(f"{url} returned Content-Type {received!r}, expected "
                                        f"{TAXII21_MEDIA_TYPE!r}")
        return _to_json(response)


class _TimeoutSession(requests.Session):
    """A session with a default timeout that keeps the headers of its last response.

    taxii2-client returns only the body, but a reader's checkpoint needs the
    ``X-TAXII-Date-Added-Last`` header of each page.
    """

    def __init__(self, timeout_secs: float) -> None:
        super().__init__()
        self.timeout_secs = timeout_secs
        self.last_headers: Mapping[str, str] = {}

    def request(self, method: str, url: str, **kwargs: object) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout_secs)
        response = super().request(method, url, **kwargs)
        self.last_headers = response.headers
        return response


def last_date_added(collection: Collection) -> str | None:
    """Return ``X-TAXII-Date-Added-Last`` of the collection's last response, if it had one.

    Only collections opened through :func:`open_collection` keep headers. For any other,
    None is returned.
    """
    session = getattr(getattr(collection, "_conn", None), "session", None)
    if not isinstance(session, _TimeoutSession):
        return None
    return session.last_headers.get("X-TAXII-Date-Added-Last")


def connect(hub: HubSection, password: str) -> _HTTPConnection:
    """Return a taxii2-client connection whose every request has a timeout."""
    connection = _MediaTypeCheckingConnection(user=hub.username, password=password, verify=hub.verify_tls, version="2.1")
    session = _TimeoutSession(hub.timeout_secs)
    session.verify = connection.session.verify
    session.auth = connection.session.auth
    connection.session = session
    return connection


def open_collection(hub: HubSection, password: str, title: str) -> Collection:
    """Find a collection by title (or id) through the hub's discovery resource.

    Raises
    ------
    DeliveryError
        Transient when the hub cannot be reached or responds off-protocol; permanent when the
        API root or the collection does not exist.
    """
    connection = connect(hub, password)
    try:
        # taxii2-client's Server builds its API roots with new, credential-less connections
        # when given a shared one, so only their URLs are taken from it.
        url = _choose_api_root(Server(hub.url, conn=connection), hub).url
        api_root = ApiRoot(url, conn=connection)
        for collection in api_root.collections:
            if title in (collection.title, collection.id):
                return collection
    except (requests.RequestException, TAXIIServiceException, ValueError) as err:
        raise delivery_error(hub.url, err) from err
    raise DeliveryError(hub.url, f"the hub has no collection titled {title!r}", transient=False)


# HTTP statuses worth another attempt: request timeout, too early, too many requests and
# every 5xx. Any other 4xx repeats for the same request, so it is permanent.
TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429})


def delivery_error(url: str, err: Exception) -> DeliveryError:
    """Return the :class:`DeliveryError` for a failed request, transient or permanent by its cause.

    A refused or reset connection, a timeout, a response that is not TAXII JSON, and HTTP
    408, 425, 429 or 5xx are transient. Other HTTP statuses are permanent. The
    ``Retry-After`` header of a response, in seconds or as an HTTP date, is kept.
    """
    if isinstance(err, requests.HTTPError) and err.response is not None:
        response = err.response
        code = response.status_code
        reason = f"HTTP {code}"
        received = response.headers.get("Content-Type")
        if not is_taxii21_media_type(received):
            # A page of another type comes from a proxy or a server that is no TAXII hub.
            reason += f" with Content-Type {received!r}, expected {TAXII21_MEDIA_TYPE!r}"
        return DeliveryError(url, reason, transient=code in TRANSIENT_HTTP_STATUSES or code >= 500,
                             retry_after_secs=parse_retry_after(response.headers.get("Retry-After")))
    return DeliveryError(url, f"{type(err).__name__}: {err}", transient=True)


def parse_retry_after(value: str | None) -> float | None:
    """Return the seconds of a ``Retry-After`` header (RFC 9110: seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _choose_api_root(server: Server, hub: HubSection) -> ApiRoot:
    if not hub.api_root:
        if server.default is not None:
            return server.default
        if server.api_roots:
            return server.api_roots[0]
        raise DeliveryError(hub.url, "the discovery resource lists no API root", transient=False)
    for api_root in server.api_roots:
        if api_root.url.rstrip("/").endswith("/" + hub.api_root.strip("/")):
            return api_root
    raise DeliveryError(hub.url, f"the hub offers no API root named {hub.api_root!r}", transient=False)
