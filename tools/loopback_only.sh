#!/usr/bin/env bash
# Runs a command with ROS 2 discovery confined to this machine and, where we are allowed to
# (root), inside a fresh network namespace that has nothing but loopback: DDS traffic cannot
# leave the machine even if a setting is wrong.
set -euo pipefail
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_LOCALHOST_ONLY=1
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
if [ "${PI0_ROS_IN_NETNS:-0}" = 1 ]; then
  exec "$@"
fi
if unshare -n true 2>/dev/null; then
  export PI0_ROS_IN_NETNS=1
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' bash "$@"
fi
echo "loopback_only: cannot create a network namespace (not root?); ROS discovery is still LOCALHOST-only" >&2
exec "$@"
