#!/usr/bin/env bash
# Debian packages for the native IK library build and the loopback-only test namespace.
# Installs only what is missing, so a second run does nothing.
set -euo pipefail
packages=(cmake g++ make libeigen3-dev libyaml-cpp-dev libtinyxml2-dev iproute2 util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run as root, or install them: apt-get install ${missing[*]})" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
