"""Build the Splunk add-on TA-fti into ``dist/``: the app folder and its ``.tgz`` package.

``python -m siem_integrations.splunk.build --out dist`` copies ``TA-fti`` and vendors the
installed Splunk SDK for Python (``splunklib``, Apache-2.0) into ``TA-fti/lib``, because
Splunk's own Python has no splunklib. It also copies ``siem_integrations/taxii_cursor.py``
there, so the add-on and ``fti siem sync`` page TAXII collections with the same code. The archive lists files in sorted order with fixed
owner and mode bits, so the same sources always give the same listing.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tarfile
from pathlib import Path

log = logging.getLogger(__name__)

APP_NAME = "TA-fti"
SOURCE = Path(__file__).resolve().parent / APP_NAME
# Standard-library modules of this package that the add-on imports from its lib/ folder.
SHARED_MODULES = (Path(__file__).resolve().parent.parent / "taxii_cursor.py",)


def app_version(app_dir: Path) -> str:
    """Return ``[launcher] version`` of the app's ``default/app.conf``."""
    section = None
    for line in (app_dir / "default" / "app.conf").read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "launcher" and line.startswith("version"):
            return line.split("=", 1)[1].strip()
    raise ValueError(f"{app_dir / 'default' / 'app.conf'} has no [launcher] version")


def build_app(out_dir: Path) -> Path:
    """Assemble the app in ``out_dir`` and return the path of its ``.tgz`` package."""
    import splunklib

    # Start from a clean folder, so no file of an earlier build survives.
    app_dir = out_dir / APP_NAME
    if app_dir.exists():
        shutil.rmtree(app_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    shutil.copytree(SOURCE, app_dir, ignore=ignore)
    shutil.copytree(Path(splunklib.__file__).parent, app_dir / "lib" / "splunklib",
                    ignore=ignore)
    for module in SHARED_MODULES:
        shutil.copy2(module, app_dir / "lib" / module.name)

    # Splunk runs bin/ scripts itself; nothing else needs the executable bit.
    for path in sorted(app_dir.rglob("*")):
        if path.is_dir():
            path.chmod(0o755)
        elif path.parent == app_dir / "bin" and path.suffix == ".py":
            path.chmod(0o755)
        else:
            path.chmod(0o644)

    package = out_dir / f"{APP_NAME}-{app_version(app_dir)}.tgz"
    with tarfile.open(package, "w:gz") as archive:
        for path in [app_dir, *sorted(app_dir.rglob("*"))]:
            info = archive.gettarinfo(str(path), arcname=str(path.relative_to(out_dir)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            if info.isfile():
                with path.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    log.info("built %s", package)
    return package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the TA-fti Splunk add-on.")
    parser.add_argument("--out", default="dist", help="output folder (default: dist)")
    args = parser.parse_args(argv)
    print(build_app(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
