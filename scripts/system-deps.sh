#!/usr/bin/env bash
# Installs the Debian packages a step needs, when running as root and they are missing.
#   build:    a C/C++ toolchain and the venv module (llama-cpp-python compiles llama.cpp)
#   services: PostgreSQL and Redis servers, and Chromium (the dashboard's browser tests)
set -euo pipefail
need=()
case "${1:-build}" in
  build)
    command -v g++ >/dev/null || need+=(g++ build-essential)
    command -v cmake >/dev/null || need+=(cmake)
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    ;;
  services)
    command -v pg_ctlcluster >/dev/null || need+=(postgresql)
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v chromium >/dev/null || need+=(chromium)
    ;;
esac
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${need[*]} (install them, or run as root)" >&2
  exit 0
fi
echo "installing system packages: ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
