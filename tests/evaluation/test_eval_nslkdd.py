"""NSL-KDD records mapped to Zeek conn records and read back by the agent's own code."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

import pytest

from evaluation.datasets import load_site
from evaluation.nslkdd import (
    NSLKDD_FOLDER,
    NSLKDD_ONE_SITE_CLASSES,
    TRAIN_FILE,
    signature_address,
    write_nslkdd_sites,
)


@pytest.fixture()
def small_nslkdd(shared_data_dir: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """The first 1,500 lines of the real training file, in a data folder of its own."""
    lines = (shared_data_dir / NSLKDD_FOLDER / TRAIN_FILE).read_text(encoding="utf-8").splitlines()[:1500]
    folder = tmp_path / "data" / NSLKDD_FOLDER
    folder.mkdir(parents=True)
    (folder / TRAIN_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "data", lines


def test_signature_address_global_and_stable() -> None:
    first = signature_address("tcp", "private", "S0")

    assert ipaddress.ip_address(first).is_global
    assert first == signature_address("tcp", "private", "S0")
    assert first != signature_address("tcp", "http", "SF")


def test_write_sites_agent_reads_every_record(small_nslkdd: tuple[Path, list[str]], tmp_path: Path) -> None:
    data_dir, lines = small_nslkdd
    work = tmp_path / "work"

    specs = write_nslkdd_sites(data_dir, work, n_sites=4, alpha=0.5, seed=1, shift=False)
    sites = [load_site(spec, data_dir=work, work_dir=work, rounds=5, window_seconds=60,
                       baseline_rounds=1, min_baseline_windows=16, random_state=0) for spec in specs]

    labels = [line.split(",")[41] for line in lines]
    assert sum(site.flow_label.size for site in sites) == len(lines)
    assert sum(int(site.flow_label.sum()) for site in sites) == sum(label != "normal" for label in labels)
    for site in sites:
        # Each record is one window of its own host.
        assert len(site.windows) == site.flow_label.size
        assert all(window.features[0] == 1 for window in site.windows)


def test_write_sites_rare_classes_whole(small_nslkdd: tuple[Path, list[str]], tmp_path: Path) -> None:
    data_dir, lines = small_nslkdd
    work = tmp_path / "work"

    specs = write_nslkdd_sites(data_dir, work, n_sites=4, alpha=0.5, seed=2, shift=False)

    holders: dict[str, set[str]] = {}
    for spec in specs:
        for line in (work / spec.capture).read_text(encoding="utf-8").splitlines():
            label = line.rsplit('"detailed-label": "', 1)[1].rstrip('"}')
            holders.setdefault(label, set()).add(spec.site_id)
    present = Counter(line.split(",")[41] for line in lines)
    for name in NSLKDD_ONE_SITE_CLASSES:
        if present[name]:
            assert len(holders[name]) == 1, name


def test_write_sites_short_line_error(tmp_path: Path) -> None:
    folder = tmp_path / NSLKDD_FOLDER
    folder.mkdir()
    (folder / TRAIN_FILE).write_text("0,tcp,http,SF,1,2,normal,20\n", encoding="utf-8")

    with pytest.raises(ValueError) as excinfo:
        write_nslkdd_sites(tmp_path, tmp_path / "work", n_sites=2, alpha=1.0, seed=0, shift=False)

    assert f"{TRAIN_FILE}:1: expected 43 comma-separated fields, found 8" in str(excinfo.value)
