#!/usr/bin/env bash
# Install what the tests run for real: redis-server and redis-cli, ZooKeeper, systemd-analyze and Chromium
# (the headless browser the dashboard tests drive; Playwright uses it, never a browser download).
# Non-interactive, idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

want=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || want+=(redis-server)
# redis-cli joins the test cluster's nodes (tests/ha); the same binary serves as a sentinel.
command -v redis-cli >/dev/null 2>&1 || want+=(redis-tools)
[ -f /usr/share/java/zookeeper.jar ] || want+=(zookeeper)
command -v java >/dev/null 2>&1 || want+=(default-jre-headless)
# systemd-analyze checks deploy/systemd/conductor@.service (it runs without systemd as PID 1).
command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
[ -x /usr/bin/chromium ] || want+=(chromium)
if [ "${1:-}" = "--venv" ]; then
    want+=(python3-venv)
fi
[ ${#want[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
        echo "install-system-deps: missing ${want[*]} and not root; install them by hand" >&2
        exit 0
    fi
fi
echo "install-system-deps: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
