#!/usr/bin/env bash
# The cluster's figures (benches/cluster.rs): exec round trips through the node holding a
# sandbox and through another (the proxy hop), and creates per second through one node
# against three. Starts a private Redis and PostgreSQL on free loopback ports in temp
# dirs (Debian's redis-server and postgresql; installed when missing, as root) and stops
# them afterwards. Needs Docker and the base template (the test script builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
have() { command -v "$1" >/dev/null 2>&1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
if ! have redis-server || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "needs redis-server and postgresql: sudo apt-get install redis-server postgresql" >&2; exit 1; }
  mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql >/dev/null
fi
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/berth-bench-cluster.XXXXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
redis_port=$(free_port)
pg_port=$(free_port)
cleanup() {
  as_pg "$pg_bin/pg_ctl" -D "$dir/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log"
as_pg "$pg_bin/initdb" -D "$dir/pg" -A trust -U berth -E UTF8 --locale=C --no-sync >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir -c fsync=off -c max_connections=200" start >/dev/null
BENCH_REDIS_URL="redis://127.0.0.1:$redis_port" \
BENCH_POSTGRES_URL="postgres://berth@127.0.0.1:$pg_port" \
  cargo bench --bench cluster
