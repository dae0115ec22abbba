#!/usr/bin/env bash
# Run `ansible-test sanity` on this collection, offline except for PyPI.
#
# Usage: scripts/run-sanity.sh [extra ansible-test sanity args]
#        e.g. scripts/run-sanity.sh --test pylint
#   VENV=path   virtualenv with requirements-dev.txt installed (default .venv)
#
# How, and why:
# - ansible-test must run from a real ansible_collections/NAMESPACE/NAME
#   directory (it resolves symlinks, so a symlinked tree is refused with "must be
#   within the source tree"). We copy what git would commit (tracked files plus
#   untracked, not ignored ones) into build/sanity/ansible_collections/NS/NAME,
#   afresh on each run.
# - ansible-test lists content with `git ls-files` when the nearest .git above
#   the collection is a work tree; the repo's own .git ignores build/, so it
#   would see no files at all ("All targets skipped"). An empty `git init` in
#   the copy makes it list the copy (untracked files count, nothing is added).
# - ansible-test 2.19 runs every sanity test in a virtualenv of its own
#   (~/.ansible/test/venv/...), even with --local, and fills it by first running
#   ~/.ansible/test/cache/get_pip_<pip version>.py, which it downloads from a
#   host we cannot reach (ansible/ansible#77304). We put a stand-in script at
#   that path: it runs ensurepip, then pip installs what ansible-test asked for
#   from PyPI. Those virtualenvs are cached, so only the first run is slow.
#   (`--requirements` does not help: it only installs into the controller
#   Python, not into these virtualenvs.)
# - --local --python X.Y: no containers, and only the venv's own Python.
#
# Sanity tests run: every test ansible-test enables by default for a
# collection. Skipped, and why: see SKIP_TESTS below.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

VENV=${VENV:-.venv}
case $VENV in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PY=$VENV/bin/python
ANSIBLE_TEST=$VENV/bin/ansible-test

# Tests that cannot run here. Keep this list empty unless there is no way to
# run a test on our machines; say why next to each entry.
SKIP_TESTS=(
)

die() { printf 'run-sanity: error: %s\n' "$*" >&2; exit 2; }
log() { printf 'run-sanity: %s\n' "$*" >&2; }

[[ -x $ANSIBLE_TEST ]] || die "$ANSIBLE_TEST not found: run 'make venv' first"
command -v git >/dev/null || die "git is needed (apt-get install git)"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
    die "$ROOT is not a git work tree: the files to test are the ones git lists"
# ansible-test only warns and skips the shellcheck test when shellcheck is
# missing; we want it run, so insist.
command -v shellcheck >/dev/null ||
    die "shellcheck is needed for the shellcheck sanity test (apt-get install shellcheck)"

PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PY" -c 'import ensurepip' 2>/dev/null ||
    die "$PY has no ensurepip, so ansible-test cannot build its virtualenvs (Debian: apt-get install python3-venv)"

read -r NAMESPACE NAME < <("$PY" -c '
import yaml
g = yaml.safe_load(open("galaxy.yml"))
print(g["namespace"], g["name"])')

# --- pip bootstrap stand-in (see above) --------------------------------------
PIP_VERSION=$("$PY" -c '
import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="'"$PYVER"'"))["pip"])')
GET_PIP=$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py
SHIM_MARK='# vmbackup.qemu: stand-in for get-pip.py'
if [[ ! -e $GET_PIP ]] || grep -qF "$SHIM_MARK" "$GET_PIP"; then
    mkdir -p "$(dirname "$GET_PIP")"
    cat > "$GET_PIP.tmp" <<EOF
$SHIM_MARK (written by scripts/run-sanity.sh).
# ansible-test runs it as: python get_pip.py [pip options] pip==X [pkgs] --no-setuptools --no-wheel
# in a virtualenv made with --without-pip. Get pip from ensurepip, then let it
# install the requested versions from the package index.
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet'] + args)
EOF
    mv "$GET_PIP.tmp" "$GET_PIP"
fi

# --- fresh copy of the collection --------------------------------------------
BUILD=$ROOT/build/sanity
DEST=$BUILD/ansible_collections/$NAMESPACE/$NAME
rm -rf "$BUILD"
mkdir -p "$DEST"
# Files git would commit; skip ones deleted from the work tree but still staged.
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
        if [[ -e $f || -L $f ]]; then printf '%s\0' "$f"; fi
    done |
    xargs -0 --no-run-if-empty cp -P --parents -t "$DEST"
git -C "$DEST" init -q

# --- run ---------------------------------------------------------------------
args=(sanity --local --python "$PYVER" --color no)
for t in "${SKIP_TESTS[@]}"; do
    args+=(--skip-test "$t")
done

log "ansible-test ${args[*]} $*  (in ${DEST#"$ROOT"/})"
start=$SECONDS
set +e
(cd "$DEST" && "$ANSIBLE_TEST" "${args[@]}" "$@")
rc=$?
set -e
elapsed=$((SECONDS - start))

if ((rc != 0)); then
    log "FAILED (exit $rc, ${elapsed}s). The ERROR lines above name each failing test, file and line."
    if compgen -G "$DEST/tests/output/bot/*.json" >/dev/null; then
        log "machine-readable results: ${DEST#"$ROOT"/}/tests/output/bot/"
    fi
    exit "$rc"
fi
log "all sanity tests passed (${elapsed}s)"
