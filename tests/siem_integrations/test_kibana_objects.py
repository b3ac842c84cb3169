"""Check the Kibana saved objects NDJSON that ships for the fused-indicator dashboard."""

from __future__ import annotations

import fnmatch
import json
from importlib import resources
from typing import Any

from siem_integrations.ecs_fields import load_ecs_fields
from siem_integrations.elastic_bulk import DEFAULT_DATA_STREAM, load_bundled_json


def saved_objects() -> list[dict[str, Any]]:
    text = resources.files("siem_integrations").joinpath(
        "elastic/kibana-saved-objects.ndjson").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_every_reference_resolves() -> None:
    objects = saved_objects()
    known = {(o["type"], o["id"]) for o in objects}

    missing = [(o["id"], r) for o in objects for r in o["references"]
               if (r["type"], r["id"]) not in known]

    assert missing == []


def test_data_view_matches_data_stream() -> None:
    views = [o for o in saved_objects() if o["type"] == "index-pattern"]

    assert len(views) == 1
    assert fnmatch.fnmatch(DEFAULT_DATA_STREAM, views[0]["attributes"]["title"])
    assert views[0]["attributes"]["timeFieldName"] == "@timestamp"


def test_dashboard_panels_name_their_references() -> None:
    dashboard = next(o for o in saved_objects() if o["type"] == "dashboard")
    panels = json.loads(dashboard["attributes"]["panelsJSON"])

    assert sorted(p["panelRefName"] for p in panels) == sorted(
        r["name"] for r in dashboard["references"])


def test_search_columns_are_mapped_fields() -> None:
    ecs = load_ecs_fields()
    template = load_bundled_json("index-template.json")["template"]["mappings"]["properties"]

    def mapped(path: str) -> bool:
        node: dict[str, Any] = {"properties": template}
        for part in path.split("."):
            node = node.get("properties", {}).get(part, {})
        return bool(node)

    for search in (o for o in saved_objects() if o["type"] == "search"):
        for column in search["attributes"]["columns"]:
            assert column in ecs or column.startswith("fti."), column
            assert mapped(column), column
