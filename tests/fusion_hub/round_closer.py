"""A second hub process for the shared-database test: close every open round, print which.

Usage: python round_closer.py CONFIG_YAML HUB_NOW_ISO START_AT_EPOCH_SECS

It builds a full ``HubServer`` on the configured PostgreSQL schema (without serving HTTP),
waits until ``START_AT_EPOCH_SECS`` so that both processes race, closes every open round and
prints a JSON list of the round starts (epoch microseconds) that this process closed.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

from fusion_hub.config import load_hub_config
from fusion_hub.server import HubServer
from fusion_hub.timeutil import to_micros


def main(argv: list[str]) -> int:
    config = load_hub_config(argv[1])
    hub_now = datetime.fromisoformat(argv[2])
    start_at = float(argv[3])
    hub = HubServer(config, clock=lambda: hub_now)
    try:
        time.sleep(max(0.0, start_at - time.time()))
        outcomes = hub.rounds.close_all_open_rounds()
    finally:
        hub.stop()
    print(json.dumps([to_micros(o.round_start) for o in outcomes]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
