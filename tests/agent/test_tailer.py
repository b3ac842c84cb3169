"""The file tailer against rotation, truncation, partial lines and restarts.

Cases 003 and 004 run their own shell scripts against a tailer polling every 50 ms, so the
races they describe happen for real. The other tests drive each situation step by step.
"""

from __future__ import annotations

import gzip
import os
import random
import re
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest

import agent.tailer as tailer_module
from agent.tailer import LogTailer, TailBatch, TailCheckpoint, TailLine, TailLines


def drain(tailer: LogTailer) -> list[bytes]:
    return [line.data for line in tailer.poll()]


def run_case_script(script: Path, folder: Path, tailer: LogTailer) -> list[tuple[TailLine, int]]:
    """Run a case script while polling; return each line with the checkpoint offset after it."""
    process = subprocess.Popen(["sh", str(script), str(folder)], env={**os.environ, "PAUSE": "0.4"},
                               stderr=subprocess.DEVNULL)
    seen: list[tuple[TailLine, int]] = []
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        for line in tailer.poll():
            seen.append((line, tailer.checkpoints()[0].offset))
        time.sleep(0.05)
    assert process.wait(timeout=5) == 0

    # Let rotated files pass their quiet period and be closed.
    for _ in range(10):
        seen.extend((line, -1) for line in tailer.poll())
        time.sleep(0.05)
    return seen


def markers(lines: list[bytes], pattern: str) -> list[str]:
    return [re.search(pattern.encode(), data).group(1).decode() for data in lines]


# -- case 003: copytruncate --------------------------------------------------------------------


@pytest.fixture(scope="module")
def copytruncate_run(cases_dir: Path, tmp_path_factory: pytest.TempPathFactory
                     ) -> tuple[LogTailer, list[tuple[TailLine, int]], Path]:
    folder = tmp_path_factory.mktemp("case003")
    tailer = LogTailer([str(folder / "auth.log")], poll_interval_secs=0.05, rotate_wait_secs=0.2)
    seen = run_case_script(cases_dir / "003-tail-copytruncate-shrink.input.sh", folder, tailer)
    tailer.close()
    return tailer, seen, folder


def test_copytruncate_case_delivers_each_line_once_in_order(
    copytruncate_run: tuple[LogTailer, list[tuple[TailLine, int]], Path],
) -> None:
    _, seen, _ = copytruncate_run

    pids = markers([line.data for line, _ in seen], r"sshd\[(\d+)\]")

    expected = [f"100{i}" for i in range(1, 6)] + [f"20{i:02d}" for i in range(1, 11)] + ["3001"]
    assert pids == expected
    assert all(not line.truncated and b"\0" not in line.data for line, _ in seen)


def test_copytruncate_case_checkpoints_into_new_content(
    copytruncate_run: tuple[LogTailer, list[tuple[TailLine, int]], Path],
) -> None:
    """After step 2 the checkpoint points into the 184 new bytes, not at the old 460."""
    tailer, seen, _ = copytruncate_run

    offsets = {re.search(rb"sshd\[(\d+)\]", line.data).group(1): offset for line, offset in seen}

    assert offsets[b"2002"] == 184
    assert offsets[b"3001"] == 920 + 92
    # Step 4 is seen as a truncation or, once the NUL run is written, as a rewrite.
    assert tailer.stats.truncations + tailer.stats.rewrites == 2
    assert tailer.stats.nul_bytes_skipped == 920


def test_copytruncate_case_restart_sends_nothing_again(
    copytruncate_run: tuple[LogTailer, list[tuple[TailLine, int]], Path],
) -> None:
    first, _, folder = copytruncate_run

    second = LogTailer([str(folder / "auth.log")], checkpoints=first.checkpoints())

    assert drain(second) == []


# -- case 004: rename rotation -----------------------------------------------------------------


@pytest.fixture(scope="module", params=["conn.log", "conn*"])
def rename_run(request: pytest.FixtureRequest, cases_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[LogTailer, list[bytes], Path]:
    """Run case 004 with the live name only, and with a pattern that also matches rotated files."""
    folder = tmp_path_factory.mktemp("case004")
    tailer = LogTailer([str(folder / request.param)], poll_interval_secs=0.05, rotate_wait_secs=0.2)
    seen = run_case_script(cases_dir / "004-tail-rename-rotation-drain.input.sh", folder, tailer)
    tailer.close()
    return tailer, [line.data for line, _ in seen], folder


def test_rename_rotation_case_drains_old_file_before_new(rename_run: tuple[LogTailer, list[bytes], Path]) -> None:
    tailer, lines, folder = rename_run

    uids = markers(lines, r'"uid":"(\w+)"')

    assert uids == ["CrA1", "CrA2", "CrA3", "CrA4", "CrB1", "CrB2"]
    assert tailer.stats.files_opened - tailer.stats.copies_found <= 3
    assert (folder / "conn.2024-05-01-10-00-00.log.gz").exists()


def test_rename_rotation_case_restart_sends_nothing_again(rename_run: tuple[LogTailer, list[bytes], Path]) -> None:
    first, _, folder = rename_run

    second = LogTailer(first.patterns, checkpoints=first.checkpoints())

    assert drain(second) == []


# -- case 006: line framing --------------------------------------------------------------------


def test_eve_framing_case_holds_partial_line_until_newline(cases_dir: Path, tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    eve.write_bytes((cases_dir / "006-eve-json-line-framing.input.json").read_bytes())
    tailer = LogTailer([str(eve)])

    before = drain(tailer)
    with eve.open("ab") as stream:
        stream.write(b',"dns":{"type":"query","rrname":"www.example.org","rrtype":"A"}}\n')
    after = drain(tailer)

    assert markers(before, r'"flow_id":(\d+)') == ["5001", "5002", "5004"]
    assert "Mozilla/5.0\u2028X-Probe: 1" in before[0].decode("utf-8")
    assert len(after) == 1
    assert after[0].startswith(b'{"timestamp":"2024-05-01T10:00:03')
    assert after[0].endswith(b'"rrtype":"A"}}')


def test_eve_framing_case_checkpoint_points_at_partial_line(cases_dir: Path, tmp_path: Path) -> None:
    eve = tmp_path / "eve.json"
    data = (cases_dir / "006-eve-json-line-framing.input.json").read_bytes()
    eve.write_bytes(data)
    first = LogTailer([str(eve)])
    drain(first)
    first.close()

    with eve.open("ab") as stream:
        stream.write(b',"dns":{"rrname":"www.example.org"}}\n')
    second = LogTailer([str(eve)], checkpoints=first.checkpoints())

    assert first.checkpoints()[0].offset == data.rindex(b"\n") + 1
    assert markers(drain(second), r'"flow_id":(\d+)') == ["5005"]


# -- framing details ---------------------------------------------------------------------------


def test_long_line_cut_and_rest_skipped(tmp_path: Path) -> None:
    log_file = tmp_path / "a.log"
    log_file.write_bytes(b"x" * 50 + b"\nshort\n")
    tailer = LogTailer([str(log_file)], max_line_bytes=10)

    lines = list(tailer.poll())

    assert [(line.data, line.truncated) for line in lines] == [(b"x" * 10, True), (b"short", False)]
    assert tailer.stats.lines_cut == 1


def test_long_partial_line_cut_once_across_polls(tmp_path: Path) -> None:
    """An over-long line still being written is cut once; its tail is skipped when it ends."""
    log_file = tmp_path / "a.log"
    log_file.write_bytes(b"y" * 40)
    tailer = LogTailer([str(log_file)], max_line_bytes=10)

    first = list(tailer.poll())
    with log_file.open("ab") as stream:
        stream.write(b"y" * 40 + b"\nnext\n")
    second = drain(tailer)

    assert [(line.data, line.truncated) for line in first] == [(b"y" * 10, True)]
    assert second == [b"next"]
    assert tailer.stats.lines_cut == 1


def test_cr_and_unicode_separators_kept_in_line(tmp_path: Path) -> None:
    log_file = tmp_path / "a.log"
    log_file.write_bytes("a\u2028b\x1cc\r\nd\n".encode())
    tailer = LogTailer([str(log_file)])

    assert drain(tailer) == ["a\u2028b\x1cc\r".encode(), b"d"]


# -- identity ----------------------------------------------------------------------------------


def test_rewrite_in_place_with_same_inode_restarts_at_zero(tmp_path: Path) -> None:
    """Different first bytes under the same inode (as after an inode is reused) mean a new file."""
    log_file = tmp_path / "a.log"
    log_file.write_bytes(b"old one\nold two\n")
    tailer = LogTailer([str(log_file)])
    drain(tailer)

    with log_file.open("r+b") as stream:
        stream.write(b"new one\nnew two\nnew three\n")

    assert drain(tailer) == [b"new one", b"new two", b"new three"]
    assert tailer.stats.rewrites == 1


def test_restored_checkpoint_with_other_fingerprint_reads_from_zero(tmp_path: Path) -> None:
    log_file = tmp_path / "a.log"
    log_file.write_bytes(b"first\n")
    info = log_file.stat()
    stale = TailCheckpoint(str(log_file), info.st_dev, info.st_ino, "0" * 64, 6, 6)

    tailer = LogTailer([str(log_file)], checkpoints=[stale])

    assert drain(tailer) == [b"first"]


def test_symlink_and_target_read_once(tmp_path: Path) -> None:
    target = tmp_path / "real.log"
    target.write_bytes(b"one\n")
    (tmp_path / "link.log").symlink_to(target)
    tailer = LogTailer([str(tmp_path / "link.log"), str(tmp_path / "real.log")])

    assert drain(tailer) == [b"one"]


def test_symlink_retargeted_drains_old_then_reads_new(tmp_path: Path) -> None:
    old, new, link = tmp_path / "old.log", tmp_path / "new.log", tmp_path / "current.log"
    old.write_bytes(b"old one\n")
    link.symlink_to(old)
    tailer = LogTailer([str(link)], rotate_wait_secs=0)
    drain(tailer)

    with old.open("ab") as stream:
        stream.write(b"old two\n")
    new.write_bytes(b"new one\n")
    link.unlink()
    link.symlink_to(new)

    assert drain(tailer) == [b"old two", b"new one"]


def test_start_at_end_skips_existing_but_reads_later_files(tmp_path: Path) -> None:
    existing = tmp_path / "a.log"
    existing.write_bytes(b"history\n")
    tailer = LogTailer([str(tmp_path / "*.log")], start_at="end")
    first = drain(tailer)

    with existing.open("ab") as stream:
        stream.write(b"live\n")
    (tmp_path / "b.log").write_bytes(b"born later\n")

    assert first == []
    assert drain(tailer) == [b"live", b"born later"]


def test_copy_in_pattern_recovers_lines_before_copytruncate(tmp_path: Path) -> None:
    """Lines written after the last poll but before the truncation are read from the copy."""
    log_file = tmp_path / "auth.log"
    log_file.write_bytes(b"line one is here\n")
    tailer = LogTailer([str(tmp_path / "auth.log*")])
    drain(tailer)

    with log_file.open("ab") as stream:
        stream.write(b"line two, unread\n")
    copy = tmp_path / "auth.log.1"
    copy.write_bytes(log_file.read_bytes())
    log_file.write_bytes(b"after truncate\n")

    assert sorted(drain(tailer)) == [b"after truncate", b"line two, unread"]
    assert drain(tailer) == []


# -- restart while files rotated ---------------------------------------------------------------


def test_restart_drains_file_renamed_while_stopped(tmp_path: Path) -> None:
    log_file = tmp_path / "conn.log"
    log_file.write_bytes(b"a1\n")
    first = LogTailer([str(log_file)])
    drain(first)
    first.close()

    with log_file.open("ab") as stream:
        stream.write(b"a2\n")
    log_file.rename(tmp_path / "conn.1.log")
    log_file.write_bytes(b"b1\n")
    second = LogTailer([str(log_file)], checkpoints=first.checkpoints())

    assert drain(second) == [b"a2", b"b1"]


def test_restart_drains_file_compressed_while_stopped(tmp_path: Path) -> None:
    log_file = tmp_path / "conn.log"
    log_file.write_bytes(b"a1\n")
    first = LogTailer([str(log_file)])
    drain(first)
    first.close()

    rotated = tmp_path / "conn.1.log.gz"
    rotated.write_bytes(gzip.compress(log_file.read_bytes() + b"a2\n"))
    log_file.unlink()
    log_file.write_bytes(b"b1\n")
    second = LogTailer([str(log_file)], checkpoints=first.checkpoints())

    assert drain(second) == [b"a2", b"b1"]


def test_gzip_file_in_pattern_read_once(tmp_path: Path) -> None:
    (tmp_path / "dns.1.log.gz").write_bytes(gzip.compress(b"q1\nq2\nq3"))
    tailer = LogTailer([str(tmp_path / "*.gz")], rotate_wait_secs=0)

    first = drain(tailer)
    second = drain(tailer)

    assert first == [b"q1", b"q2", b"q3"]
    assert second == []


def test_many_gzip_archives_not_reread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Archives that a pattern still matches keep their finished checkpoints beyond the bound."""
    monkeypatch.setattr(tailer_module, "MAX_FINISHED_FILES", 4)
    for number in range(10):
        (tmp_path / f"conn.{number:02d}.log.gz").write_bytes(gzip.compress(f"c{number}a\nc{number}b\n".encode()))
    first = LogTailer([str(tmp_path / "*.gz")], rotate_wait_secs=0, use_inotify=False)
    read = drain(first) + drain(first)  # the second poll closes the archives read to their end
    first.close()

    second = LogTailer([str(tmp_path / "*.gz")], rotate_wait_secs=0, use_inotify=False,
                       checkpoints=first.checkpoints())
    again = drain(second)
    second.close()

    assert len(read) == 20
    assert again == []
    assert len(second.checkpoints()) == 10


def test_gzip_empty_then_compressed(tmp_path: Path) -> None:
    """gzip creates its output file before it writes any byte, so the tailer must wait for them."""
    rotated = tmp_path / "dns.1.log.gz"
    rotated.write_bytes(b"")
    tailer = LogTailer([str(tmp_path / "*.gz")], rotate_wait_secs=0)

    while_empty = drain(tailer)
    rotated.write_bytes(gzip.compress(b"q1\nq2\n"))
    once_written = drain(tailer)

    assert while_empty == []
    assert once_written == [b"q1", b"q2"]
    assert drain(tailer) == []


def test_checkpoint_round_trips_through_dict(tmp_path: Path) -> None:
    log_file = tmp_path / "a.log"
    log_file.write_bytes(b"one\n")
    tailer = LogTailer([str(log_file)])
    drain(tailer)

    saved = [TailCheckpoint.from_dict(c.to_dict()) for c in tailer.checkpoints()]

    assert saved == tailer.checkpoints()


def test_invalid_settings_rejected() -> None:
    with pytest.raises(ValueError, match="start_at must be 'beginning' or 'end'; got 'middle'"):
        LogTailer(["*.log"], start_at="middle")
    with pytest.raises(ValueError, match="max_line_bytes must be at least 1; got 0"):
        LogTailer(["*.log"], max_line_bytes=0)
    with pytest.raises(ValueError, match="patterns must name at least one glob pattern"):
        LogTailer([])


# -- live following ----------------------------------------------------------------------------


@pytest.mark.parametrize("use_inotify", [True, False])
def test_follow_delivers_appended_lines_and_stops(tmp_path: Path, use_inotify: bool) -> None:
    log_file = tmp_path / "a.log"
    log_file.write_bytes(b"")
    tailer = LogTailer([str(tmp_path / "*.log")], poll_interval_secs=0.1, use_inotify=use_inotify)
    stop = threading.Event()
    received: list[bytes] = []
    threads_before = threading.active_count()

    def consume() -> None:
        for line in tailer.follow(stop):
            received.append(line.data)
            if len(received) == 2:
                stop.set()

    worker = threading.Thread(target=consume)
    worker.start()
    time.sleep(0.2)
    with log_file.open("ab") as stream:
        stream.write(b"one\n")
    (tmp_path / "b.log").write_bytes(b"two\n")
    worker.join(timeout=10)

    assert not worker.is_alive()
    assert received == [b"one", b"two"]
    assert threading.active_count() == threads_before


def flatten(batches: Iterable[TailBatch]) -> list[tuple[int, bytes, bool]]:
    """Return (offset, data, truncated) for each line of ``batches``."""
    found = []
    for batch in batches:
        offset = batch.offset
        for data in batch.lines:
            found.append((offset, data, batch.truncated))
            offset += len(data) + 1
    return found


@pytest.mark.parametrize("compressed", [False, True])
def test_poll_batches_match_poll_line_by_line(tmp_path: Path, compressed: bool) -> None:
    """Partial lines, NUL runs, over-long lines and CRs, appended in random pieces."""
    generator = random.Random(11)
    pieces = [b"a\n", b"bb\r\n", b"\0\0\0c\n", b"x" * 40 + b"\n", b"y" * 25, b"z" * 30 + b"\n", b"\n",
              b"partial", b" end\n", "é\n".encode(), b"\0", b"q\n"]
    content = b"".join(generator.choice(pieces) for _ in range(400))
    tailers = []
    for name in ("lines", "batches"):
        folder = tmp_path / name
        folder.mkdir()
        tailers.append((folder / "app.log", LogTailer([str(folder / "app.log*")], max_line_bytes=32,
                                                      use_inotify=False)))

    seen: dict[str, list[tuple[int, bytes, bool]]] = {"lines": [], "batches": []}
    as_lines = TailLines()
    position = 0
    while position < len(content):
        step = generator.randrange(1, 200)
        for path, _ in tailers:
            with open(path, "ab") as stream:
                stream.write(content[position:position + step])
        position += step
        seen["lines"].extend((line.offset, line.data, line.truncated) for line in tailers[0][1].poll())
        batches = list(tailers[1][1].poll_batches())
        for batch in batches:
            as_lines.append(batch)
        seen["batches"].extend(flatten(batches))
        assert tailers[0][1].checkpoints()[0].offset == tailers[1][1].checkpoints()[0].offset
    if compressed:
        for path, _ in tailers:
            path.with_name("app.log.1.gz").write_bytes(gzip.compress(path.read_bytes() + b"tail"))
            path.unlink()
        seen["lines"].extend((line.offset, line.data, line.truncated) for line in tailers[0][1].poll())
        seen["batches"].extend(flatten(tailers[1][1].poll_batches()))

    assert seen["batches"] == seen["lines"]
    assert [(line.offset, line.data, line.truncated) for line in as_lines] == seen["lines"][:len(as_lines)]
    assert as_lines[-1] == as_lines[len(as_lines) - 1]
    stats = [replace(tailer.stats, bytes_behind=list(tailer.stats.bytes_behind.values())) for _, tailer in tailers]
    assert stats[0] == stats[1]
    assert len(seen["lines"]) > 200


# -- restart after rotation while stopped: consumed content is never read twice ----------------


def stopped_after(log_file: Path, pattern: str, content: bytes) -> list[TailCheckpoint]:
    """Read ``content`` from ``log_file`` through ``pattern`` and return the checkpoints at the stop."""
    log_file.write_bytes(content)
    tailer = LogTailer([pattern], rotate_wait_secs=0)
    drain(tailer)
    tailer.close()
    return tailer.checkpoints()


@pytest.mark.parametrize("pattern", ["auth.log", "auth.log*"])
def test_restart_after_copytruncate_reads_copy_tail_once(tmp_path: Path, pattern: str) -> None:
    """The copy contains read lines and one unread line, and the truncated file new lines."""
    log_file = tmp_path / "auth.log"
    saved = stopped_after(log_file, str(tmp_path / pattern), b"old one\nold two\n")

    with log_file.open("ab") as stream:
        stream.write(b"old three, unread\n")
    (tmp_path / "auth.log.1").write_bytes(log_file.read_bytes())
    log_file.write_bytes(b"new one\n")
    second = LogTailer([str(tmp_path / pattern)], checkpoints=saved, rotate_wait_secs=0)

    assert drain(second) == [b"old three, unread", b"new one"]
    assert drain(second) == []
    assert drain(LogTailer([str(tmp_path / pattern)], checkpoints=second.checkpoints())) == []


@pytest.mark.parametrize("pattern", ["conn.log", "conn.log*"])
def test_restart_after_rename_and_gzip_reads_rest_once(tmp_path: Path, pattern: str) -> None:
    """A file read in part, then renamed and compressed while stopped, with a successor."""
    log_file = tmp_path / "conn.log"
    saved = stopped_after(log_file, str(tmp_path / pattern), b"a1\na2\n")

    with log_file.open("ab") as stream:
        stream.write(b"a3\n")
    (tmp_path / "conn.log.1.gz").write_bytes(gzip.compress(log_file.read_bytes()))
    log_file.unlink()
    log_file.write_bytes(b"b1\n")
    second = LogTailer([str(tmp_path / pattern)], checkpoints=saved, rotate_wait_secs=0)

    assert drain(second) == [b"a3", b"b1"]
    assert drain(second) == []
    assert drain(LogTailer([str(tmp_path / pattern)], checkpoints=second.checkpoints())) == []


@pytest.mark.parametrize("rotated", ["conn.log.1", "conn.log.1.gz"])
def test_restart_rotated_in_pattern_drained_first(tmp_path: Path, rotated: str) -> None:
    """``conn.log.1`` sorts after ``conn.log``, yet its last line comes before the successor's."""
    log_file = tmp_path / "conn.log"
    saved = stopped_after(log_file, str(tmp_path / "conn.log*"), b"a1\n")

    with log_file.open("ab") as stream:
        stream.write(b"a2\n")
    if rotated.endswith(".gz"):
        (tmp_path / rotated).write_bytes(gzip.compress(log_file.read_bytes()))
        log_file.unlink()
    else:
        log_file.rename(tmp_path / rotated)
    log_file.write_bytes(b"b1\n")
    second = LogTailer([str(tmp_path / "conn.log*")], checkpoints=saved)

    assert drain(second) == [b"a2", b"b1"]


def test_restart_replaced_file_recognises_later_copy(tmp_path: Path) -> None:
    """A file replaced while stopped is read from 0, and a later copy of its old content only past it."""
    log_file = tmp_path / "app.log"
    saved = stopped_after(log_file, str(tmp_path / "app.log*"), b"old one\nold two\n")
    old = log_file.read_bytes()

    with log_file.open("r+b") as stream:
        stream.write(b"new one\nnew two\nnew three\n")
    second = LogTailer([str(tmp_path / "app.log*")], checkpoints=saved, rotate_wait_secs=0)
    first_poll = drain(second)
    (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(old + b"old three\n"))

    assert first_poll == [b"new one", b"new two", b"new three"]
    assert drain(second) == [b"old three"]


def test_restart_keeps_identity_of_file_not_found(tmp_path: Path) -> None:
    """A file that is nowhere at one start is still known at the next, when its copy appears."""
    log_file = tmp_path / "app.log"
    saved = stopped_after(log_file, str(tmp_path / "app.log*"), b"one\ntwo\n")
    old = log_file.read_bytes()

    log_file.unlink()
    second = LogTailer([str(tmp_path / "app.log*")], checkpoints=saved)
    assert drain(second) == []
    (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(old + b"three\n"))
    third = LogTailer([str(tmp_path / "app.log*")], checkpoints=second.checkpoints())

    assert drain(third) == [b"three"]


def test_restart_waits_for_copy_shorter_than_offset(tmp_path: Path) -> None:
    """A copy still being written is not read from 0 (``cp`` writes in blocks)."""
    log_file = tmp_path / "app.log"
    saved = stopped_after(log_file, str(tmp_path / "app.log*"), b"".join(b"line %04d\n" % n for n in range(300)))
    old = log_file.read_bytes()

    copy = tmp_path / "app.log.1"
    copy.write_bytes(old[:2048])
    log_file.unlink()
    second = LogTailer([str(tmp_path / "app.log*")], checkpoints=saved)
    while_copying = drain(second)
    copy.write_bytes(old + b"line three\n")

    assert while_copying == []
    assert drain(second) == [b"line three"]


def test_restart_copy_sorted_first_live_file_followed(tmp_path: Path) -> None:
    """A copy (``cp`` before a truncation) that sorts before the live file leaves it followed."""
    log_file = tmp_path / "conn.log"
    saved = stopped_after(log_file, str(tmp_path / "conn*.log"), b"a1\n")

    with log_file.open("ab") as stream:
        stream.write(b"a2\n")
    (tmp_path / "conn-1.log").write_bytes(log_file.read_bytes())
    second = LogTailer([str(tmp_path / "conn*.log")], checkpoints=saved)
    first_poll = drain(second)
    with log_file.open("ab") as stream:
        stream.write(b"a3\n")

    assert first_poll == [b"a2"]
    assert drain(second) == [b"a3"]


def test_restart_start_at_end_reads_new_files(tmp_path: Path) -> None:
    log_file = tmp_path / "conn.log"
    saved = stopped_after(log_file, str(tmp_path / "conn.log"), b"a1\n")

    log_file.rename(tmp_path / "conn.log.1")
    log_file.write_bytes(b"b1\n")
    second = LogTailer([str(log_file)], checkpoints=saved, start_at="end")

    assert drain(second) == [b"b1"]


def test_restart_regrown_same_head_reads_from_zero(tmp_path: Path) -> None:
    """Same first bytes and longer than the offset, but no line ends where the offset points."""
    log_file = tmp_path / "app.log"
    banner = b"#" * 1100
    saved = stopped_after(log_file, str(log_file), banner + b"\nab\n")

    log_file.write_bytes(banner + b"\nabcdef\n")
    second = LogTailer([str(log_file)], checkpoints=saved)

    assert drain(second) == [banner, b"abcdef"]


def test_restart_symlink_and_target_read_once(tmp_path: Path) -> None:
    target = tmp_path / "real.log"
    patterns = [str(tmp_path / "link.log"), str(target)]
    (tmp_path / "link.log").symlink_to(target)
    target.write_bytes(b"one\n")
    first = LogTailer(patterns)
    drain(first)
    first.close()

    with target.open("ab") as stream:
        stream.write(b"two\n")
    second = LogTailer(patterns, checkpoints=first.checkpoints())

    assert drain(second) == [b"two"]


def test_checkpoints_before_first_poll_kept(tmp_path: Path) -> None:
    """A tailer stopped before its first poll returns the checkpoints it was given."""
    log_file = tmp_path / "a.log"
    saved = stopped_after(log_file, str(log_file), b"one\n")

    second = LogTailer([str(log_file)], checkpoints=saved)
    second.close()

    assert second.checkpoints() == saved
    assert drain(LogTailer([str(log_file)], checkpoints=second.checkpoints())) == []


def test_restart_empty_file_gone_matches_nothing(tmp_path: Path) -> None:
    """An empty file has no first bytes, so no other file in its folder is taken for its copy."""
    (tmp_path / "conn-001.log").write_bytes(b"old\n")
    log_file = tmp_path / "conn.log"
    saved = stopped_after(log_file, str(tmp_path / "conn*.log"), b"")

    log_file.unlink()
    second = LogTailer([str(tmp_path / "conn*.log")], checkpoints=saved)

    assert [c.fingerprint_size for c in saved if c.path == str(log_file)] == [0]
    assert drain(second) == []
