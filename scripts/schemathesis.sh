# shellcheck shell=bash
# Sourced by scripts/test: makes Schemathesis (PyPI) available to the API test that runs it
# against the served OpenAPI document, in a virtual environment of its own under target/
# (made once, then reused). Exported as CIVICFLOW_SCHEMATHESIS; the test fails, never skips,
# without it.

schemathesis_version=4.32.5
schemathesis_venv=${CIVICFLOW_TOOLS:-$PWD/target/tools}/schemathesis-$schemathesis_version
if [ ! -x "$schemathesis_venv/bin/schemathesis" ]; then
    echo "scripts/schemathesis.sh: installing Schemathesis $schemathesis_version (PyPI)" >&2
    python3 -m venv "$schemathesis_venv" >&2
    "$schemathesis_venv/bin/pip" install -q "schemathesis==$schemathesis_version" >&2
fi
CIVICFLOW_SCHEMATHESIS=$schemathesis_venv/bin/schemathesis
"$CIVICFLOW_SCHEMATHESIS" --version >/dev/null || { echo "scripts/schemathesis.sh: Schemathesis does not run" >&2; return 1; }
export CIVICFLOW_SCHEMATHESIS
