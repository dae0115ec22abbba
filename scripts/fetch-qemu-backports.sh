#!/usr/bin/env bash
# Fetch a newer QEMU from Debian and unpack it into DEST_DIR, next to (not
# instead of) the system QEMU 7.2:
#   10.0 (default) from bookworm-backports, built for Debian 12 itself;
#   11.1 from trixie-backports, with its whole dependency closure from trixie
#        (its own glibc and libraries), run through wrapper scripts.
#
# Nothing is installed and the machine's apt configuration is not modified:
# apt runs against a private sources list / lists dir / cache / dpkg status
# in a temp dir, and the .debs are only unpacked with `dpkg -x`. The Debian
# mirror is the one the machine's own sources use for bookworm.
#
# Usage: scripts/fetch-qemu-backports.sh DEST_DIR [RELEASE]
#   RELEASE is 10.0 (default) or 11.1, e.g.
#   scripts/fetch-qemu-backports.sh .cache/qemu-10.0
#   scripts/fetch-qemu-backports.sh .cache/qemu-11.1 11.1
#
# --- 10.0: binaries in DEST_DIR/usr/bin. Running them (this is what the
# smoke test at the end does):
#   QEMU_MODULE_DIR=DEST_DIR/usr/lib/x86_64-linux-gnu/qemu \
#   DEST_DIR/usr/bin/qemu-system-x86_64 -L DEST_DIR/usr/share/qemu ...
#   * -L: prefer the 10.0 option ROMs/keymaps over the 7.2 ones in
#     /usr/share/qemu. SeaBIOS and iPXE are still found via the compiled-in
#     firmware path (/usr/share/seabios, /usr/lib/ipxe/qemu); no
#     "-L /usr/share/qemu" is needed, the default dirs are searched after -L.
#   * QEMU_MODULE_DIR: the binary's compiled-in module dir is the system one
#     (/usr/lib/x86_64-linux-gnu/qemu) holding the 7.2 modules. Whenever 10.0
#     loads modules (qom-list-types, -device help, curl/ssh/... block
#     drivers) it picks those up, refuses them, and qom-list-types / -device
#     help even abort in util/module.c. QEMU_MODULE_DIR is searched first,
#     so we also unpack the 10.0 module packages to make it complete.
#   * qemu-img / qemu-io: no env needed for built-in formats (raw, qcow2,
#     nbd, ...); set QEMU_MODULE_DIR as well for curl/ssh/iscsi/nfs/rbd.
#
# --- 11.1: use DEST_DIR/bin/{qemu-system-x86_64,qemu-img,qemu-io,qemu-nbd}.
# The trixie binaries need trixie's glibc, so each wrapper execs (same pid)
#   DEST_DIR/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
#     --library-path DEST_DIR/usr/lib/x86_64-linux-gnu DEST_DIR/usr/bin/TOOL
# with QEMU_MODULE_DIR set as for 10.0 (same reason; the 11.1 module packages
# are unpacked without their dependencies, like 10.0's: the modules whose
# libraries are missing fail to load with a message, none falls back to a
# 7.2 module), and for qemu-system-x86_64
#   -L DEST_DIR/usr/share/qemu -L DEST_DIR/usr/share/seabios
# before the caller's arguments (the compiled-in firmware path is the host's).
# Every library the binaries and the modules of the closure link against is
# in DEST_DIR/usr/lib/x86_64-linux-gnu; the download is ~95 .debs, ~41 MB.
set -euo pipefail

# The suite the host's apt sources must name for us to take their mirror.
readonly SUITE=bookworm
RELEASE=${2:-10.0}
case $RELEASE in
    10.0)
        APT_SUITES=(bookworm-backports)
        BPO_SUITE=bookworm-backports
        # Installed with their dependency closure (none for 10.0: built for
        # the host's own bookworm libraries).
        CLOSURE=()
        PACKAGES=(
            qemu-system-x86 qemu-utils qemu-system-common qemu-system-data
            # The rest of the 10.0 module set (see QEMU_MODULE_DIR above); small.
            qemu-block-extra qemu-system-gui qemu-system-modules-opengl
            qemu-system-modules-spice
        ) ;;
    11.1)
        APT_SUITES=(trixie trixie-backports)
        BPO_SUITE=trixie-backports
        CLOSURE=(qemu-system-x86 qemu-utils)
        # Just these .debs: they complete the module dir. Their dependencies
        # (GTK, SDL, spice, ceph, ...) would add 200 packages and 130 MB.
        PACKAGES=(
            qemu-block-extra qemu-system-gui qemu-system-modules-opengl
            qemu-system-modules-spice
        ) ;;
    *) printf 'fetch-qemu-backports: error: RELEASE must be 10.0 or 11.1, not %s\n' "$RELEASE" >&2
       exit 1 ;;
esac
readonly APT_SUITES BPO_SUITE CLOSURE PACKAGES
readonly WANT_VERSION=$RELEASE  # upstream major.minor we expect from backports
readonly DEFAULT_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Overridable only so the source parsing can be tested against fixtures.
readonly APT_ETC=${FETCH_QEMU_APT_ETC:-/etc/apt}

die() { printf 'fetch-qemu-backports: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'fetch-qemu-backports: %s\n' "$*" >&2; }

[[ ($# -eq 1 || $# -eq 2) && -n $1 ]] || die "usage: $0 DEST_DIR [10.0|11.1]"
mkdir -p -- "$1" || die "cannot create $1"
DEST=$(cd -- "$1" && pwd)   # absolute, so -L/QEMU_MODULE_DIR paths work anywhere
# Written only after everything below verified OK, so an interrupted run
# (half-unpacked DEST) is redone rather than trusted.
STAMP="$DEST/.fetch-qemu-backports.done"
# Where the tools to run are: the unpacked binaries, or 11.1's wrappers.
if [[ ${#CLOSURE[@]} -eq 0 ]]; then BIN_DIR=$DEST/usr/bin; else BIN_DIR=$DEST/bin; fi

reports_wanted_version() {
    "$1" --version 2>/dev/null | head -n1 | grep -q "version ${WANT_VERSION//./\\.}\."
}

if [[ -f $STAMP ]] && reports_wanted_version "$BIN_DIR/qemu-system-x86_64"; then
    log "QEMU $WANT_VERSION already unpacked in $DEST"
    "$BIN_DIR/qemu-system-x86_64" --version | head -n1
    exit 0
fi
rm -f -- "$STAMP"

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get update needs it)"
for cmd in apt-get apt-cache dpkg awk; do
    command -v "$cmd" >/dev/null || die "$cmd not found (Debian/apt host required)"
done

# --- 1. Find the Debian mirror serving plain "bookworm" in the host's sources.
# Prints "URI<TAB>SIGNED_BY" lines (SIGNED_BY may be empty), deb822 first.
# Only *.sources / *.list are read (that is what apt itself reads), so
# disabled files are ignored. The suite must be exactly "bookworm" and the
# component list must include "main"; -security/-updates never match.
candidate_sources() {
    local f
    for f in "$APT_ETC"/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # Paragraph mode: one stanza per record; continuation lines
        # (leading whitespace) are folded into the preceding field.
        awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                delete fld; key = ""
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^#/) continue
                    if (line ~ /^[ \t]/ && key != "") { fld[key] = fld[key] " " line; continue }
                    p = index(line, ":"); if (!p) continue
                    key = tolower(substr(line, 1, p - 1))
                    fld[key] = substr(line, p + 1)
                }
                if (tolower(fld["enabled"]) ~ /no/) next
                if (!(" " fld["types"] " " ~ /[ \t]deb[ \t]/)) next
                if (!(" " fld["suites"] " " ~ "[ \t]" suite "[ \t]")) next
                if (!(" " fld["components"] " " ~ /[ \t]main[ \t]/)) next
                sb = fld["signed-by"]; gsub(/^[ \t]+|[ \t]+$/, "", sb)
                # An inline ASCII-armoured key cannot be reused as a path.
                if (sb ~ /BEGIN PGP/ || sb ~ /[ \t]/) sb = ""
                n = split(fld["uris"], u, /[ \t]+/)
                for (j = 1; j <= n; j++) if (u[j] != "") print u[j] "\t" sb
            }' "$f"
    done
    for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        # deb [opt=val ...] URI SUITE COMPONENT...
        awk -v suite="$SUITE" '
            /^[ \t]*deb[ \t]/ {
                sub(/#.*/, ""); sb = ""
                if (match($0, /\[[^]]*\]/)) {
                    opts = substr($0, RSTART + 1, RLENGTH - 2)
                    $0 = substr($0, 1, RSTART - 1) substr($0, RSTART + RLENGTH)
                    n = split(opts, o, /[ \t]+/)
                    for (i = 1; i <= n; i++)
                        if (tolower(o[i]) ~ /^signed-by=/) sb = substr(o[i], 11)
                }
                if ($3 != suite) next
                main = 0
                for (i = 4; i <= NF; i++) if ($i == "main") main = 1
                if (main) print $2 "\t" sb
            }' "$f"
    done
}

mapfile -t CANDIDATES < <(candidate_sources | awk '!seen[$0]++')
[[ ${#CANDIDATES[@]} -gt 0 ]] \
    || die "no apt source for Debian suite '$SUITE' (component main) found in $APT_ETC/sources.list{,.d/*.list,.d/*.sources}"

# --- 2. Private apt state. Everything lives in WORK and is removed on exit.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-qemu-bpo.XXXXXX")
cleanup() {
    if [[ -n ${QEMU_PID:-} ]]; then kill "$QEMU_PID" 2>/dev/null || true; fi
    rm -rf -- "$WORK"
}
trap cleanup EXIT
# apt drops privileges to _apt for downloads; it must be able to reach the
# private dirs, otherwise it warns and downloads unsandboxed as root.
chmod 0755 "$WORK"
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" \
         "$WORK/parts" "$WORK/prefs" "$WORK/debs/partial" "$WORK/dpkg"
if getent passwd _apt >/dev/null; then chown _apt "$WORK/debs" "$WORK/debs/partial"; fi
# An empty dpkg status: nothing is "installed" in this view, so apt resolves
# 11.1's whole closure; its locks are taken in $WORK/dpkg, not the host's.
: >"$WORK/dpkg/status"

# The host's update hooks (appstream, packagekit, ...) would act on the
# system's own state, so drop them for our private runs.
cat >"$WORK/apt.conf" <<'EOF'
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
EOF

APT_OPTS=(
    -c "$WORK/apt.conf"
    -o "Dir::Etc::SourceList=$WORK/sources.list"
    -o "Dir::Etc::SourceParts=$WORK/parts"      # empty: ignore host sources
    -o "Dir::Etc::Preferences=$WORK/prefs/none"  # host pinning is irrelevant here
    -o "Dir::Etc::PreferencesParts=$WORK/prefs"
    -o "Dir::State::Lists=$WORK/lists"
    -o "Dir::Cache=$WORK/cache"
    -o "Dir::Cache::archives=$WORK/debs/"        # where `install --download-only` puts them
    -o "Dir::State::status=$WORK/dpkg/status"
    -o "Dir::State::extended_states=$WORK/extended_states"
    -o "Acquire::Languages=none"
    -o "APT::Get::List-Cleanup=false"
    -o "APT::Install-Recommends=false"
    -o "APT::Install-Suggests=false"
)

# Try candidates in order; accept the first where every suite we need
# (bookworm-backports; or trixie and trixie-backports) has a Release file
# saying "Origin: Debian" / "Origin: Debian Backports" (rules out third-party
# repos that reuse the "bookworm" suite name). Suite: is
# "oldstable-backports" since trixie, so Codename: is what names the suite.
suite_ok() {   # SUITE: its indexes fetched, and its Release file is Debian's
    local release packages
    release=$(find "$WORK/lists" -maxdepth 1 -name "*_dists_${1}_InRelease" -print -quit)
    packages=$(find "$WORK/lists" -maxdepth 1 -name "*_dists_${1}_main_binary-*_Packages*" -print -quit)
    if [[ -z $release || -z $packages ]]; then
        sed 's/^/    /' "$WORK/update.log" >&2
        log "  -> apt-get update of $1 failed for $uri"
        return 1
    fi
    if grep -qE '^Origin: Debian( Backports)?$' "$release" \
        && grep -qE "^(Suite|Codename): $1\$" "$release"; then
        return 0
    fi
    log "  -> $uri is not a Debian archive for $1 (Origin/Codename mismatch), skipping"
    return 1
}
MIRROR=""
for cand in "${CANDIDATES[@]}"; do
    uri=${cand%%$'\t'*}
    keyring=${cand#*$'\t'}
    if [[ -z $keyring && -r $DEFAULT_KEYRING ]]; then keyring=$DEFAULT_KEYRING; fi
    # Without signed-by apt falls back to /etc/apt/trusted.gpg.d (still verified).
    opt=""
    if [[ -n $keyring ]]; then opt="[signed-by=$keyring] "; fi
    for s in "${APT_SUITES[@]}"; do
        printf 'deb %s%s %s main\n' "$opt" "${uri%/}" "$s"
    done >"$WORK/sources.list"
    find "$WORK/lists" -maxdepth 1 -type f -name '*_*' -delete
    log "trying $uri (${APT_SUITES[*]})"
    # apt-get update exits 0 on many fetch/signature failures (it only warns),
    # so success is judged by the index files actually present afterwards.
    apt-get "${APT_OPTS[@]}" -qq update >"$WORK/update.log" 2>&1 || true
    ok=1
    for s in "${APT_SUITES[@]}"; do
        suite_ok "$s" || { ok=0; break; }
    done
    if [[ $ok -eq 1 ]]; then
        MIRROR=$uri
        break
    fi
done
[[ -n $MIRROR ]] \
    || die "none of the Debian '$SUITE' sources (${CANDIDATES[*]//$'\t'/ }) serves a usable ${APT_SUITES[*]}"
log "using $MIRROR ${APT_SUITES[*]}"

# --- 3. Pin the exact backports version and download.
pinned() {   # PKG...: PKG=VERSION of each in $BPO_SUITE, checked to be $WANT_VERSION.x
    local pkg ver
    for pkg in "$@"; do
        ver=$(apt-cache "${APT_OPTS[@]}" madison "$pkg" \
            | awk -F'|' -v s="$BPO_SUITE" '$3 ~ s { gsub(/ /, "", $2); print $2; exit }')
        [[ -n $ver ]] || die "$pkg not found in $MIRROR $BPO_SUITE"
        # Debian versions look like 1:10.0.2+ds-2+deb13u1~bpo12+1.
        [[ ${ver#*:} == "$WANT_VERSION".* ]] \
            || die "$pkg in $BPO_SUITE is $ver, expected $WANT_VERSION.x"
        printf '%s=%s\n' "$pkg" "$ver"
    done
}
if [[ ${#CLOSURE[@]} -gt 0 ]]; then
    mapfile -t CLOSURE_SPECS < <(pinned "${CLOSURE[@]}")
    [[ ${#CLOSURE_SPECS[@]} -eq ${#CLOSURE[@]} ]] || die "cannot pin ${CLOSURE[*]}"
    log "downloading ${CLOSURE_SPECS[*]} with their dependencies (other packages from ${APT_SUITES[0]})"
    apt-get "${APT_OPTS[@]}" -q -y --download-only -t "$BPO_SUITE" \
        install "${CLOSURE_SPECS[@]}" >&2 \
        || die "apt-get install --download-only failed"
fi
mapfile -t PKG_SPECS < <(pinned "${PACKAGES[@]}")
[[ ${#PKG_SPECS[@]} -eq ${#PACKAGES[@]} ]] || die "cannot pin ${PACKAGES[*]}"
log "downloading ${PKG_SPECS[*]}"
(cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" -q download "${PKG_SPECS[@]}") >&2 \
    || die "apt-get download failed"

# --- 4. Unpack (no maintainer scripts run, nothing registered with dpkg).
shopt -s nullglob
debs=("$WORK"/debs/*.deb)
if [[ ${#CLOSURE[@]} -eq 0 ]]; then
    [[ ${#debs[@]} -eq ${#PACKAGES[@]} ]] \
        || die "expected ${#PACKAGES[@]} .deb files, got ${#debs[@]}"
else
    for pkg in "${CLOSURE[@]}" "${PACKAGES[@]}"; do
        have=("$WORK/debs/${pkg}_"*.deb)
        [[ ${#have[@]} -eq 1 ]] || die "no .deb of $pkg among the ${#debs[@]} downloaded"
    done
    log "${#debs[@]} .deb files, $(du -sm "$WORK/debs" | cut -f1) MB"
fi
for deb in "${debs[@]}"; do
    log "unpacking $(basename "$deb")"
    dpkg -x "$deb" "$DEST" || die "dpkg -x $deb failed"
done
moddirs=("$DEST"/usr/lib/*/qemu/block-curl.so)
[[ ${#moddirs[@]} -eq 1 ]] || die "cannot find the unpacked QEMU module dir in $DEST/usr/lib"
MODULE_DIR=${moddirs[0]%/*}

# --- 4b. 11.1: wrappers running the binaries through trixie's own loader.
# `exec` keeps the pid the caller started (it kills and inspects it); the
# loader's --argv0 keeps QEMU's name in its messages.
write_wrapper() {   # TOOL EXTRA-ARGS...: $BIN_DIR/TOOL
    local tool=$1 libdir=${MODULE_DIR%/*}
    shift
    # shellcheck disable=SC2016  # "$0" / "$@" are for the wrapper to expand
    {
        printf '#!/bin/bash\n'
        printf '# Written by scripts/fetch-qemu-backports.sh: QEMU %s from Debian %s with\n' \
            "$WANT_VERSION" "$BPO_SUITE"
        printf '# its own loader, libraries, modules (and firmware).\n'
        printf 'export QEMU_MODULE_DIR=%q\n' "$MODULE_DIR"
        printf 'exec %q --library-path %q --argv0 "$0" %q' \
            "$LOADER" "$libdir" "$DEST/usr/bin/$tool"
        if [[ $# -gt 0 ]]; then printf ' %q' "$@"; fi
        printf ' "$@"\n'
    } >"$BIN_DIR/$tool.tmp"
    chmod 0755 "$BIN_DIR/$tool.tmp"
    mv -f -- "$BIN_DIR/$tool.tmp" "$BIN_DIR/$tool"
}
if [[ ${#CLOSURE[@]} -gt 0 ]]; then
    loaders=("${MODULE_DIR%/*}"/ld-linux*.so.2)
    [[ ${#loaders[@]} -eq 1 ]] || die "cannot find the unpacked dynamic loader in ${MODULE_DIR%/*}"
    LOADER=${loaders[0]}
    mkdir -p -- "$BIN_DIR"
    write_wrapper qemu-system-x86_64 -L "$DEST/usr/share/qemu" -L "$DEST/usr/share/seabios"
    for tool in qemu-img qemu-io qemu-nbd; do
        if [[ -x $DEST/usr/bin/$tool ]]; then write_wrapper "$tool"; fi
    done
fi

# --- 5. Verify versions (a missing shared library shows up here).
for bin in qemu-system-x86_64 qemu-img qemu-io; do
    out=$("$BIN_DIR/$bin" --version 2>&1) \
        || die "$BIN_DIR/$bin --version failed (missing library? see ldd): $out"
    printf '%s\n' "$out" | head -n1
    reports_wanted_version "$BIN_DIR/$bin" \
        || die "$bin does not report version $WANT_VERSION: $out"
done

# --- 6. Smoke test: a paused q35 VM must come up with the flags a harness
# uses, stay up, and answer QMP. qom-list-types loads every QOM module, so it
# proves the module dir is complete (with 7.2 modules it aborts).
sock="$WORK/qmp.sock"
if [[ ${#CLOSURE[@]} -eq 0 ]]; then
    SMOKE=("$DEST/usr/bin/qemu-system-x86_64" -L "$DEST/usr/share/qemu")
else
    SMOKE=("$BIN_DIR/qemu-system-x86_64")     # the wrapper gives -L itself
fi
QEMU_MODULE_DIR=$MODULE_DIR "${SMOKE[@]}" \
    -M q35 -S -nodefaults -display none \
    -qmp "unix:$sock,server=on,wait=off" >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!
sleep 2
if ! kill -0 "$QEMU_PID" 2>/dev/null; then
    wait "$QEMU_PID" || true
    QEMU_PID=""
    die "qemu-system-x86_64 exited during smoke test: $(cat "$WORK/qemu.log")"
fi
if command -v python3 >/dev/null; then
    # Minimal QMP client on the stdlib, so no qemu.qmp/socat is needed here.
    python3 - "$sock" <<'EOF' || die "QMP check failed: $(cat "$WORK/qemu.log")"
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
f = s.makefile("rw")
def recv():
    while True:
        line = f.readline()
        if not line:
            sys.exit("QEMU closed the QMP connection (crashed?)")
        m = json.loads(line)
        if "event" not in m:
            return m
def execute(cmd):
    f.write(json.dumps({"execute": cmd}) + "\n"); f.flush()
    r = recv()
    if "return" not in r:
        sys.exit("%s failed: %s" % (cmd, r))
    return r["return"]
v = recv()["QMP"]["version"]["qemu"]
execute("qmp_capabilities")
n = len(execute("qom-list-types"))
execute("quit")
print("fetch-qemu-backports: QMP ok, qemu %d.%d.%d, %d QOM types"
      % (v["major"], v["minor"], v["micro"], n), file=sys.stderr)
EOF
    wait "$QEMU_PID" || die "qemu-system-x86_64 exited badly after quit: $(cat "$WORK/qemu.log")"
else
    kill "$QEMU_PID"; wait "$QEMU_PID" 2>/dev/null || true
fi
QEMU_PID=""
# A module of another build means the module dir is incomplete.
if grep -q 'Only modules from the same build' "$WORK/qemu.log"; then
    die "QEMU $WANT_VERSION loaded a module of another build: $(cat "$WORK/qemu.log")"
fi

touch "$STAMP"
log "QEMU $WANT_VERSION unpacked in $DEST; run it with:"
if [[ ${#CLOSURE[@]} -eq 0 ]]; then
    log "  QEMU_MODULE_DIR=$MODULE_DIR $DEST/usr/bin/qemu-system-x86_64 -L $DEST/usr/share/qemu ..."
else
    log "  $BIN_DIR/qemu-system-x86_64 ...   (also $(cd "$BIN_DIR" && echo qemu-[!s]*))"
fi
