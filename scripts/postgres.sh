# shellcheck shell=bash
# Sourced by scripts/test: makes a PostgreSQL server available to the tests and creates a fresh
# database for this run, exported as CIVICFLOW_TEST_DATABASE and dropped when the run ends.
#
# In order: a server already answering on 127.0.0.1:${CIVICFLOW_PG_PORT:-5432}; the machine's
# own cluster, started (Debian's pg_ctlcluster); else a throwaway cluster, made with initdb in a
# temporary directory on a free port (the Debian package `postgresql` is installed first if the
# binaries are missing). CIVICFLOW_PG_THROWAWAY=1 skips the first two, to test the last.
# A test that needs PostgreSQL never skips: if none can be had, this fails the run.

pg_port=${CIVICFLOW_PG_PORT:-5432}
pg_host=127.0.0.1

pg_bin() {
    if command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    else
        ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
    fi
}

pg_ready() {
    local isready
    isready=$(pg_bin pg_isready)
    [ -n "$isready" ] && "$isready" -h "$pg_host" -p "$1" -q
}

pg_wait() {
    for _ in $(seq 1 60); do
        pg_ready "$1" && return 0
        sleep 0.5
    done
    return 1
}

pg_install() {
    echo "scripts/postgres.sh: installing PostgreSQL (Debian package postgresql)" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
}

# A cluster of our own in a temporary directory, on a free port, trusting local connections.
pg_throwaway() {
    [ -n "$(pg_bin initdb)" ] || pg_install
    local initdb
    initdb=$(pg_bin initdb)
    pg_ctl=$(pg_bin pg_ctl)
    [ -n "$initdb" ] && [ -n "$pg_ctl" ] || { echo "scripts/postgres.sh: no initdb after installing PostgreSQL" >&2; return 1; }
    pg_dir=$(mktemp -d /tmp/civicflow-pg.XXXXXX)
    pg_run_as=()
    if [ "$(id -u)" -eq 0 ]; then
        # PostgreSQL refuses to run as root.
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$pg_dir"
        pg_run_as=(runuser -u postgres --)
    fi
    pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${pg_run_as[@]}" "$initdb" -D "$pg_dir/data" -U postgres -A trust --no-sync >/dev/null
    "${pg_run_as[@]}" "$pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
        -o "-p $pg_port -k $pg_dir -c listen_addresses=$pg_host" start >/dev/null
    echo "scripts/postgres.sh: a throwaway PostgreSQL on port $pg_port in $pg_dir" >&2
}

pg_stop_throwaway() {
    [ -n "${pg_dir:-}" ] || return 0
    "${pg_run_as[@]}" "$pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1
    rm -rf "$pg_dir"
}

pg_available() {
    if [ "${CIVICFLOW_PG_THROWAWAY:-0}" != 1 ]; then
        pg_ready "$pg_port" && return 0
        if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
            local version
            version=$(ls /etc/postgresql | sort -V | tail -n 1)
            echo "scripts/postgres.sh: starting the machine's PostgreSQL $version cluster" >&2
            pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
            pg_wait "$pg_port" && return 0
        fi
    fi
    pg_throwaway && pg_wait "$pg_port"
}

if ! pg_available; then
    echo "scripts/postgres.sh: no PostgreSQL server could be started; the PostgreSQL tests cannot run" >&2
    exit 1
fi

pg_psql=$(pg_bin psql)
pg_db="civicflow_test_$$_$(date +%s)"
"$pg_psql" -q -h "$pg_host" -p "$pg_port" -U postgres -d postgres -c "CREATE DATABASE $pg_db" >/dev/null
export CIVICFLOW_TEST_DATABASE="postgres://postgres@$pg_host:$pg_port/$pg_db"

pg_cleanup() {
    "$pg_psql" -q -h "$pg_host" -p "$pg_port" -U postgres -d postgres \
        -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
    pg_stop_throwaway
}
trap pg_cleanup EXIT
