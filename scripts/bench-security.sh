#!/usr/bin/env bash
# bench-security.sh — what pgtenant's security layers cost, measured on this
# machine in one run, from nothing:
#
#   1. builds pgtenant (release) and the guard micro-benchmark
#      (examples/guard_bench.rs), and runs the latter: µs per Guard::check for
#      a statement that skips the parser, a cache hit, a cache miss that
#      parses, and an attack;
#   2. starts `pgtenant dev` (private PostgreSQL on a Unix socket, schema,
#      fintech demo) and, against that cluster, two `pgtenant serve` proxies
#      that differ only in proxy.statement_guard (true / false);
#   3. the verified tenant context: pgbench custom scripts through the proxy
#      as hk_teller, one client, prepared protocol — SELECT 1,
#      SELECT pgtenant.current_tenant(), a PK lookup on the RLS table
#      `accounts` and the same lookup on an RLS-free copy; µs per statement;
#   4. pgbench -S on the standard pgbench tables made tenant-scoped
#      (tenant_id + pgtenant.enable_tenancy, all rows hsbc-hk's), as hk_teller
#      through each proxy: guard on/off × simple/prepared × 1/8 clients; plus
#      the same directly on PostgreSQL as superuser (no proxy, RLS bypassed)
#      as a ceiling.
#
# Loopback TCP and Unix sockets only. Everything started is stopped, and the
# temporary directory removed, on exit (trap). About 4 minutes after the
# build with the defaults. Timings are reported, never asserted.
#
# Usage: scripts/bench-security.sh
# Environment: BENCH_SECONDS (per pgbench -S run, default 15),
#   BENCH_CONTEXT_SECONDS (per context script, default 8), BENCH_SCALE
#   (pgbench scale, default 1), BENCH_GUARD_ITERATIONS (default 200000),
#   PG_BIN (directory of pgbench/psql; default: found on PATH or under
#   /usr/lib/postgresql/*/bin), CARGO_TARGET_DIR (honoured).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_SECONDS=${BENCH_SECONDS:-15}
CONTEXT_SECONDS=${BENCH_CONTEXT_SECONDS:-8}
SCALE=${BENCH_SCALE:-1}
GUARD_ITERATIONS=${BENCH_GUARD_ITERATIONS:-200000}
HK_TENANT=a0000000-0000-4000-8000-000000000002 # hsbc-hk in sql/demo/fintech.sql
DB=app

find_pg_bin() {
    if [[ -n ${PG_BIN:-} ]]; then echo "$PG_BIN"; return; fi
    if command -v pgbench >/dev/null && command -v psql >/dev/null; then
        dirname "$(command -v pgbench)"; return
    fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [[ -x $dir/pgbench ]] || { echo "pgbench not found; set PG_BIN" >&2; exit 1; }
    echo "$dir"
}
PG_BIN=$(find_pg_bin)
PGBENCH=$PG_BIN/pgbench
PSQL=$PG_BIN/psql

WORK=$(mktemp -d /tmp/pgtenant-bench.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # `pgtenant dev` stops and removes its cluster on SIGTERM; give it time.
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '== %s\n' "$*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_line() { # file pattern seconds
    local i
    for i in $(seq $(($3 * 5))); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "timed out waiting for '$2' in $1:" >&2
    tail -20 "$1" >&2
    exit 1
}

# ---- 1. build and the guard micro-benchmark ---------------------------------
log "building (release)"
(cd "$ROOT" && cargo build --release --quiet --bin pgtenant --example guard_bench)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET_DIR/release/pgtenant
GUARD_BENCH=$TARGET_DIR/release/examples/guard_bench

log "guard micro-benchmark ($GUARD_ITERATIONS iterations)"
"$GUARD_BENCH" "$GUARD_ITERATIONS" >"$WORK/guard.tsv"

# ---- 2. the cluster (pgtenant dev) and two proxies ---------------------------
log "starting pgtenant dev"
DEV_PORT=$(free_port)
DEV_ADMIN_PORT=$(free_port)
(cd "$WORK" && exec "$BIN" dev --port "$DEV_PORT" --admin-port "$DEV_ADMIN_PORT") >"$WORK/dev.log" 2>&1 &
PIDS+=($!)
wait_for_line "$WORK/dev.log" "Ctrl-C stops everything" 90

HK_PASSWORD=$(sed -n 's|.*postgres://hk_teller:\([^@]*\)@.*|\1|p' "$WORK/dev.log" | head -1)
SOCKET_DIR=$(sed -n 's|.*psql -h \([^ ]*\) -p \([0-9]*\) -U .*|\1|p' "$WORK/dev.log" | head -1)
SOCKET_PORT=$(sed -n 's|.*psql -h \([^ ]*\) -p \([0-9]*\) -U .*|\2|p' "$WORK/dev.log" | head -1)
[[ -n $HK_PASSWORD && -n $SOCKET_DIR && -n $SOCKET_PORT ]] || { cat "$WORK/dev.log" >&2; exit 1; }
ENCODED_SOCKET=${SOCKET_DIR//\//%2F}
upstream_url() { echo "postgres://$1@$ENCODED_SOCKET:$SOCKET_PORT/$DB"; }

as_superuser() { "$PSQL" -X -q -o /dev/null -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$SOCKET_PORT" -U postgres -d "$DB" "$@"; }
as_owner() { "$PSQL" -X -q -o /dev/null -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$SOCKET_PORT" -U pgtenant_owner -d "$DB" "$@"; }

start_serve() { # name guard(true|false) -> sets SERVE_PORT
    local proxy_port admin_port
    proxy_port=$(free_port)
    admin_port=$(free_port)
    (
        cd "$WORK" && unset PGTENANT_CONFIG &&
            PGTENANT_PROXY__LISTEN=127.0.0.1:$proxy_port \
            PGTENANT_PROXY__STATEMENT_GUARD=$2 \
            PGTENANT_ADMIN__LISTEN=127.0.0.1:$admin_port \
            PGTENANT_ADMIN__TOKEN=bench-$RANDOM$RANDOM$RANDOM$RANDOM \
            PGTENANT_UPSTREAM__URL=$(upstream_url pgtenant_app) \
            PGTENANT_UPSTREAM__READONLY_URL=$(upstream_url pgtenant_app_ro) \
            PGTENANT_CONTROL__URL=$(upstream_url pgtenant_owner) \
            PGTENANT_LOG__LEVEL=warn \
            exec "$BIN" serve
    ) >"$WORK/serve-$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null; then
            SERVE_PORT=$proxy_port
            return
        fi
        sleep 0.2
    done
    cat "$WORK/serve-$1.log" >&2
    exit 1
}

# ---- tenant-scoped pgbench tables and an RLS-free copy of accounts -----------
log "pgbench -i (scale $SCALE) as the catalog owner, then enable_tenancy"
"$PGBENCH" -i -q -s "$SCALE" -h "$SOCKET_DIR" -p "$SOCKET_PORT" -U pgtenant_owner "$DB" >"$WORK/init.log" 2>&1
as_owner <<SQL
ALTER TABLE pgbench_accounts ADD COLUMN tenant_id uuid NOT NULL DEFAULT '$HK_TENANT';
ALTER TABLE pgbench_branches ADD COLUMN tenant_id uuid NOT NULL DEFAULT '$HK_TENANT';
ALTER TABLE pgbench_tellers  ADD COLUMN tenant_id uuid NOT NULL DEFAULT '$HK_TENANT';
ALTER TABLE pgbench_history  ADD COLUMN tenant_id uuid NOT NULL DEFAULT '$HK_TENANT';
SELECT pgtenant.enable_tenancy('pgbench_accounts');
SELECT pgtenant.enable_tenancy('pgbench_branches');
SELECT pgtenant.enable_tenancy('pgbench_tellers');
SELECT pgtenant.enable_tenancy('pgbench_history');
ANALYZE;
SQL
# The superuser reads every row of accounts (RLS bypassed) to make the copy.
as_superuser <<'SQL'
CREATE TABLE public.accounts_no_rls AS SELECT * FROM public.accounts;
ALTER TABLE public.accounts_no_rls ADD PRIMARY KEY (id);
ALTER TABLE public.accounts_no_rls OWNER TO pgtenant_owner;
GRANT SELECT ON public.accounts_no_rls TO pgtenant_readwrite;
ANALYZE public.accounts_no_rls;
SQL

log "starting pgtenant serve with the guard on and off"
start_serve guard-on true
PORT_ON=$SERVE_PORT
start_serve guard-off false
PORT_OFF=$SERVE_PORT
proxy_url() { echo "postgresql://hk_teller:$HK_PASSWORD@127.0.0.1:$1/$DB?sslmode=disable"; }

# Prints the tps a pgbench run reports (initial connection time excluded).
tps_of() { sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$1"; }

# ---- 3. cost of the verified context ------------------------------------------
log "verified context: 4 scripts x ${CONTEXT_SECONDS}s, 1 client, prepared, through the proxy"
declare -A CONTEXT_SQL=(
    [select_1]="SELECT 1;"
    [current_tenant]="SELECT pgtenant.current_tenant();"
    [rls_lookup]="SELECT count(*) FROM accounts WHERE id = 3;"
    [no_rls_lookup]="SELECT count(*) FROM accounts_no_rls WHERE id = 3;"
)
# Sanity: the tenant sees its account through RLS, and the copy has it too.
"$PSQL" -X -At "$(proxy_url "$PORT_ON")" -c "SELECT (SELECT count(*) FROM accounts WHERE id = 3),
    (SELECT count(*) FROM accounts WHERE id = 5), pgtenant.current_tenant()" >"$WORK/sanity.txt"
[[ $(cat "$WORK/sanity.txt") == "1|0|$HK_TENANT" ]] || { echo "unexpected: $(cat "$WORK/sanity.txt")" >&2; exit 1; }
declare -A CONTEXT_US
for name in select_1 current_tenant rls_lookup no_rls_lookup; do
    echo "${CONTEXT_SQL[$name]}" >"$WORK/$name.sql"
    "$PGBENCH" -n -M prepared -c 1 -T "$CONTEXT_SECONDS" -f "$WORK/$name.sql" "$(proxy_url "$PORT_ON")" \
        >"$WORK/ctx-$name.log" 2>&1
    CONTEXT_US[$name]=$(python3 -c "print(f'{1e6 / $(tps_of "$WORK/ctx-$name.log"):.1f}')")
done

# ---- 4. pgbench -S, guard on / off ------------------------------------------
run_select_only() { # label url mode clients
    local threads=$(($4 < 2 ? $4 : 2)) log_file=$WORK/S-$1-$3-$4.log
    "$PGBENCH" -n -S -M "$3" -c "$4" -j "$threads" -T "$RUN_SECONDS" "$2" >"$log_file" 2>&1 ||
        { cat "$log_file" >&2; exit 1; }
    tps_of "$log_file"
}
declare -A TPS
DIRECT_URL="host=$SOCKET_DIR port=$SOCKET_PORT user=postgres dbname=$DB"
for mode in simple prepared; do
    for clients in 1 8; do
        log "pgbench -S $mode, $clients client(s), ${RUN_SECONDS}s each: guard on, guard off, direct"
        TPS[on-$mode-$clients]=$(run_select_only on "$(proxy_url "$PORT_ON")" "$mode" "$clients")
        TPS[off-$mode-$clients]=$(run_select_only off "$(proxy_url "$PORT_OFF")" "$mode" "$clients")
        TPS[direct-$mode-$clients]=$(run_select_only direct "$DIRECT_URL" "$mode" "$clients")
    done
done

# ---- results -----------------------------------------------------------------
echo
echo "pgtenant security layers — $(nproc) CPUs, $("$PSQL" --version), scale $SCALE"
echo
echo "a) Guard::check, µs per call"
awk -F'\t' '{ printf "   %-40s %8.3f  (%d calls)\n", $1, $2, $3 }' "$WORK/guard.tsv"
echo
echo "b) verified context, through the proxy as hk_teller, 1 client, prepared (µs per statement)"
printf '   %-52s %8s\n' "SELECT 1" "${CONTEXT_US[select_1]}"
printf '   %-52s %8s\n' "SELECT pgtenant.current_tenant()" "${CONTEXT_US[current_tenant]}"
printf '   %-52s %8s\n' "SELECT count(*) FROM accounts WHERE id = 3 (RLS)" "${CONTEXT_US[rls_lookup]}"
printf '   %-52s %8s\n' "SELECT count(*) FROM accounts_no_rls WHERE id = 3" "${CONTEXT_US[no_rls_lookup]}"
python3 - "${CONTEXT_US[select_1]}" "${CONTEXT_US[current_tenant]}" "${CONTEXT_US[rls_lookup]}" \
    "${CONTEXT_US[no_rls_lookup]}" <<'PY'
import sys
one, current, rls, plain = map(float, sys.argv[1:])
print(f"   => current_tenant() over SELECT 1: {current - one:+.1f} µs; RLS lookup over no-RLS lookup: {rls - plain:+.1f} µs")
PY
echo
echo "c) pgbench -S TPS (hk_teller through pgtenant; direct = superuser on the Unix socket, no proxy, RLS bypassed)"
printf '   %-9s %7s %12s %12s %8s %12s\n' protocol clients "guard on" "guard off" "on/off" direct
for mode in simple prepared; do
    for clients in 1 8; do
        on=${TPS[on-$mode-$clients]} off=${TPS[off-$mode-$clients]} direct=${TPS[direct-$mode-$clients]}
        ratio=$(python3 -c "print(f'{$on / $off:.3f}')")
        printf '   %-9s %7s %12.0f %12.0f %8s %12.0f\n' "$mode" "$clients" "$on" "$off" "$ratio" "$direct"
    done
done
