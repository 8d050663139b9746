#!/usr/bin/env bash
# Record the language-conditioned touch skill's demonstrations as the pi0-FAST attempts in BENCHMARKS.md did (the
# fourth and the sixth to eighth attempts): nominal starts from seed 0, perturbed starts from seed 2000, a
# held-out set for the training's held-out loss from seed 1000, then a JPEG-60 copy of the first 200 kept episodes
# for the device (its uploads hold 64 MiB). Run from the repository root on the dev machine with nothing else
# running (the expert's success rate depends on the graph keeping its rates). About 30 minutes with the default
# counts.
#
#   bench/collect_skill_data.sh [ROOT [NOMINAL PERTURBED HELD_OUT]]     (defaults: build/skill 110 112 6)
#
# Writes ROOT/data (all kept episodes, as recorded), ROOT/heldout and ROOT/gpu (the training copy).
set -euo pipefail
root=${1:-build/skill} nominal=${2:-110} perturbed=${3:-112} heldout=${4:-6}
python=${PYTHON:-.venv/bin/python}
collect() { tools/loopback_only.sh "$python" -m pi0_ros.tools.collect --layout fixed "$@"; }
for dir in "$root/data" "$root/heldout" "$root/gpu"; do
    [ -e "$dir" ] && { echo "$dir exists: move it away first (pi0-collect would append to it)" >&2; exit 1; }
done
collect --root "$root/data" --episodes "$nominal" --seed 0
collect --root "$root/data" --episodes "$perturbed" --seed 2000 --perturbed-starts 1.0
collect --root "$root/heldout" --episodes "$heldout" --seed 1000
"$python" -m pi0_ros.data.reencode "$root/data" "$root/gpu" --quality 60 --episodes 200
