# shellcheck shell=bash
# Sourced by scripts/test: makes Prometheus's `promtool` available, so that the metrics test
# checks civicflow's scrape with it (`promtool check metrics`). It comes with the Debian package
# `prometheus`, installed without its recommendations (and not started) if missing. Exported as
# CIVICFLOW_PROMTOOL; the test fails, never skips, without it.

if ! command -v promtool >/dev/null 2>&1; then
    echo "scripts/promtool.sh: installing promtool (Debian package prometheus)" >&2
    promtool_sudo=""
    [ "$(id -u)" -ne 0 ] && promtool_sudo="sudo"
    $promtool_sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $promtool_sudo apt-get install -y -qq --no-install-recommends prometheus >&2
fi
CIVICFLOW_PROMTOOL=$(command -v promtool) || { echo "scripts/promtool.sh: no promtool after installing prometheus" >&2; return 1; }
export CIVICFLOW_PROMTOOL
