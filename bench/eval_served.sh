#!/usr/bin/env bash
# Closed-loop evaluation with the model in its own process, as the skill results in BENCHMARKS.md were
# measured: pi0-serve on 127.0.0.1 (one torch thread) and pi0-eval with the node's `remote` backend, both in
# one loopback-only network namespace (tools/loopback_only.sh). Run from the repository root.
#
#   bench/eval_served.sh CHECKPOINT POLICY_TYPE OUT.json [pi0-eval options...]
#
# e.g. bench/eval_served.sh runs/fast/best pi0_fast build/eval/fast.json --layout fixed --seeds 1000-1019 \
#          --episode-timeout 15 --execute-steps 5 --hold 1.0
# SERVE_EXTRA (environment): more pi0-serve options, e.g. SERVE_EXTRA='--loader-kwargs {"constrain_length":false}'.
set -euo pipefail
if [ "${PI0_ROS_IN_NETNS:-0}" != 1 ] || [ "${ROS_LOCALHOST_ONLY:-0}" != 1 ]; then
    exec "$(dirname "$0")/../tools/loopback_only.sh" bash "$0" "$@"
fi
checkpoint=$1 policy_type=$2 out=$3
shift 3
python=${PYTHON:-.venv/bin/python}
port=$(( 18000 + RANDOM % 1000 ))
log=$(mktemp --suffix=.serve.log)
# shellcheck disable=SC2086  # SERVE_EXTRA is a list of words
OMP_NUM_THREADS=1 "$python" -m pi0_ros.serving.server --checkpoint "$checkpoint" --policy-type "$policy_type" \
    --port "$port" ${SERVE_EXTRA:-} > "$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 120); do
    if ! kill -0 $server 2>/dev/null; then echo "pi0-serve exited:" >&2; cat "$log" >&2; exit 1; fi
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 1
done
"$python" -m pi0_ros.training.evaluate --checkpoint "$checkpoint" --backend remote \
    --server-uri "ws://127.0.0.1:$port" --out "$out" "$@"
echo "server log: $log"
