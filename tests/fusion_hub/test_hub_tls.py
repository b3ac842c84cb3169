"""HTTPS from the configuration, with and without client certificates.

A CA, a server certificate for 127.0.0.1 and client certificates are made in each test run
with ``cryptography``; nothing leaves the loopback interface.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cheroot.errors import MaxSizeExceeded
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fusion_hub.config import HubConfig, TlsSettings, load_hub_config
from fusion_hub.errors import HubConfigError, HubError
from fusion_hub.server import HubServer
from fusion_hub import taxii as taxii_module
from fusion_hub.taxii import drain_input
from tests.fusion_hub.hub_testing import (
    HUB_NOW,
    TAXII,
    SettableClock,
    enroll,
    make_config,
    running_hub,
    signed_summary,
)
from stix_mappings.ids import collection_id

NOW = dt.datetime.now(dt.timezone.utc)


@dataclass
class Pki:
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = make_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(minutes=5))
            .not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str, *,
          server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = make_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(minutes=5))
               .not_valid_after(NOW + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = make_ca("fti test CA")
    other_ca, other_key = make_ca("some other CA")
    server, server_key = issue(ca, ca_key, "127.0.0.1", server=True)
    client, client_key = issue(ca, ca_key, "site-a", server=False)
    stranger, stranger_key = issue(other_ca, other_key, "stranger", server=False)
    return Pki(
        ca_file=write_cert(folder / "ca.pem", ca),
        server_cert=write_cert(folder / "server.pem", server),
        server_key=write_key(folder / "server.key", server_key),
        client_cert=write_cert(folder / "client.pem", client),
        client_key=write_key(folder / "client.key", client_key),
        stranger_cert=write_cert(folder / "stranger.pem", stranger),
        stranger_key=write_key(folder / "stranger.key", stranger_key),
    )


def tls_config(tmp_path: Path, pki: Pki, **tls: object) -> HubConfig:
    config = make_config(tmp_path)
    return dataclasses.replace(config, tls=TlsSettings(cert_file=pki.server_cert,
                                                       key_file=pki.server_key, **tls))


def get_discovery(url: str, pki: Pki, cert: tuple[Path, Path] | None,
                  auth: tuple[str, str]) -> requests.Response:
    return requests.get(f"{url}/taxii2/", headers={"Accept": TAXII}, auth=auth, timeout=10,
                        verify=str(pki.ca_file),
                        cert=(str(cert[0]), str(cert[1])) if cert else None)


def test_https_serves_taxii_with_verified_certificate(tmp_path: Path, pki: Pki) -> None:
    with running_hub(tls_config(tmp_path, pki)) as hub:
        password = hub.registry.add_consumer("reader", read=["fused-indicators"])
        url = hub.base_url or ""

        response = get_discovery(url, pki, None, ("reader", password))
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://{url.removeprefix('https://')}/taxii2/", timeout=5)

    assert url.startswith("https://127.0.0.1:")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == TAXII
    assert response.json()["api_roots"] == [f"{url}/fti/"]


def test_client_certificate_required(tmp_path: Path, pki: Pki) -> None:
    config = tls_config(tmp_path, pki, client_ca_file=pki.ca_file, require_client_cert=True)
    with running_hub(config) as hub:
        password = hub.registry.add_consumer("reader", read=["fused-indicators"])
        url, auth = hub.base_url or "", ("reader", password)

        with_cert = get_discovery(url, pki, (pki.client_cert, pki.client_key), auth)
        with_cert_no_password = get_discovery(url, pki, (pki.client_cert, pki.client_key),
                                              ("reader", "wrong"))
        with pytest.raises(requests.exceptions.SSLError):
            get_discovery(url, pki, None, auth)
        with pytest.raises(requests.exceptions.SSLError):
            get_discovery(url, pki, (pki.stranger_cert, pki.stranger_key), auth)

    assert with_cert.status_code == 200
    # The certificate is a second factor; the password is still checked.
    assert with_cert_no_password.status_code == 401


def test_client_certificate_optional(tmp_path: Path, pki: Pki) -> None:
    config = tls_config(tmp_path, pki, client_ca_file=pki.ca_file, require_client_cert=False)
    with running_hub(config) as hub:
        password = hub.registry.add_consumer("reader", read=["fused-indicators"])
        url, auth = hub.base_url or "", ("reader", password)

        without = get_discovery(url, pki, None, auth)
        with pytest.raises(requests.exceptions.SSLError):
            get_discovery(url, pki, (pki.stranger_cert, pki.stranger_key), auth)

    assert without.status_code == 200


def test_tls_settings_loaded_and_checked(tmp_path: Path, pki: Pki) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"tls:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
                    f"  client_ca_file: {pki.ca_file}\n  require_client_cert: false\n")
    key_missing = tmp_path / "key-missing.yaml"
    key_missing.write_text(f"tls:\n  cert_file: {pki.server_cert}\n")
    absent = tmp_path / "absent.yaml"
    absent.write_text("tls:\n  cert_file: nowhere.pem\n  key_file: nowhere.key\n")

    config = load_hub_config(good)
    with pytest.raises(HubConfigError) as missing_error:
        load_hub_config(key_missing)
    with pytest.raises(HubConfigError) as absent_error:
        load_hub_config(absent)

    assert config.tls == TlsSettings(cert_file=pki.server_cert, key_file=pki.server_key,
                                     client_ca_file=pki.ca_file, require_client_cert=False)
    assert missing_error.value.key == "tls.key_file"
    assert absent_error.value.key == "tls.cert_file"
    assert str(tmp_path / "nowhere.pem") in str(absent_error.value)


# cheroot 11 leaves the socket of a failed bind() unclosed (Server.bind assigns self.socket
# only after binding), so the garbage collector reports it here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_https_port_in_use_names_os_error(tmp_path: Path, pki: Pki) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        config = tls_config(tmp_path, pki)
        config = dataclasses.replace(config, hub=dataclasses.replace(config.hub, port=port))
        hub = HubServer(config, clock=SettableClock(HUB_NOW))

        with pytest.raises(HubError) as excinfo:
            hub.start()
        hub.stop()

    assert f"cannot listen on ('127.0.0.1', {port}):" in str(excinfo.value)
    assert "Address already in use" in str(excinfo.value)
    assert "None" not in str(excinfo.value)


class PausingBody(io.RawIOBase):
    """A request body of known length that stops for ``pause_secs`` after its first part."""

    def __init__(self, first: bytes, rest: bytes, pause_secs: float) -> None:
        self._parts = [first, rest]
        self._pause_secs = pause_secs
        self.len = len(first) + len(rest)

    def read(self, size: int = -1) -> bytes:
        if not self._parts:
            return b""
        if len(self._parts) == 1:
            time.sleep(self._pause_secs)
        return self._parts.pop(0)


@pytest.mark.parametrize(("framing", "pause_secs"),
                         [("chunked", 0.0), ("chunked", 0.5), ("content-length", 0.5)])
def test_https_body_over_limit_413(tmp_path: Path, pki: Pki, framing: str,
                                   pause_secs: float) -> None:
    """A body whose first bytes form a valid envelope is rejected, not cut short.

    The hub reads the rest of the body before it responds, so a client that is still sending
    after the hub has decided gets the 413, not a connection reset.
    """
    config = tls_config(tmp_path, pki)
    config = dataclasses.replace(config, hub=dataclasses.replace(config.hub,
                                                                 max_content_length_bytes=4096))
    with running_hub(config) as hub:
        site = enroll(hub, "site-a")
        url = f"{hub.api_root_url}collections/{collection_id('summaries')}/objects/"
        head = json.dumps({"objects": [signed_summary(site)]}).encode("utf-8")[:-1]
        envelope = head + b" " * (4096 - len(head) - 1) + b"}"
        pad = b' "pad": "' + b"x" * 1000 + b'"'

        def chunks() -> Iterator[bytes]:
            yield envelope
            time.sleep(pause_secs)
            yield pad

        data = chunks() if framing == "chunked" else PausingBody(envelope, pad, pause_secs)
        response = requests.post(url, data=data, auth=site.auth, timeout=10,
                                 verify=str(pki.ca_file),
                                 headers={"Accept": TAXII, "Content-Type": TAXII})
        stored = requests.get(url, auth=site.auth, timeout=10, verify=str(pki.ca_file),
                              headers={"Accept": TAXII})

    assert len(envelope) == 4096
    assert response.status_code == 413
    assert response.headers["Content-Type"] == TAXII
    assert "max_content_length (4096 bytes)" in response.json()["description"]
    assert stored.json() == {"more": False}


@pytest.mark.parametrize("error", [MaxSizeExceeded("Request Entity Too Large", 100),
                                   OSError("Request Entity Too Large"),
                                   ValueError("Bad chunked transfer size")])
def test_drain_stops_at_server_cap(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    """Past cheroot's own size cap, or on a broken chunk, the hub stops reading and logs it."""
    reads: list[int] = []

    class CappedInput:
        def read(self, size: int) -> bytes:
            reads.append(size)
            if len(reads) > 2:
                raise error
            return b"x" * size

    with caplog.at_level(logging.INFO, logger="fusion_hub.taxii"):
        drain_input({"wsgi.input": CappedInput(), "REMOTE_ADDR": "127.0.0.1"}, "req-1")

    assert len(reads) == 3
    assert caplog.messages == [f"request req-1: stopped reading an oversized body from "
                               f"127.0.0.1: {error}"]


def test_drain_stops_after_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that keeps trickling its body is read for at most DRAIN_SECONDS."""
    clock = [100.0]
    monkeypatch.setattr(taxii_module.time, "monotonic", lambda: clock[0])
    reads: list[int] = []

    class TricklingInput:
        def read(self, size: int) -> bytes:
            reads.append(size)
            clock[0] += 1.0
            return b"x"

    drain_input({"wsgi.input": TricklingInput()}, "req-1")

    assert len(reads) == int(taxii_module.DRAIN_SECONDS)
