"""The ``fti siem sync`` command: poll a TAXII 2.1 collection into Splunk or Elasticsearch.

Credentials come from the environment, never from the command line, where other users
could read them in the process list:

- ``FTI_TAXII_PASSWORD``: password of ``--user`` on the TAXII server;
- ``FTI_SPLUNK_HEC_TOKEN``: the HEC token, for ``--to splunk``;
- ``FTI_ELASTIC_API_KEY``: an encoded Elasticsearch API key, for ``--to elastic``.

The state folder keeps the spool of documents not yet confirmed by the SIEM and one
checkpoint per source collection, so a restarted sync resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TAXII_PASSWORD_ENV = "FTI_TAXII_PASSWORD"
SPLUNK_TOKEN_ENV = "FTI_SPLUNK_HEC_TOKEN"
ELASTIC_KEY_ENV = "FTI_ELASTIC_API_KEY"


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``fti siem sync`` on ``parser``."""
    parser.add_argument("--from", dest="source", required=True,
                        help="TAXII 2.1 API root URL, for example https://hub.example.org/fti/")
    parser.add_argument("--collection", required=True, help="id of the collection to poll")
    parser.add_argument("--to", dest="target", required=True, choices=["splunk", "elastic"],
                        help="the SIEM to write to")
    parser.add_argument("--user", default=None,
                        help=f"TAXII user name; its password is read from {TAXII_PASSWORD_ENV}")
    parser.add_argument("--state-dir", default="fti-siem-state",
                        help="folder for the spool and the checkpoint (default: fti-siem-state)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="polls to run before exiting (default: 1)")
    parser.add_argument("--interval-secs", type=float, default=300.0,
                        help="pause between polls in seconds (default: 300)")
    parser.add_argument("--ca-bundle", default=None,
                        help="CA bundle for TLS to the TAXII server and the SIEM "
                             "(default: the system store)")
    parser.add_argument("--splunk-url", default=None,
                        help=f"HEC base URL, for example https://splunk.example.org:8088; the "
                             f"token is read from {SPLUNK_TOKEN_ENV}")
    parser.add_argument("--splunk-index", default=None,
                        help="Splunk index (default: the token's default index)")
    parser.add_argument("--splunk-ack", action="store_true",
                        help="wait for indexer acknowledgment (the token must have it enabled)")
    parser.add_argument("--elastic-url", default=None,
                        help=f"Elasticsearch base URL, for example https://es.example.org:9200; "
                             f"the API key is read from {ELASTIC_KEY_ENV}")
    parser.add_argument("--elastic-data-stream", default="logs-ti_fti.indicator-default",
                        help="target data stream (default: logs-ti_fti.indicator-default)")
    parser.add_argument("--install-templates", action="store_true",
                        help="create or update the ILM policy and index template first")
    parser.add_argument("--retry-secs", type=float, default=30.0,
                        help="seconds after which retries to an unavailable SIEM stop and the "
                             "documents wait in the spool for the next poll (default: 30)")


def _require(value: str | None, name: str) -> str:
    if not value:
        raise SystemExit(f"fti siem sync: {name} is required for this target")
    return value


def build_sink(args: argparse.Namespace, env: Mapping[str, str], state_dir: Path) -> Any:
    """Return the SIEM client named by ``--to``, with its spool in ``state_dir``."""
    from siem_integrations.elastic_bulk import ElasticBulkClient
    from siem_integrations.retry import RetryPolicy
    from siem_integrations.splunk_hec import SplunkHecClient
    from siem_integrations.spool import Spool
    from siem_integrations.transport import RequestsTransport

    if args.retry_secs < 0:
        raise SystemExit(f"fti siem sync: --retry-secs must be >= 0; got {args.retry_secs}")
    retry = RetryPolicy(max_elapsed_secs=args.retry_secs)
    transport = RequestsTransport(verify_tls=args.ca_bundle or True)
    if args.target == "splunk":
        url = _require(args.splunk_url, "--splunk-url")
        token = _require(env.get(SPLUNK_TOKEN_ENV), f"the environment variable {SPLUNK_TOKEN_ENV}")
        return SplunkHecClient(url, token=token, spool=Spool(state_dir / "splunk-spool.sqlite"),
                               transport=transport, index=args.splunk_index,
                               use_ack=args.splunk_ack, retry=retry)
    url = _require(args.elastic_url, "--elastic-url")
    key = _require(env.get(ELASTIC_KEY_ENV), f"the environment variable {ELASTIC_KEY_ENV}")
    client = ElasticBulkClient(url, spool=Spool(state_dir / "elastic-spool.sqlite"),
                               transport=transport, api_key=key,
                               data_stream=args.elastic_data_stream, retry=retry)
    if args.install_templates:
        client.install_templates()
    return client


def run_sync(args: argparse.Namespace, *, env: Mapping[str, str],
             sleep: Callable[[float], None] = time.sleep) -> int:
    """Run ``--rounds`` polls, print one JSON line per poll, and return the exit status.

    Returns 0 when the SIEM confirmed everything read, and 3 when some indicators were
    rejected (they are in the spool's dead-letter table) or are still queued. A poll that
    cannot read the TAXII server is logged and the next one tries again, because a hub
    restart must not end a day-long run. When the last poll fails that way, its error is
    raised.

    Raises
    ------
    SyncFailed
        If the last poll could not read the TAXII server or its checkpoint.
    SiemError
        If the SIEM rejected the credential or a request; no later poll would succeed.
    """
    from siem_integrations.errors import SyncFailed
    from siem_integrations.taxii_sync import CheckpointFile, TaxiiSync

    if args.rounds < 1:
        raise SystemExit(f"fti siem sync: --rounds must be >= 1; got {args.rounds}")
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    sink = build_sink(args, env, state_dir)

    # One checkpoint per source, so one state folder can serve several collections.
    source_key = hashlib.sha256(f"{args.source}|{args.collection}".encode()).hexdigest()[:16]
    sync = TaxiiSync(args.source, args.collection, sink=sink,
                     checkpoint=CheckpointFile(state_dir / f"checkpoint-{source_key}.json"),
                     user=args.user, password=env.get(TAXII_PASSWORD_ENV),
                     verify_tls=args.ca_bundle or True)
    log.info("siem sync: %s collection %s -> %s, %d rounds every %.0f s, state in %s",
             args.source, args.collection, args.target, args.rounds, args.interval_secs,
             state_dir)

    status = 0
    for number in range(args.rounds):
        if number > 0:
            sleep(args.interval_secs)
        try:
            report = sync.poll_once()
        except SyncFailed as err:
            if number + 1 == args.rounds:
                raise
            log.error("siem sync: round %d of %d failed, the next starts in %.0f s: %s",
                      number + 1, args.rounds, args.interval_secs, err)
            print(json.dumps({"round": number + 1, "error": err.reason}, sort_keys=True),
                  flush=True)
            continue
        queued = sink.spool.queued_count()
        print(json.dumps({"round": number + 1, "pages": report.pages,
                          "indicators": report.indicators, "written": report.written,
                          "rejected": len(report.rejected), "queued": queued},
                         sort_keys=True), flush=True)
        status = 3 if report.rejected or queued else 0
    return status
