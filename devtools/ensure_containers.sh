#!/usr/bin/env bash
# The container tests (tests/e2e/test_containers.py) and `make images` need a container engine,
# docker-compose and debootstrap (the base image is made from Debian packages: no registry is
# reachable). Install Debian's packages when one is missing; the engine itself is started on
# demand by devtools/containers.py. Without root or apt-get this says why and leaves the
# tests to skip with that reason.
set -euo pipefail
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v apt-get >/dev/null || { [ -n "$SUDO" ] && ! sudo -n true 2>/dev/null; }; then
  echo "containers: ${missing[*]} missing and cannot be installed here; the container tests will skip"
  exit 0
fi
echo "installing Debian's ${missing[*]} for the container tests..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
