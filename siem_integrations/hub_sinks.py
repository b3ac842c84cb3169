"""The HTTP SIEM clients the hub pushes every round to, built from its ``siem`` settings.

The hub reads no environment variables, so the HEC token and the Elasticsearch API key
come from files that only the hub's user can read. The first line of each file is the
credential. Each client keeps its spool in ``siem.spool_dir``.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

from siem_integrations.elastic_bulk import ElasticBulkClient
from siem_integrations.errors import SiemError
from siem_integrations.sink import IndicatorSink
from siem_integrations.splunk_hec import SplunkHecClient
from siem_integrations.spool import Spool
from siem_integrations.transport import RequestsTransport

log = logging.getLogger(__name__)


class SecretFileInvalid(SiemError):
    """A credential file is missing, empty or readable by other users."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"credential file {path}: {reason}")


def read_secret_file(path: Path) -> str:
    """Return the first line of a credential file that only its owner can read.

    Raises
    ------
    SecretFileInvalid
        If the file is missing, empty, or readable by group or others.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as err:
        raise SecretFileInvalid(path, f"cannot be read ({err.strerror})") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileInvalid(path, f"mode is {stat.S_IMODE(mode):o}; run chmod 600 {path}")
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise SecretFileInvalid(path, "is empty; write the credential on its first line")
    return secret


def build_http_sinks(siem: Any, *, hub_name: str) -> list[IndicatorSink]:
    """Return a ``SplunkHecClient`` and an ``ElasticBulkClient`` for the URLs that are set.

    Parameters
    ----------
    siem : SiemSettings
        The hub's ``siem`` section: ``splunk_hec_url``, ``splunk_hec_token_file``,
        ``splunk_index``, ``splunk_host``, ``splunk_ack``, ``elastic_url``,
        ``elastic_api_key_file``, ``elastic_index`` and ``spool_dir``.
    hub_name : str
        HEC ``host`` when ``splunk_host`` is not set, and ``threat.indicator.provider``.
    """
    sinks: list[IndicatorSink] = []
    if siem.splunk_hec_url is None and siem.elastic_url is None:
        return sinks
    for url, secret_file, name in ((siem.splunk_hec_url, siem.splunk_hec_token_file,
                                    "splunk_hec_token_file"),
                                   (siem.elastic_url, siem.elastic_api_key_file,
                                    "elastic_api_key_file")):
        if url is not None and secret_file is None:
            raise SecretFileInvalid(Path(f"siem.{name}"),
                                    f"is required when {url} is set; give the credential file")
    spool_dir = Path(siem.spool_dir)
    spool_dir.mkdir(parents=True, exist_ok=True)
    if siem.splunk_hec_url is not None:
        sinks.append(SplunkHecClient(
            siem.splunk_hec_url, token=read_secret_file(Path(siem.splunk_hec_token_file)),
            spool=Spool(spool_dir / "splunk-hec.sqlite"), transport=RequestsTransport(),
            index=siem.splunk_index, host=siem.splunk_host or hub_name,
            use_ack=siem.splunk_ack))
    if siem.elastic_url is not None:
        sinks.append(ElasticBulkClient(
            siem.elastic_url, api_key=read_secret_file(Path(siem.elastic_api_key_file)),
            spool=Spool(spool_dir / "elastic-bulk.sqlite"), transport=RequestsTransport(),
            data_stream=siem.elastic_index, provider=hub_name))
    return sinks
