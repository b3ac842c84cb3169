"""Fused indicators as an Elasticsearch bulk request body, appended to an NDJSON file.

Each indicator becomes two lines: the ``create`` action and the ECS document from
``stix_mappings.ecs.indicator_to_ecs``. The file can be posted to ``_bulk`` as is, with
``Content-Type: application/x-ndjson`` (Elasticsearch 8.x bulk API). The target is a data stream
(default ``logs-ti_fti.indicator-default``), which accepts only the ``create`` operation.

The document ``_id`` is ``stix_mappings.ecs.ecs_document_id``, ``<indicator id>@<modified>``:
one document per indicator version, so posting the same file twice creates nothing new
(Elasticsearch returns 409 per duplicate).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from siem_integrations.errors import SinkEventInvalid
from siem_integrations.ndjson_file import NdjsonAppender, dump_line
from siem_integrations.sink import SinkResult
from stix_mappings.ecs import ecs_document_id, indicator_to_ecs

log = logging.getLogger(__name__)

DEFAULT_INDEX = "logs-ti_fti.indicator-default"


class ElasticBulkFileSink:
    """Append fused indicators to a file of bulk ``create`` actions and ECS documents.

    Parameters
    ----------
    path : Path
        NDJSON output file.
    index : str, default "logs-ti_fti.indicator-default"
        Index or data stream named in every action.
    """

    name = "elastic-bulk-file"

    def __init__(self, path: Path, *, index: str = DEFAULT_INDEX) -> None:
        self.path = Path(path)
        self.index = index
        self._appender = NdjsonAppender(self.path)

    def write_indicators(self, indicators: Sequence[Mapping[str, Any]]) -> SinkResult:
        """Convert, check and append one batch; fsync before returning.

        Raises
        ------
        SinkWriteFailed
            If the file cannot be written; nothing of the batch is reported as written.
        """
        lines: list[str] = []
        rejected: list[tuple[str, str]] = []
        for indicator in indicators:
            indicator_id = str(indicator.get("id", "?"))
            try:
                document = indicator_to_ecs(dict(indicator))
                if not isinstance(document, Mapping) or "@timestamp" not in document:
                    raise SinkEventInvalid(self.name, indicator_id,
                                           "ECS document has no '@timestamp'")
                action = {"create": {"_index": self.index,
                                     "_id": ecs_document_id(dict(indicator))}}
                lines.extend((dump_line(action), dump_line(document)))
            except (SinkEventInvalid, ValueError, KeyError, TypeError) as err:
                rejected.append((indicator_id, str(err)))
        self._appender.append(lines)
        if rejected:
            log.error("%s: %d of %d documents left out of %s; first: %s", self.name,
                      len(rejected), len(indicators), self.path, rejected[0][1])
        return SinkResult(written=len(lines) // 2, rejected=tuple(rejected))

