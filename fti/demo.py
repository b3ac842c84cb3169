"""``fti demo``: a hub and five sites on real labelled captures, end to end, on loopback.

Each site is one real capture replayed by the real agent: three IoT-23 devices (Mirai, a
trojan, a benign Philips Hue bridge) and two Windows hosts of the CTU university network that
were attacked from the Internet on consecutive days by many of the same addresses. The
captures come from different days, so each agent shifts its capture to one common start; the
rounds then line up as if the sites had been watched at the same time.

Every capture holds a single monitored host. Under the default unit of privacy (the entity, a
whole host) a site with one host can never release an observable, because partition selection
must hide whether that one host is there at all. The demo therefore protects each
one-minute window of a host (``unit: entity-window``) and prints what that means for a whole
host. Sites with many hosts run with the default.

The labels in the captures are read here, never by the agent, to tell how many fused
indicators point at traffic the dataset authors marked malicious.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from agent.config import load_agent_config
from agent.service import Agent, RunReport
from agent.zeek import iter_zeek_records
from fusion_hub.config import (
    FusionSettings,
    HubConfig,
    RoundSettings,
    SecureSettings,
    ServerSettings,
    SiemSettings,
    StorageSettings,
)
from fusion_hub.server import HubServer
from privacy.signing import generate_signing_key

log = logging.getLogger(__name__)

BUNDLED_DATA = Path(__file__).resolve().parent.parent / "examples" / "data"
# All captures are replayed as if they started at this instant.
REPLAY_START = "2024-06-03T00:00:00Z"
# Eight-hour rounds give the persistent scanners enough windows to clear partition selection.
ROUND_SECONDS = 8 * 3600
WINDOW_SECONDS = 60
# Secure mode: three of the five sites make a round. A sketch of 2 x 1024 buckets is plenty
# for the few hundred observables of the captures. The distributed noise of the summed
# sketch has a standard deviation of about 14 at the demo's epsilon, so a bucket is heavy
# from 40, three standard deviations. A site with no data in a round delays it by the stage
# timeout. The sites read Zeek conn logs only, so the rounds sum the network family alone
# and it keeps the whole round's budget.
# The sites take their privacy settings from these, because a site whose settings differ from
# the round's leaves it.
SECURE_SETTINGS = SecureSettings(mode="secure", min_sites=3, sketch_rows=2, sketch_width=1024,
                                 sketch_threshold=40, stage_timeout_seconds=8.0, families=("network",),
                                 epsilon_per_round=4.0, delta_per_round=1.0e-5, unit="entity-window",
                                 max_observables_per_entity=4, max_windows_per_entity=1)


@dataclass(frozen=True)
class DemoSite:
    site_id: str
    capture: str  # path below the data folder
    description: str
    internal_networks: tuple[str, ...] = ("192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12")


SITES: tuple[DemoSite, ...] = (
    DemoSite("site-a", "iot23/CTU-IoT-Malware-Capture-34-1.conn.log.labeled",
             "IoT-23 34-1, Raspberry Pi with Mirai"),
    DemoSite("site-b", "iot23/CTU-IoT-Malware-Capture-42-1.conn.log.labeled",
             "IoT-23 42-1, Raspberry Pi with a trojan"),
    DemoSite("site-c", "iot23/CTU-Honeypot-Capture-4-1.conn.log.labeled",
             "IoT-23 4-1, Philips Hue bridge (benign)"),
    # The CTU hosts have public addresses; their site lists the university's range as its own.
    DemoSite("site-d", "stratosphere/008-conn.log.labeled",
             "CTU-Normal-40, Windows PC attacked from the Internet", ("147.32.0.0/16",)),
    DemoSite("site-e", "stratosphere/010-conn.log.labeled",
             "CTU-Normal-42, Windows PC attacked from the Internet", ("147.32.0.0/16",)),
)


def run_demo(*, out_dir: Path, data_dir: Path | None = None, secure: bool = False) -> int:
    """Run the whole federation once and print the report; return the exit status.

    With ``secure`` the sites run secure aggregation rounds at the same time, in one thread
    each, and the hub learns only sums across sites (``privacy.mode: secure``).
    """
    data_dir = data_dir or BUNDLED_DATA
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("fused-indicators.json", "splunk-hec.ndjson", "elastic-bulk.ndjson", "alerts.jsonl"):
        (out_dir / name).unlink(missing_ok=True)

    with tempfile.TemporaryDirectory(prefix="fti-demo-") as work:
        workdir = Path(work)
        hub = HubServer(_hub_config(workdir, out_dir, secure=secure))
        base_url = hub.start()
        try:
            reports = _run_sites(hub, base_url, workdir, data_dir, secure=secure)
            hub.rounds.close_all_open_rounds()
            for site, agent in reports.values() if not secure else ():
                agent.poll_fused_indicators(site)
                agent.close()
            indicators = _export_indicators(hub, base_url, out_dir)
        finally:
            hub.stop()
        _merge_alerts(workdir, out_dir)

    labels = _labels_by_address(data_dir)
    _print_report({k: v[0] for k, v in reports.items()}, indicators, labels, out_dir, time.monotonic() - started,
                  secure=secure)
    return 0


# The hub's identity name, which the agents also need: secure mode follows only its round objects.
HUB_NAME = "fti-demo-hub"


def _hub_config(workdir: Path, out_dir: Path, *, secure: bool = False) -> HubConfig:
    return HubConfig(
        # In secure mode the ticker moves stages on when a site has no data for a round.
        hub=ServerSettings(name=HUB_NAME, host="127.0.0.1", port=0, tick_seconds=0.2 if secure else 3600.0),
        secure=SECURE_SETTINGS if secure else SecureSettings(),
        storage=StorageSettings(path=workdir / "hub.sqlite3"),
        rounds=RoundSettings(round_seconds=ROUND_SECONDS, quorum_sites=len(SITES), deadline_seconds=3600,
                             max_clock_skew_seconds=300, retention_days=100_000),
        fusion=FusionSettings(lookback_rounds=3, publish_threshold=0.5, min_corroborating_sites=2,
                              indicator_ttl_seconds=2 * ROUND_SECONDS),
        siem=SiemSettings(splunk_hec_path=out_dir / "splunk-hec.ndjson",
                          elastic_bulk_path=out_dir / "elastic-bulk.ndjson"),
    )


def _run_sites(hub: HubServer, base_url: str, workdir: Path, data_dir: Path, *,
               secure: bool = False) -> dict[str, tuple[RunReport, Agent]]:
    paths: dict[str, Path] = {}
    for site in SITES:
        site_dir = workdir / site.site_id
        site_dir.mkdir()
        key = generate_signing_key()
        key.to_file(site_dir / "signing.key")
        password = hub.registry.enroll_site(site.site_id, key.public_key_b64)
        (site_dir / "hub.password").write_text(password + "\n", encoding="utf-8")
        (site_dir / "hub.password").chmod(0o600)
        config_path = site_dir / "agent.yaml"
        config_path.write_text(yaml.safe_dump(_agent_config(site, base_url, data_dir, secure=secure),
                                              sort_keys=False), encoding="utf-8")
        paths[site.site_id] = config_path
    if not secure:
        return {site_id: _run_site(path) for site_id, path in paths.items()}

    # Secure rounds need every site at once: each stage waits for the others. An agent's
    # state database belongs to the thread that opened it, so each thread runs one agent
    # from start to end, and the demo polls and closes it there too.
    finished = threading.Barrier(len(paths))
    with ThreadPoolExecutor(max_workers=len(paths), thread_name_prefix="fti-demo-site") as pool:
        futures = {site_id: pool.submit(_run_site, path, finished) for site_id, path in paths.items()}
        return {site_id: future.result() for site_id, future in futures.items()}


def _run_site(config_path: Path, finished: threading.Barrier | None = None) -> tuple[RunReport, Agent]:
    agent = Agent(load_agent_config(config_path))
    report = agent.run_once(poll=False)
    if finished is not None:
        # Every secure round has closed once all sites are done, so the fused indicators are final.
        finished.wait(timeout=600)
        agent.poll_fused_indicators(report)
        agent.close()
    return report, agent


def _agent_config(site: DemoSite, base_url: str, data_dir: Path, *, secure: bool = False) -> dict:
    config = {
        "site": {"id": site.site_id, "signing_key": "signing.key",
                 "internal_networks": list(site.internal_networks)},
        "hub": {"url": base_url.rstrip("/") + "/taxii2/", "username": site.site_id, "name": HUB_NAME,
                "password_file": "hub.password", "timeout_secs": 10.0},
        "sources": [{"type": "zeek", "paths": [str((data_dir / site.capture).resolve())],
                     "replay_start": REPLAY_START}],
        "state_dir": "state",
        "windows": {"window_seconds": WINDOW_SECONDS, "round_seconds": ROUND_SECONDS},
        "detector": {"name": "iforest", "baseline_rounds": 1, "min_baseline_windows": 16},
        "privacy": {
            "unit": "entity-window",
            # Generous, and printed in the report: with one host per site the demo needs a
            # threshold of about twenty windows to release anything.
            "epsilon_per_round": 4.0,
            "delta_per_round": 1.0e-5,
            "budget_epsilon": 40.0,
            "budget_delta": 1.0e-3,
            "period_days": 30,
            "max_observables_per_entity": 4,
            "max_windows_per_entity": 1,
        },
    }
    if secure:
        config["privacy"].update(SECURE_SETTINGS.round_privacy())
        config["privacy"].update({"mode": "secure", "secure_stage_timeout_secs": 60.0})
    return config


def _export_indicators(hub: HubServer, base_url: str, out_dir: Path) -> list[dict]:
    """Read the fused-indicator collection as a TAXII consumer and write it as a STIX bundle."""
    from taxii2client.v21 import Server, as_pages

    password = hub.registry.add_consumer("demo-reader", read=["fused-indicators"])
    server = Server(base_url.rstrip("/") + "/taxii2/", user="demo-reader", password=password)
    collection = next(c for c in server.default.collections if c.title == "fused-indicators")
    objects: list[dict] = []
    for envelope in as_pages(collection.get_objects, per_request=500):
        objects.extend(envelope.get("objects", []))
    bundle = {"type": "bundle", "id": "bundle--" + _bundle_uuid(objects), "objects": objects}
    (out_dir / "fused-indicators.json").write_text(json.dumps(bundle, indent=2) + "\n", encoding="utf-8")
    return [o for o in objects if o.get("type") == "indicator"]


def _bundle_uuid(objects: list[dict]) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, "fti-demo:" + ",".join(sorted(o["id"] for o in objects))))


def _merge_alerts(workdir: Path, out_dir: Path) -> None:
    with (out_dir / "alerts.jsonl").open("w", encoding="utf-8") as merged:
        for site in SITES:
            path = workdir / site.site_id / "state" / "alerts.jsonl"
            if path.exists():
                merged.write(path.read_text(encoding="utf-8"))


def _labels_by_address(data_dir: Path) -> dict[str, Counter[str]]:
    """Count the dataset authors' labels of every flow per external address."""
    labels: dict[str, Counter[str]] = defaultdict(Counter)
    for site in SITES:
        for record in iter_zeek_records(data_dir / site.capture):
            label = (record.fields.get("label") or "").capitalize() or "Unlabelled"
            labels[record.fields.get("id.orig_h")][label] += 1
            labels[record.fields.get("id.resp_h")][label] += 1
    return labels


def _verdict(counts: Counter[str]) -> str:
    malicious, benign = counts.get("Malicious", 0), counts.get("Benign", 0)
    if malicious == benign == 0:
        return "unlabelled"
    return "malicious" if malicious >= benign else "benign"


def _latest_versions(indicators: list[dict]) -> list[dict]:
    latest: dict[str, dict] = {}
    for indicator in indicators:
        current = latest.get(indicator["id"])
        if current is None or indicator["modified"] > current["modified"]:
            latest[indicator["id"]] = indicator
    return list(latest.values())


def _print_report(reports: dict[str, RunReport], indicators: list[dict], labels: dict[str, Counter[str]],
                  out_dir: Path, elapsed_seconds: float, *, secure: bool = False) -> None:
    line = "-" * 78
    print(line)
    print("fti demo: 5 sites, one hub on 127.0.0.1, real labelled Zeek captures")
    if secure:
        print("secure mode: the hub saw only sums across sites (secure aggregation, distributed noise);")
        print(f"a round needs {SECURE_SETTINGS.min_sites} sites, and sites reveal only observables in heavy sketch buckets")
    print(line)
    print(f"privacy unit: one {WINDOW_SECONDS}-second window of one host (entity-window); each capture has a")
    print("single host, so whole-host privacy would release nothing. Per round a host's guarantee")
    print("is epsilon times its windows in that round (group privacy).")
    print()
    print("sites")
    for site in SITES:
        report = reports[site.site_id]
        print(f"  {site.site_id}  {site.description}")
        print(f"          {report.connections} connections, {report.windows} windows, "
              f"{len(report.rounds)} rounds, epsilon {report.epsilon_spent:.2f} of {report.epsilon_budget:g} spent")

    print()
    print("rounds (observables released per site)")
    rounds = sorted({r for report in reports.values() for r in report.rounds})
    for round_start in rounds:
        cells = []
        for site in SITES:
            report = reports[site.site_id]
            if round_start in report.rounds:
                released = len(report.released.get(round_start, []))
                cells.append(f"{site.site_id}:{released}" + ("" if report.rounds[round_start] == "sent" else
                                                              f"({report.rounds[round_start]})"))
        stamp = datetime.fromtimestamp(round_start, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
        noun = "summary" if len(cells) == 1 else "summaries"
        print(f"  {stamp}Z  {len(cells)} {noun}  " + "  ".join(cells))

    latest = sorted(_latest_versions(indicators), key=lambda i: (-_details(i).get("corroborating_sites", 0),
                                                                  -i.get("confidence", 0), i["pattern"]))
    active = [i for i in latest if not i.get("revoked")]
    print()
    print(f"fused indicators ({len(active)} active, {len(latest) - len(active)} revoked; latest versions)")
    print(f"  {'value':<18} {'confidence':>10} {'sites':>5}  label of its flows")
    verdicts: Counter[str] = Counter()
    for indicator in latest:
        value = _value(indicator["pattern"])
        verdict = _verdict(labels.get(value, Counter()))
        verdicts[verdict] += 1
        state = " (revoked)" if indicator.get("revoked") else ""
        print(f"  {value:<18} {indicator.get('confidence', 0):>10} {_details(indicator).get('corroborating_sites', 0):>5}"
              f"  {verdict}{state}")
    corroborated = sum(1 for i in latest if _details(i).get("corroborating_sites", 0) > 1)
    print(f"  corroborated by more than one site: {corroborated}")
    print(f"  by the captures' labels: {verdicts['malicious']} malicious, {verdicts['benign']} benign, "
          f"{verdicts['unlabelled']} unlabelled")

    print()
    print("local alerts (fused indicators matched against each site's own contacts)")
    for site in SITES:
        print(f"  {site.site_id}: {reports[site.site_id].alerts}")

    print()
    print(f"outputs in {out_dir}/: fused-indicators.json (STIX bundle), splunk-hec.ndjson, "
          "elastic-bulk.ndjson, alerts.jsonl")
    print(f"finished in {elapsed_seconds:.1f} s")


def _details(indicator: dict) -> dict:
    for extension in (indicator.get("extensions") or {}).values():
        if isinstance(extension, dict) and "fused_score" in extension:
            return extension
    return {}


def _value(pattern: str) -> str:
    start = pattern.find("'")
    end = pattern.rfind("'")
    return pattern[start + 1:end] if 0 <= start < end else pattern
