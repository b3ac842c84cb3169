"""HTTPS for the TAXII server, with optional client certificates (mutual TLS).

Waitress, which serves plain HTTP, has no TLS support, so a hub with ``tls.cert_file`` serves
through cheroot (the CherryPy HTTP server) and its stdlib ``ssl`` adapter instead. The
context is Python's ``ssl.create_default_context(Purpose.CLIENT_AUTH)``: TLS 1.2 or newer
with the default cipher list of the linked OpenSSL. With ``tls.client_ca_file`` the server
asks for a client certificate and verifies it against that CA bundle.
``tls.require_client_cert`` decides whether a client without one may finish the handshake.
A client certificate is a second factor: HTTP Basic or an API token is still required.
"""

from __future__ import annotations

import logging
import ssl
import sys
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from fusion_hub.config import ServerSettings, TlsSettings
from fusion_hub.errors import HubError
from fusion_hub.transport import MAX_HEADER_BYTES, taxii_connection

log = logging.getLogger(__name__)

# Errors by which a client ends its connection in the middle of a request. cheroot logs them
# as "socket.error" warnings with a traceback, although the hub is not at fault.
_CLIENT_CLOSED = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError,
                  BrokenPipeError)


def _cheroot_error_log(msg: str = "", level: int = logging.INFO,
                       traceback: bool = False) -> None:
    """Write cheroot's error messages to the hub's log instead of standard error."""
    error = sys.exc_info()[1]
    if isinstance(error, _CLIENT_CLOSED) and level <= logging.WARNING:
        log.info("TLS client closed its connection in the middle of a request (%s): %s", msg,
                 error)
        return
    log.log(level, "TLS server: %s", msg, exc_info=traceback and error is not None)


class TlsServer:
    """A cheroot WSGI server bound to ``settings.host:settings.port`` with TLS.

    ``bind()`` opens the socket and returns the bound address, ``serve()`` blocks until
    ``stop()``; the hub runs ``serve()`` on its HTTP thread.
    """

    def __init__(self, app: Any, *, settings: ServerSettings, tls: TlsSettings) -> None:
        if tls.cert_file is None or tls.key_file is None:
            raise HubError("TLS needs tls.cert_file and tls.key_file")
        try:
            adapter = BuiltinSSLAdapter(str(tls.cert_file), str(tls.key_file))
            if tls.client_ca_file is not None:
                adapter.context.load_verify_locations(cafile=str(tls.client_ca_file))
                adapter.context.verify_mode = (ssl.CERT_REQUIRED if tls.require_client_cert
                                               else ssl.CERT_OPTIONAL)
        except (OSError, ssl.SSLError) as err:
            raise HubError(f"cannot load the TLS certificate {tls.cert_file}, key "
                           f"{tls.key_file} or client CA {tls.client_ca_file}: {err}") from err
        self._server = wsgi.Server((settings.host, settings.port), app,
                                   numthreads=settings.threads, server_name="fti-hub")
        self._server.ssl_adapter = adapter
        self._server.error_log = _cheroot_error_log
        # cheroot's own error responses then carry TAXII error resources, and its chunked
        # bodies are read with bounded framing.
        self._server.ConnectionClass = taxii_connection(settings.max_content_length_bytes)
        # As with waitress: the transport cap sits above max_content_length, so Flask rejects
        # oversized envelopes itself with a TAXII error resource.
        self._server.max_request_body_size = settings.max_content_length_bytes * 2 + 65536
        # cheroot reads headers without a limit by default. Waitress's default applies here too.
        self._server.max_request_header_size = MAX_HEADER_BYTES
        self.client_certificates = ("required" if tls.client_ca_file and tls.require_client_cert
                                    else "optional" if tls.client_ca_file else "not requested")

    def bind(self) -> tuple[str, int]:
        """Open the listening socket and return the bound host and port."""
        try:
            self._server.prepare()
        except OSError as err:
            raise HubError(f"cannot listen on {self._server.bind_addr}: {err.strerror or err}; "
                           "choose another hub.port") from err
        host, port = self._server.bind_addr[:2]
        return str(host), int(port)

    def serve(self) -> None:
        """Serve requests until ``stop()``."""
        self._server.serve()

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish and close the socket."""
        self._server.stop()
