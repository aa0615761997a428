#!/usr/bin/env bash
# Build the one-folder `daemon` executable with PyInstaller, then smoke-test it.
#
#   packaging/pyinstaller/build.sh            # build into dist/daemon/, then smoke-test
#   packaging/pyinstaller/build.sh --no-smoke # build only
#   packaging/pyinstaller/build.sh --smoke    # smoke-test the existing dist/daemon/ only
#
# PyInstaller is not a project dependency: it goes into a separate build venv
# (TETHER_BUILD_VENV, default build/pyinstaller/venv) with the project and its `build`
# extra. Needs Python >= 3.11 as PYTHON (default python3) and PyPI; runs on Linux and
# macOS (on Windows, run the same steps by hand: the venv's Scripts\ instead of bin/).
# Takes a few minutes; not part of .ci/run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${TETHER_BUILD_VENV:-$REPO/build/pyinstaller/venv}"
DIST="$REPO/dist"
WORK="$REPO/build/pyinstaller/work"
EXE="$DIST/daemon/daemon"

build=1
smoke=1
case "${1:-}" in
    "") ;;
    --no-smoke) smoke=0 ;;
    --smoke) build=0 ;;
    *) echo "usage: $0 [--no-smoke | --smoke]" >&2; exit 2 ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
    echo "build: creating the build venv $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
# --editable: the spec reads the sources from the repo; the venv supplies the dependencies.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --editable "$REPO[build]"

if [ "$build" = 1 ]; then
    # litellm fetches its model price map from the network at import unless told not to
    # (PyInstaller imports it while analysing).
    LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/pyinstaller" --noconfirm --clean \
        --log-level WARN --distpath "$DIST" --workpath "$WORK" \
        "$REPO/packaging/pyinstaller/tether.spec"
    echo "build: $(du -sh "$DIST/daemon" | cut -f1) in $DIST/daemon"
    echo "build: largest parts:"
    du -sh "$DIST/daemon/daemon" "$DIST/daemon/_internal/"* | sort -h | tail -8 | sed 's/^/  /'
fi

if [ "$smoke" = 1 ]; then
    "$VENV/bin/python" "$REPO/packaging/pyinstaller/smoke.py" "$EXE"
fi
