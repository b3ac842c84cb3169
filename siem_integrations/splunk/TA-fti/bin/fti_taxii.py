"""Modular input fti_taxii: poll a TAXII 2.1 collection into an index and the KV store.

Each run reads every page added since the checkpoint (a JSON file in the input's checkpoint
folder). It follows ``next``. When the server sets ``more`` without ``next``, it continues with
``added_after`` from the ``X-TAXII-Date-Added-Last`` response header. The checkpoint contains
that time and the objects already written that may share it (``taxii_cursor``, shipped in
``lib/``), so objects sharing one ``date_added`` are neither skipped nor indexed twice. It
is saved after a page's events and records are written, so a crash repeats at most that
page. A saved ``next`` the server no longer accepts (400 or 404) falls back to
``added_after``.

Every indicator version becomes an event. The current indicators are upserted into the
``fti_indicators`` collection of this app and, with Enterprise Security installed, into its
threat intelligence collections. Revoked ones are deleted from them, and every run deletes
the fti records whose ``valid_until`` has passed. The TAXII password is read from Splunk's
credential store (realm ``TA-fti``).
"""

import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import splunklib.client as client  # noqa: E402
from splunklib.binding import HTTPError  # noqa: E402
from splunklib.modularinput import Argument, Event, Scheme, Script  # noqa: E402

from fti_intel import (ES_COLLECTIONS, THREAT_KEY, indicator_to_event, indicator_to_intel,  # noqa: E402
                       is_withdrawn, parse_timestamp, record_key)
from taxii_cursor import DATE_ADDED_LAST, TaxiiCursor, envelope_indicators  # noqa: E402

MEDIA_TYPE = "application/taxii+json;version=2.1"
REALM = "TA-fti"
APP = "TA-fti"
ES_APP = "SA-ThreatIntelligence"
# Pages per run at most, so one run of a huge collection ends and saves its place.
MAX_PAGES = 200
TIMEOUT_SECS = 60
# KV store records read per query while purging, below the default max_rows_per_query.
PURGE_PAGE_SIZE = 1000


class FtiTaxiiInput(Script):
    """Splunk modular input polling one TAXII 2.1 collection per stanza."""

    def get_scheme(self):
        scheme = Scheme("fti TAXII 2.1 indicators")
        scheme.description = "Poll fused indicators from an fti hub or any TAXII 2.1 collection."
        scheme.use_external_validation = True
        scheme.use_single_instance = False
        for name, description, required in (
                ("api_root", "TAXII 2.1 API root URL", True),
                ("collection", "Collection id", True),
                ("username", "TAXII user name (password in the credential store)", False),
                ("verify_tls", "Verify the server certificate (default true)", False),
                ("page_size", "Objects per page (default 500)", False),
                ("write_es_collections", "Write the ES threat intelligence collections", False)):
            argument = Argument(name, description=description, required_on_create=required)
            scheme.add_argument(argument)
        return scheme

    def validate_input(self, definition):
        api_root = definition.parameters.get("api_root", "")
        parts = urllib.parse.urlsplit(api_root)
        if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"api_root must be an https URL; got {api_root!r}")
        if not definition.parameters.get("collection"):
            raise ValueError("collection is required")
        page_size = definition.parameters.get("page_size") or "500"
        if not page_size.isdigit() or not 1 <= int(page_size) <= 10000:
            raise ValueError(f"page_size must be an integer in [1, 10000]; got {page_size!r}")

    def stream_events(self, inputs, ew):
        session_key = self._input_definition.metadata["session_key"]
        checkpoint_dir = inputs.metadata["checkpoint_dir"]
        for stanza, config in inputs.inputs.items():
            service = client.connect(token=session_key, app=APP, owner="nobody")
            es_service = None
            if _bool(config.get("write_es_collections"), True):
                es_service = client.connect(token=session_key, app=ES_APP, owner="nobody")
            try:
                poll_stanza(stanza, config, service, es_service, checkpoint_dir, ew)
            except (OSError, ValueError, urllib.error.URLError) as err:
                ew.log("ERROR", f"fti_taxii {stanza}: poll failed: {err}")


def _bool(value, default):
    if value is None or value == "":
        return default
    return str(value).strip().lower() in ("1", "true", "yes", "t", "y")


def _password(service, username):
    for credential in service.storage_passwords:
        if credential.realm == REALM and credential.username == username:
            return credential.clear_password
    raise ValueError(f"no password stored for user {username!r} in realm {REALM}")


def _checkpoint_path(checkpoint_dir, stanza):
    name = base64.urlsafe_b64encode(stanza.encode("utf-8")).decode("ascii")
    return os.path.join(checkpoint_dir, f"fti_taxii_{name}.json")


def load_checkpoint(path):
    """Return the stored cursor state, or None when the input has not run yet."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def save_checkpoint(path, checkpoint):
    """Replace the checkpoint file atomically, synced to disk before the rename."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def fetch_page(api_root, collection, query, *, auth_header, verify_tls):
    """GET one page of indicators; return (envelope, X-TAXII-Date-Added-Last or None)."""
    query = dict(query, **{"match[type]": "indicator"})
    url = (api_root.rstrip("/") + f"/collections/{urllib.parse.quote(collection)}/objects/?"
           + urllib.parse.urlencode(query))
    headers = {"Accept": MEDIA_TYPE}
    if auth_header:
        headers["Authorization"] = auth_header
    context = ssl.create_default_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECS, context=context) as response:
        envelope = json.loads(response.read().decode("utf-8") or "{}")
        return envelope, response.headers.get(DATE_ADDED_LAST)


def fetch_next_page(api_root, collection, cursor, ew, stanza, **options):
    """Fetch the cursor's next page, dropping a ``next`` value the server rejects."""
    try:
        return fetch_page(api_root, collection, cursor.query(), **options)
    except urllib.error.HTTPError as err:
        # TAXII servers may expire next values, but added_after still marks the place exactly.
        if cursor.next is None or err.code not in (400, 404):
            raise
        ew.log("WARNING", f"fti_taxii {stanza}: the server rejected the saved next value "
                          f"with {err.code}; continuing from added_after "
                          f"{cursor.added_after or '(start)'}")
        cursor.drop_next()
        return fetch_page(api_root, collection, cursor.query(), **options)


def poll_stanza(stanza, config, service, es_service, checkpoint_dir, ew):
    """Read every new page of one input and write events and KV store records.

    ``service`` is connected to this app (credentials, ``fti_indicators``); ``es_service``
    to SA-ThreatIntelligence, or None to leave the ES collections alone.
    """
    username = config.get("username")
    auth_header = None
    if username:
        secret = f"{username}:{_password(service, username)}".encode("utf-8")
        auth_header = "Basic " + base64.b64encode(secret).decode("ascii")
    verify_tls = _bool(config.get("verify_tls"), True)
    page_size = int(config.get("page_size") or 500)
    path = _checkpoint_path(checkpoint_dir, stanza)
    cursor = TaxiiCursor(load_checkpoint(path), page_size=page_size)

    now = datetime.now(timezone.utc)
    indicators = 0
    for _ in range(MAX_PAGES):
        envelope, date_added_last = fetch_next_page(
            config["api_root"], config["collection"], cursor, ew, stanza,
            auth_header=auth_header, verify_tls=verify_tls)
        page = envelope_indicators(envelope)
        objects = cursor.new_objects(page)
        for indicator in objects:
            # The HEC events' shape, so the dashboards work without HEC. Otherwise the raw object.
            body = indicator_to_event(indicator) or indicator
            event = Event(stanza=stanza, data=json.dumps(body, sort_keys=True),
                          sourcetype=config.get("sourcetype", "fti:indicator"),
                          index=config.get("index"),
                          time="%.3f" % parse_timestamp(indicator["modified"]).timestamp())
            ew.write_event(event)
        update_collections(objects, service, es_service, now)
        indicators += len(objects)

        # The checkpoint moves only after the page's events and records were written.
        more = cursor.advance(page, more=bool(envelope.get("more")),
                              next_value=envelope.get("next"), date_added_last=date_added_last)
        if cursor.skipped_at:
            ew.log("WARNING", f"fti_taxii {stanza}: more objects share date_added "
                              f"{cursor.skipped_at} than one page holds and the server sets "
                              "no next; the rest of them are skipped")
        save_checkpoint(path, cursor.to_dict())
        if not more:
            break

    purged = purge_expired(service, es_service, now)
    ew.log("INFO", f"fti_taxii {stanza}: {indicators} indicators read, {purged} expired "
                   "records deleted")


def _targets(service, es_service):
    """Return ``(service, collection name, takes every type)`` of each collection to write."""
    targets = [(service, "fti_indicators", True)]
    if es_service is not None:
        names = {c.name for c in es_service.kvstore}
        targets.extend((es_service, name, False) for name in ES_COLLECTIONS if name in names)
    return targets


def _delete_record(data, key):
    try:
        data.delete_by_id(key)
    except HTTPError as err:
        # A record that was never stored needs no deletion.
        if err.status != 404:
            raise


def update_collections(indicators, service, es_service, now):
    """Upsert current indicators into the KV store and delete withdrawn ones."""
    upserts = {}
    deletes = []
    for indicator in indicators:
        mapped = indicator_to_intel(indicator)
        if mapped is None:
            continue
        collection, record = mapped
        if is_withdrawn(indicator, now):
            deletes.append((collection, record_key(indicator["id"])))
        else:
            upserts.setdefault(collection, []).append(record)

    for target_service, name, is_all in _targets(service, es_service):
        data = target_service.kvstore[name].data
        records = [r for c, rs in upserts.items() if is_all or c == name for r in rs]
        for start in range(0, len(records), 500):
            data.batch_save(*records[start:start + 500])
        for collection, key in deletes:
            if is_all or collection == name:
                _delete_record(data, key)


def purge_expired(service, es_service, now):
    """Delete fti records whose ``valid_until`` has passed; return how many were deleted.

    An indicator can expire without a new version: other TAXII servers publish no
    revocation for it, and the fti hub revokes it only when its next round closes.
    """
    deleted = 0
    for target_service, name, _ in _targets(service, es_service):
        data = target_service.kvstore[name].data

        # Collect first and delete after, so deletions do not shift the pages being read.
        expired = []
        skip = 0
        while True:
            page = data.query(query=json.dumps({"threat_key": THREAT_KEY}),
                              fields="_key,valid_until", sort="_key", skip=skip,
                              limit=PURGE_PAGE_SIZE)
            expired.extend(record["_key"] for record in page if record.get("valid_until")
                           and parse_timestamp(record["valid_until"]) <= now)
            if len(page) < PURGE_PAGE_SIZE:
                break
            skip += len(page)

        for key in expired:
            _delete_record(data, key)
        deleted += len(expired)
    return deleted


if __name__ == "__main__":
    sys.exit(FtiTaxiiInput().run(sys.argv))
