"""A hub process for the shared-database test: try to close given rounds, print which it did.

Usage: python round_closer.py CONFIG_YAML HUB_NOW_ISO START_AT_EPOCH_SECS ROUND_US[,ROUND_US...]

It builds a full ``HubServer`` on the configured PostgreSQL schema (without serving HTTP),
waits until ``START_AT_EPOCH_SECS`` so that both processes race, tries to close every listed
round (epoch microseconds) whether or not it still looks open, and prints a JSON list of the
rounds that this process closed.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

from fusion_hub.config import load_hub_config
from fusion_hub.server import HubServer
from fusion_hub.timeutil import from_micros, to_micros


def main(argv: list[str]) -> int:
    config = load_hub_config(argv[1])
    hub_now = datetime.fromisoformat(argv[2])
    start_at = float(argv[3])
    rounds = [from_micros(int(text)) for text in argv[4].split(",")]
    hub = HubServer(config, clock=lambda: hub_now)
    closed = []
    try:
        time.sleep(max(0.0, start_at - time.time()))
        for round_start in rounds:
            if hub.rounds.close_round(round_start, reason="forced") is not None:
                closed.append(to_micros(round_start))
    finally:
        hub.stop()
    print(json.dumps(closed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
