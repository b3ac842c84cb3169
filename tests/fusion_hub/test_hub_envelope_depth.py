"""Deeply nested JSON in an Add Objects request: a TAXII error or a failed member, never a 500.

A member nested past MAX_MEMBER_DEPTH fails alone. Nesting that exhausts Python's recursion
limit while the envelope is split (1000 frames by default, shared with the frames already on
the stack) fails the whole envelope with 400, because the parser cannot find where its members
end.
"""

from __future__ import annotations

import pytest

from fusion_hub.envelope import MAX_MEMBER_DEPTH, split_envelope
from fusion_hub.errors import EnvelopeInvalid


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_envelope_nested_past_parser_is_invalid() -> None:
    body = b'{"objects": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"

    with pytest.raises(EnvelopeInvalid) as excinfo:
        split_envelope(body)

    assert "nested too deeply" in str(excinfo.value)


@pytest.mark.parametrize("depth", [MAX_MEMBER_DEPTH + 1, 200])
def test_deep_member_fails_alone(depth: int) -> None:
    body = ('{"objects": [{"type": "x-a", "x": ' + nested(depth) + '}, {"ok": true}]}').encode()

    objects = split_envelope(body)

    assert len(objects) == 2
    assert objects[0].value is None
    assert objects[0].error == f"the object is nested more than {MAX_MEMBER_DEPTH} levels deep"
    assert objects[1].error is None
    assert objects[1].value == {"ok": True}


def test_member_at_depth_limit_parses() -> None:
    # The object itself is one level, so its member may nest MAX_MEMBER_DEPTH - 1 levels.
    body = ('{"objects": [{"x": ' + nested(MAX_MEMBER_DEPTH - 1) + "}]}").encode()

    objects = split_envelope(body)

    assert objects[0].error is None


def test_deep_envelope_over_http_is_400(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import requests

    from stix_mappings.ids import collection_id
    from tests.fusion_hub.hub_testing import enroll, make_config, running_hub

    taxii = "application/taxii+json;version=2.1"
    with running_hub(make_config(tmp_path)) as server:
        site = enroll(server, "site-a")
        url = f"{server.api_root_url}collections/{collection_id('summaries')}/objects/"
        headers = {"Accept": taxii, "Content-Type": taxii}
        too_deep = b'{"objects": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
        deep_member = ('{"objects": [{"type": "x-a", "x": ' + nested(200) + "}]}").encode()

        envelope = requests.post(url, data=too_deep, auth=site.auth, headers=headers, timeout=10)
        member = requests.post(url, data=deep_member, auth=site.auth, headers=headers, timeout=10)

    assert envelope.status_code == 400
    assert envelope.headers["Content-Type"] == taxii
    assert "nested too deeply" in envelope.json()["description"]
    assert member.status_code == 202
    assert member.json()["failure_count"] == 1
    assert member.json()["failures"][0]["message"] == (
        f"invalid JSON member: the object is nested more than {MAX_MEMBER_DEPTH} levels deep")
