#!/usr/bin/env bash
# Issue 21's TinyShakespeare recipe sweep on one GPU: the ANN twin (the teacher), then spiking students
# distilled from it, run side by side on the same GPU, each with a time limit. Every run writes its
# run directory (metrics.jsonl, summary.json with val loss, firing rate and the energy report) under
# OUT, and times.txt the wall time of each command; BENCHMARKS.md's table reads each run's summary.json
# (val_loss, firing_rate, energy.ratio, end_step).
#   usage: benchmarks/lm_recipes.sh DATA OUT [STUDENT_SECONDS]
set -uo pipefail
DATA=$1; OUT=$2; LIMIT=${3:-330}
mkdir -p "$OUT"
COMMON=(--data "$DATA" --preset shakespeare --dtype bfloat16 --backend auto --no-progress --sample-chars 300)
start=$(date +%s)
spikejax train lm "${COMMON[@]}" --neuron none --out "$OUT/ann" > "$OUT/ann.log" 2>&1
echo "teacher done after $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
run() {  # name, flags...
  local name=$1; shift
  local t0=$(date +%s)
  spikejax train lm "${COMMON[@]}" --time-limit "$LIMIT" --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: $(( $(date +%s) - t0 )) s (whole command with the teacher: $(( $(date +%s) - start )) s)" | tee -a "$OUT/times.txt"
}
run tern_kd_r30 --teacher "$OUT/ann" --target-rate 0.3 --rate-weight 1 &
run tern_kd_r20 --teacher "$OUT/ann" --target-rate 0.2 --rate-weight 5 &
run lif_kd_warm --teacher "$OUT/ann" --neuron lif --anneal fp-warmup --anneal-steps 1500 &
wait
