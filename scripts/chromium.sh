# shellcheck shell=bash
# Sourced by scripts/test: makes Chromium and its WebDriver (chromedriver) available for the
# operators' page's browser tests (tests/ui.rs). They come with the Debian packages `chromium`
# and `chromium-driver`, installed without their recommendations if missing. Exported as
# CIVICFLOW_CHROMIUM and CIVICFLOW_CHROMEDRIVER; the tests fail, never skip, without them.

if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    echo "scripts/chromium.sh: installing chromium and chromium-driver (Debian packages)" >&2
    chromium_sudo=""
    [ "$(id -u)" -ne 0 ] && chromium_sudo="sudo"
    $chromium_sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $chromium_sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
fi
CIVICFLOW_CHROMIUM=$(command -v chromium) || { echo "scripts/chromium.sh: no chromium after installing it" >&2; return 1; }
CIVICFLOW_CHROMEDRIVER=$(command -v chromedriver) || { echo "scripts/chromium.sh: no chromedriver after installing chromium-driver" >&2; return 1; }
export CIVICFLOW_CHROMIUM CIVICFLOW_CHROMEDRIVER
