# Sourced by scripts/test and scripts/dev: installs what pgtenant needs on
# Debian when it is missing. `needs_packages [tests]` installs the packages
# (with `tests`, also what the driver tests run); `install_extension` builds
# and installs the optional C extension in extension/ into the server that
# `pgtenant dev` and the tests start.

needs_packages() {
    local missing=()
    if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        missing+=(postgresql)          # server binaries, pgcrypto, and the postgres OS user
    fi
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
    # pg_query (the statement guard) builds PostgreSQL's parser with bindgen.
    dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
    command -v cc >/dev/null 2>&1 || missing+=(build-essential)
    if [ "${1:-}" = tests ]; then
        # The driver tests run pgjdbc (Debian's package) with a JDK.
        [ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
        command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
    fi
    if ((${#missing[@]})); then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
        apt_updated=1
    fi
}

install_extension() {
    # The newest server found, as `pgtenant dev` and the test harness pick it.
    local pgbin pg_major
    pgbin="$(command -v initdb >/dev/null 2>&1 && dirname "$(readlink -f "$(command -v initdb)")" || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    pg_major="$("$pgbin/postgres" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')"
    if [ ! -f "$("$pgbin/pg_config" --includedir-server 2>/dev/null)/postgres.h" ]; then
        [ -n "${apt_updated:-}" ] || apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "postgresql-server-dev-$pg_major"
    fi
    make -s -C extension install PG_CONFIG="$pgbin/pg_config"
    make -s -C extension clean PG_CONFIG="$pgbin/pg_config"
}
