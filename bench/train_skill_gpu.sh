#!/usr/bin/env bash
# Train several runs of the simulation skill side by side on one GPU (run on the device machine from the
# repository root), then pack each run's final checkpoint and, with a held-out set (EXTRA
# --val-dataset=DIR), its lowest-held-out-loss one as `best` (weights, config, norm stats, tokenizers; no
# optimizer state), curves, metrics and log into one tar per run under OUT_DIR, split into 15 MiB parts
# (the device returns at most 8 files of 16 MiB; rejoin with `cat NAME.tar.* | tar x`). Every run stops at
# SECONDS even if unfinished; its last saved checkpoint is packed then.
#
#   bench/train_skill_gpu.sh OUT_DIR SECONDS NAME:DATASET:MODEL:CONFIG:STEPS:BATCH[:EPISODES[:EXTRA]] [...]
#
# EXTRA: more pi0-train options, comma-separated (--ema=0.99,--warmup=100); later options win.
#
# e.g. bench/train_skill_gpu.sh $OUT 540 pi0:build/skill/gpu:pi0:pi0_tiny:5000:32
# Recipe and results: BENCHMARKS.md, "A new skill from demonstrations".
set -u
out=$1 secs=$2
shift 2
export PYTHONUNBUFFERED=1
mkdir -p "$out"
workers=$(( $(nproc) / $# - 1 ))
names=()
for spec in "$@"; do
    IFS=: read -r name data model config steps batch episodes extra <<< "$spec"
    names+=("$name")
    timeout "$secs" python3 -m pi0_ros.training.cli --dataset "$data" --out "/tmp/run_$name" --model "$model" \
        --config "$config" --steps "$steps" --batch-size "$batch" --action-horizon 10 --delta-layout joint_delta \
        --lr 3e-4 --warmup 300 --ema 0.999 --save-every 1000 --keep-last 1 --num-workers "$workers" \
        ${episodes:+--max-episodes "$episodes"} ${extra//,/ } --cache-images --no-progress > "/tmp/$name.log" 2>&1 &
done
wait
for name in "${names[@]}"; do
    mkdir -p "/tmp/run_$name" && cp "/tmp/$name.log" "/tmp/run_$name/train.log"
    files=()
    run=/tmp/run_$name
    for f in last best loss.png metrics.jsonl summary.json train.log; do
        # best == last (held-out loss still falling): its weights once, so that three runs fit what comes back
        [ "$f" = last ] && [ -e "$run/best" ] && [ "$(readlink -f "$run/best")" = "$(readlink -f "$run/last")" ] && continue
        [ -e "$run/$f" ] && files+=("$f")
    done
    tar -C "/tmp/run_$name" -chf - --exclude training_state.pt "${files[@]}" | split -b 15M - "$out/$name.tar."
    tail -n 3 "/tmp/$name.log"
done
ls -la "$out"
