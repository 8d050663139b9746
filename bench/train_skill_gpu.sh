#!/usr/bin/env bash
# Train several runs of the simulation skill side by side on one GPU (run on the device machine from the
# repository root), then pack each run's final checkpoint or, with a held-out set (EXTRA
# --val-dataset=DIR), its lowest-held-out-loss one as `best` (weights, config, norm stats, tokenizers; no
# optimizer state), curves, metrics and log into one tar per run under OUT_DIR, split into 15 MiB parts
# (the device returns at most 8 files of 16 MiB; rejoin with `cat NAME.tar.* | tar x`). Every run stops at
# SECONDS even if unfinished; its last saved checkpoint is packed then.
#
# A run longer than one call: give it STEPS for the whole schedule and call again while the machine is still
# warm (its /tmp survives between calls then); a run whose /tmp/run_NAME holds a training state is resumed
# from it (same schedule, optimizer, EMA and RNG state). PACK_BF16=1 packs the weights in bfloat16 (half the
# size: three small runs fit what comes back; the loader casts them back to float32).
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
    if [ -e "/tmp/run_$name/last/training_state.pt" ]; then
        timeout "$secs" python3 -m pi0_ros.training.cli --resume "/tmp/run_$name" --out "/tmp/run_$name" \
            --steps "$steps" --num-workers "$workers" --no-progress >> "/tmp/$name.log" 2>&1 &
        continue
    fi
    timeout "$secs" python3 -m pi0_ros.training.cli --dataset "$data" --out "/tmp/run_$name" --model "$model" \
        --config "$config" --steps "$steps" --batch-size "$batch" --action-horizon 10 --delta-layout joint_delta \
        --lr 3e-4 --warmup 300 --ema 0.999 --save-every 1000 --keep-last 1 --num-workers "$workers" \
        ${episodes:+--max-episodes "$episodes"} ${extra//,/ } --cache-images --no-progress > "/tmp/$name.log" 2>&1 &
done
wait
for name in "${names[@]}"; do
    run=/tmp/run_$name
    mkdir -p "$run" && cp "/tmp/$name.log" "$run/train.log"
    files=()
    for f in last best loss.png metrics.jsonl summary.json train.log; do
        # With a held-out set only `best` (the checkpoint that is evaluated): what comes back holds 64 MiB
        [ "$f" = last ] && [ -e "$run/best" ] && continue
        [ -e "$run/$f" ] && files+=("$f")
    done
    pack=/tmp/pack_$name
    rm -rf "$pack" && mkdir -p "$pack"
    tar -C "$run" -chf - --exclude training_state.pt "${files[@]}" | tar -C "$pack" -xf -
    if [ "${PACK_BF16:-0}" = 1 ]; then
        for w in "$pack"/*/model.safetensors; do
            [ -e "$w" ] && python3 -c 'import sys, torch; from safetensors.torch import load_file, save_file
w = load_file(sys.argv[1]); save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in w.items()}, sys.argv[1])' "$w"
        done
    fi
    tar -C "$pack" -cf - "${files[@]}" | split -b 15M - "$out/$name.tar."
    tail -n 3 "/tmp/$name.log"
done
ls -la "$out"
