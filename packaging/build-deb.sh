#!/usr/bin/env bash
# Build the fti Debian package into OUT_DIR (default: dist/ beside packaging/).
#
# The package contains a virtual environment at /opt/fti made by Debian's python3 from the
# project's wheel and its dependencies from PyPI, the systemd units, sysusers.d and
# tmpfiles.d entries, commented configuration files in /etc/fti (conffiles) and
# maintainer scripts that create the users but enable nothing.
#
# Needs: python3 with venv (Debian's python3-venv), dpkg-deb, network access to PyPI.
# The virtual environment is bound to this python3's minor version, and so is the package.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out_dir=${1:-$repo/dist}
python=${FTI_DEB_PYTHON:-/usr/bin/python3}
packaging=$repo/packaging

version=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$repo/pyproject.toml")
arch=$(dpkg --print-architecture)
py_minor=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/stage
venv=$stage/opt/fti
export PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# 1. The project's wheel, built in a throwaway environment.
"$python" -m venv "$work/build-env"
"$work/build-env/bin/pip" wheel --quiet --no-deps --wheel-dir "$work/wheels" "$repo"

# 2. The application environment, made in the stage and moved to /opt/fti by dpkg.
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --no-compile "$work"/wheels/fti-*.whl
"$venv/bin/pip" uninstall --quiet --yes pip setuptools
# Only the fti command and the interpreter are meant to be run. The dependencies' console
# scripts (flask, f2py, numba and others) are left out.
find "$venv/bin" -mindepth 1 -maxdepth 1 ! -name fti ! -name 'python*' -delete
# Shared objects are loaded, never run (Debian policy 8.1).
find "$venv" -type f -name '*.so*' -exec chmod 0644 {} +
# Scripts and pyvenv.cfg name the stage path; they must name the installed one.
grep -rlF --null "$stage" "$venv" | xargs -0 --no-run-if-empty sed -i "s#$stage##g"
find "$stage" -depth -type d -name __pycache__ -exec rm -rf {} +
find "$venv" -name direct_url.json -delete

# 3. Units, users, state directories, configuration and documentation.
install -D -m 0644 -t "$stage/lib/systemd/system" "$packaging"/systemd/fti-agent.service \
    "$packaging"/systemd/fti-hub.service
install -D -m 0644 "$packaging/sysusers.d/fti.conf" "$stage/usr/lib/sysusers.d/fti.conf"
install -D -m 0644 "$packaging/tmpfiles.d/fti.conf" "$stage/usr/lib/tmpfiles.d/fti.conf"
install -D -m 0644 -t "$stage/etc/fti" "$packaging"/etc/agent.yaml "$packaging"/etc/hub.yaml
install -d "$stage/usr/bin"
ln -s /opt/fti/bin/fti "$stage/usr/bin/fti"
doc=$stage/usr/share/doc/fti
install -D -m 0644 "$packaging/debian/copyright" "$doc/copyright"
install -m 0644 "$repo/docs/install.md" "$doc/install.md"
date_rfc2822=$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}")
printf 'fti (%s) unstable; urgency=medium\n\n  * Release %s; see the project history for changes.\n\n -- fti developers <fti-developers@example.org>  %s\n' \
    "$version" "$version" "$date_rfc2822" | gzip -9n > "$doc/changelog.gz"
install -D -m 0644 "$packaging/debian/lintian-overrides" "$stage/usr/share/lintian/overrides/fti"

# 4. Control data: metadata, conffiles, maintainer scripts and checksums.
install -d "$stage/DEBIAN"
installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
next_minor=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
    -e "s/python3 (>= 3.11), python3 (<< 3.12)/python3 (>= $py_minor), python3 (<< $next_minor)/" \
    "$packaging/debian/control.in" > "$stage/DEBIAN/control"
install -m 0644 "$packaging/debian/conffiles" "$stage/DEBIAN/conffiles"
install -m 0755 -t "$stage/DEBIAN" "$packaging"/debian/postinst "$packaging"/debian/prerm \
    "$packaging"/debian/postrm
(cd "$stage" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"

mkdir -p "$out_dir"
deb=$out_dir/fti_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zgzip -z6 --build "$stage" "$deb" >/dev/null
echo "$deb"
