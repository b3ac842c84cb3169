"""HTTP transport for the SIEM clients, injectable so tests can play Splunk or Elasticsearch.

A transport takes one request and returns status, headers and body, or raises
``TransportFailed`` when no HTTP response arrived (refused connection, timeout, TLS failure).
``RequestsTransport`` is the production one; tests pass a small callable or point it at a
local server on 127.0.0.1.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import requests

from siem_integrations.errors import TransportFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpResponse:
    """One HTTP response: status code, headers with lower-case names, and the raw body."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class Transport(Protocol):
    """Send one HTTP request and return its response."""

    def __call__(self, method: str, url: str, *, headers: Mapping[str, str],
                 body: bytes | None = None) -> HttpResponse:
        ...


class RequestsTransport:
    """A transport on a ``requests.Session``, with a timeout on every call.

    Parameters
    ----------
    timeout_secs : float, default 10.0
        Connect and read timeout of each request; a SIEM that takes longer is treated as down
        and the batch is retried with backoff.
    verify_tls : bool or str, default True
        Certificate verification, or the path of a CA bundle.
    """

    def __init__(self, *, timeout_secs: float = 10.0, verify_tls: bool | str = True) -> None:
        self.timeout_secs = timeout_secs
        self.verify_tls = verify_tls
        self._session = requests.Session()

    def __call__(self, method: str, url: str, *, headers: Mapping[str, str],
                 body: bytes | None = None) -> HttpResponse:
        try:
            response = self._session.request(method, url, headers=dict(headers), data=body,
                                              timeout=self.timeout_secs, verify=self.verify_tls)
        except requests.RequestException as err:
            # The exception text names only the URL, never the Authorization header.
            raise TransportFailed(url, type(err).__name__) from err
        return HttpResponse(status=response.status_code, body=response.content,
                            headers={k.lower(): v for k, v in response.headers.items()})

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()
