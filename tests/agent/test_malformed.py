"""Malformed lines in the live agent: counted per source and reason, sampled, warned about sparingly."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.config import load_agent_config
from agent.live import LiveAgent, LiveSettings
from agent.malformed import MalformedInput
from agent.service import Agent
from privacy.random import seeded_random
from privacy.signing import generate_signing_key

START = 1_717_372_800
TSV_HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\n"
)


def json_line(number: int) -> str:
    return json.dumps({"ts": START + number, "uid": f"C{number}", "id.orig_h": "10.2.0.1", "id.orig_p": 40000,
                       "id.resp_h": "185.220.101.1", "id.resp_p": 443, "proto": "tcp", "_path": "conn"}) + "\n"


def tsv_line(number: int) -> str:
    return f"{START + number}.0\tD{number}\t10.2.0.2\t40000\t185.220.101.2\t443\ttcp\n"


@pytest.fixture()
def live(tmp_path: Path) -> Iterator[LiveAgent]:
    key = generate_signing_key()
    key.to_file(tmp_path / "site.key")
    (tmp_path / "json").mkdir()
    (tmp_path / "tsv").mkdir()
    config = {
        "site": {"id": "site-m", "signing_key": "site.key"},
        "hub": {"url": "http://127.0.0.1:9/taxii2/", "username": "site-m", "password": "unused"},
        "sources": [{"type": "zeek", "paths": [str(tmp_path / "json" / "conn*.log")]},
                    {"type": "zeek", "paths": [str(tmp_path / "tsv" / "conn*.log")]}],
        "state_dir": "state",
    }
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config))
    agent = Agent(load_agent_config(tmp_path / "agent.yaml"), rng=seeded_random(1))
    yield LiveAgent(agent, LiveSettings())
    agent.close()


def test_malformed_counted_per_source_and_quarantined(tmp_path: Path, live: LiveAgent) -> None:
    json_log = tmp_path / "json" / "conn.log"
    tsv_log = tmp_path / "tsv" / "conn.log"
    json_log.write_text(json_line(0) + "{not json\n" + json_line(1) + "[1, 2]\n")
    tsv_log.write_text(TSV_HEADER + tsv_line(0) + "only\ttwo\n" + tsv_line(1))

    report = live.step()
    samples = [json.loads(line) for line in (tmp_path / "state" / "quarantine.jsonl").read_text().splitlines()]

    assert report.lines == 4 + 7 + 3
    assert dict(live.malformed.counts) == {
        ("sources[0]", "invalid_json"): 1,
        ("sources[0]", "not_json_object"): 1,
        ("sources[1]", "column_count"): 1,
    }
    assert live.parse_stats.records == 4
    first_json_bad = len(json_line(0).encode())
    assert {"source": str(json_log), "offset": first_json_bad, "reason": "invalid_json", "raw": "{not json"} \
        in samples
    tsv_bad = len((TSV_HEADER + tsv_line(0)).encode())
    assert {"source": str(tsv_log), "offset": tsv_bad, "reason": "column_count", "raw": "only\ttwo"} in samples
    assert len(samples) == 3


def test_malformed_warnings_limited_per_interval(tmp_path: Path, live: LiveAgent,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    live.malformed = MalformedInput(live.malformed.tailers, None, max_warnings=2, interval_secs=60.0,
                                    clock=lambda: now[0])
    json_log = tmp_path / "json" / "conn.log"

    with caplog.at_level(logging.WARNING, logger="agent.malformed"):
        json_log.write_text("".join("{bad\n" for _ in range(5)))
        live.step()
        now[0] = 61.0
        live.malformed.flush()
    messages = [record.getMessage() for record in caplog.records]

    assert len(messages) == 3
    assert messages[0].startswith(f"log {json_log} line 1 (byte offset 0): ")
    assert messages[1].startswith(f"log {json_log} line 2 (byte offset 5): ")
    assert messages[2] == (f"log {json_log}: 3 more malformed lines skipped in the last 60 s (invalid_json 3); "
                           "the first 2 of that interval were logged one by one")
    assert live.malformed.counts[("sources[0]", "invalid_json")] == 5
