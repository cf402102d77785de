#!/bin/sh
# The coordinator's entrypoint in a container whose pod Kubernetes may restart: runs
# `coordinator` with the arguments given, and adds --resume when the --out DIR already holds a
# checkpoint (the run a previous pod started), so that the same command line starts a run the
# first time and continues it after a restart.
#   coordinator-entrypoint.sh --workers 2 --no-spawn --listen tcp://0.0.0.0:5555 --keys /keys --out /runs/mnist
set -eu

out=""
resume=""
previous=""
for arg in "$@"; do
  if [ "$previous" = "--out" ]; then out="$arg"; fi
  case "$arg" in
    --out=*) out="${arg#--out=}" ;;
    --resume) resume="given" ;;
  esac
  previous="$arg"
done

if [ -z "$resume" ] && [ -n "$out" ] && { [ -f "$out/checkpoint.bin" ] || [ -f "$out/checkpoint.prev.bin" ]; }; then
  echo "coordinator-entrypoint: $out holds a checkpoint: continuing that run (--resume)" >&2
  exec coordinator "$@" --resume
fi
exec coordinator "$@"
