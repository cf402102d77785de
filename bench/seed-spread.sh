#!/bin/sh
# Seed spread of the 10-epoch test accuracy with the defaults: this trainer (--workers 2) and the
# PyTorch reference (1 thread), seeds 1..5, side by side (both at once: accuracy does not depend on
# timing). Results: runs/seeds/ours-S/summary.json and runs/seeds/ref-S.json. About 20 minutes on 2 cores.
set -e
cd "$(dirname "$0")/.."
out=runs/seeds
mkdir -p "$out"
( for s in 1 2 3 4 5; do node dist/src/cli/coordinator.js --workers 2 --epochs 10 --seed "$s" --out "$out/ours-$s" > "$out/ours-$s.log" 2>&1; done ) &
( for s in 1 2 3 4 5; do "${BENCH_PYTHON:-/usr/bin/python3}" bench/reference_mnist.py --threads 1 --epochs 10 --seed "$s" --log-interval 0 > "$out/ref-$s.json" 2> "$out/ref-$s.log"; done ) &
wait
for s in 1 2 3 4 5; do
  node -e "const o=require('./$out/ours-$s/summary.json'), r=require('./$out/ref-$s.json'); console.log('seed $s: ours', (100*o.test_accuracy).toFixed(2)+'%', ' reference', (100*r.test_accuracy).toFixed(2)+'%')"
done
