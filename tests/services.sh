#!/usr/bin/env bash
# Starts (or stops) the services the tests need, from nothing: installs what is missing with apt,
# then Redis, PostgreSQL, MariaDB and the S3 test server on loopback. Idempotent.
#   tests/services.sh up     install, start, create the test databases, wait until all answer
#   tests/services.sh down   stop what `up` started
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=services.env
source "$here/services.env"
venv=${VENV:-$here/../.venv}
logs=${DESQ_TEST_LOGS:-/tmp/desq-test-services}
mkdir -p "$logs"

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root (or sudo) for: $*"; fi; }

wait_for() {  # wait_for WHAT SECONDS COMMAND...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  printf 'services: error: %s did not come up within %ss (logs in %s)\n' "$what" "$seconds" "$logs" >&2
  return 1
}

pg_version() { ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1; }

has() { command -v "$1" >/dev/null 2>&1; }

install_missing() {
  # Check for every command this script runs, not just the servers: a half-removed package
  # (say mariadb-server gone, mariadb-server-core still there) must be installed again.
  local missing=()
  has redis-server && has redis-cli || missing+=(redis-server redis-tools)
  has mariadbd-safe && has mariadb-admin && has mariadb && has mariadb-install-db || missing+=(mariadb-server mariadb-client)
  { [ -n "$(pg_version)" ] && [ -x "/usr/lib/postgresql/$(pg_version)/bin/postgres" ] \
    && has pg_ctlcluster && has pg_createcluster && has pg_isready && has psql; } || missing+=(postgresql postgresql-client)
  has runuser || missing+=(util-linux)
  has wrk || missing+=(wrk)  # the HTTP load generator of desq bench
  has rclone || missing+=(rclone)  # a client of the s3 role's tests
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} with apt"
    as_root apt-get update -qq
    # The packages' own scripts may not start services here (no init); this script starts them.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" \
      >"$logs/apt.log" 2>&1 || { tail -n 20 "$logs/apt.log" >&2; die "apt-get install failed"; }
  fi
}

redis_up() {
  if redis-cli -p "$TEST_REDIS_PORT" ping 2>/dev/null | grep -q PONG; then return; fi
  say "starting redis on 127.0.0.1:$TEST_REDIS_PORT"
  redis-server --port "$TEST_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --dir "$logs" --logfile "$logs/redis.log" --pidfile "$logs/redis.pid" </dev/null
  wait_for redis 20 sh -c "redis-cli -p $TEST_REDIS_PORT ping | grep -q PONG"
}

postgres_up() {
  local ver; ver=$(pg_version)
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$ver main"; then
    say "creating PostgreSQL $ver cluster"
    as_root pg_createcluster --port "$TEST_PG_PORT" "$ver" main >"$logs/pg-create.log" 2>&1
  fi
  local port; port=$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')
  [ "$port" = "$TEST_PG_PORT" ] || die "PostgreSQL $ver/main listens on $port, tests expect $TEST_PG_PORT (tests/services.env)"
  if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $4}' | grep -q online; then
    say "starting PostgreSQL $ver on port $port"
    as_root pg_ctlcluster "$ver" main start </dev/null >"$logs/pg-start.log" 2>&1 \
      || { cat "$logs/pg-start.log" >&2; die "PostgreSQL did not start"; }
  fi
  wait_for postgresql 30 pg_isready -q -h 127.0.0.1 -p "$port"
  local psql=(as_root runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA)
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$TEST_DB_USER'")" != 1 ]; then
    "${psql[@]}" -c "CREATE ROLE $TEST_DB_USER LOGIN CREATEDB PASSWORD '$TEST_DB_PASSWORD'"
  fi
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$TEST_DB_NAME'")" != 1 ]; then
    "${psql[@]}" -c "CREATE DATABASE $TEST_DB_NAME OWNER $TEST_DB_USER"
  fi
}

mariadb_up() {
  if ! mariadb-admin --protocol=tcp -h 127.0.0.1 -P "$TEST_MYSQL_PORT" ping >/dev/null 2>&1 \
     && ! mariadb-admin ping >/dev/null 2>&1; then
    say "starting MariaDB on 127.0.0.1:$TEST_MYSQL_PORT"
    as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld
    [ -d /var/lib/mysql/mysql ] || as_root mariadb-install-db --user=mysql >"$logs/mariadb-install.log" 2>&1
    as_root touch "$logs/mariadb.err" && as_root chown mysql "$logs/mariadb.err"
    as_root setsid mariadbd-safe --user=mysql --bind-address=127.0.0.1 --port="$TEST_MYSQL_PORT" \
      --log-error="$logs/mariadb.err" </dev/null >"$logs/mariadb.log" 2>&1 &
    wait_for mariadb 60 mariadb-admin ping || { tail -n 20 "$logs/mariadb.err" >&2; exit 1; }
  fi
  as_root mariadb -e "
    CREATE DATABASE IF NOT EXISTS $TEST_DB_NAME CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
    CREATE USER IF NOT EXISTS '$TEST_DB_USER'@'127.0.0.1' IDENTIFIED BY '$TEST_DB_PASSWORD';
    CREATE USER IF NOT EXISTS '$TEST_DB_USER'@'localhost' IDENTIFIED BY '$TEST_DB_PASSWORD';
    GRANT ALL ON $TEST_DB_NAME.* TO '$TEST_DB_USER'@'127.0.0.1';
    GRANT ALL ON $TEST_DB_NAME.* TO '$TEST_DB_USER'@'localhost';"
}

s3_answers() { "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$TEST_S3_PORT/moto-api/', timeout=2)"; }

s3_up() {
  [ -x "$venv/bin/moto_server" ] || die "moto_server is not in $venv: run 'make test' (it installs the dev extras)"
  if s3_answers >/dev/null 2>&1; then return; fi
  say "starting the S3 test server (moto) on 127.0.0.1:$TEST_S3_PORT"
  setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$TEST_S3_PORT" </dev/null >"$logs/moto.log" 2>&1 &
  echo $! >"$logs/moto.pid"
  wait_for "the S3 test server" 30 s3_answers
}

down() {
  redis-cli -p "$TEST_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  [ -f "$logs/moto.pid" ] && kill "$(cat "$logs/moto.pid")" 2>/dev/null || true
  rm -f "$logs/moto.pid"
  mariadb-admin shutdown >/dev/null 2>&1 || true
  local ver; ver=$(pg_version)
  [ -n "$ver" ] && as_root pg_ctlcluster "$ver" main stop >/dev/null 2>&1 || true
  say "stopped"
}

case "${1:-up}" in
  up) install_missing; redis_up; postgres_up; mariadb_up; s3_up; say "all up (logs in $logs)" ;;
  down) down ;;
  *) die "usage: $0 up|down" ;;
esac
