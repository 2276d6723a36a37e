# Starts a private redis-server and this repository's local-upstash in front of it, on
# loopback ports, and stops exactly those processes (by PID) when the sourcing script exits.
# Sourced by scripts/dev-upstash and local-upstash/conformance/run.sh.
#
#   start_local_upstash [LU_PORT]   sets REDIS_PORT, LU_PORT, LU_URL, LU_TOKEN, LU_BIN
#
# Needs: cargo, redis-server, python3 (for a free port). Uses $WORK if set, else a temp dir.

_LU_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_LU_PIDS=()
_LU_WORK=""

_lu_cleanup() {
  local rc=$?
  for pid in "${_LU_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  [[ -n "$_LU_WORK" ]] && rm -rf "$_LU_WORK"
  exit "$rc"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_local_upstash() {
  trap _lu_cleanup EXIT
  trap 'exit 130' INT TERM
  _LU_WORK="$(mktemp -d "${TMPDIR:-/tmp}/local-upstash.XXXXXX")"
  echo "==> building local-upstash (release)"
  cargo build --release --quiet --manifest-path "$_LU_ROOT/local-upstash/Cargo.toml"
  LU_BIN="$_LU_ROOT/local-upstash/target/release/local-upstash"

  REDIS_PORT="$(free_port)"
  echo "==> starting redis-server on 127.0.0.1:$REDIS_PORT (no persistence)"
  redis-server --save '' --appendonly no --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize no \
    --dir "$_LU_WORK" >"$_LU_WORK/redis.log" 2>&1 &
  _LU_PIDS+=($!)
  local redis_pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then break; fi
    if ! kill -0 "$redis_pid" 2>/dev/null; then echo "redis-server exited:"; cat "$_LU_WORK/redis.log"; return 1; fi
    sleep 0.05
  done

  LU_TOKEN="local-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  LU_PORT="${1:-$(free_port)}"
  LU_URL="http://127.0.0.1:$LU_PORT"
  echo "==> starting local-upstash on $LU_URL"
  "$LU_BIN" --listen "127.0.0.1:$LU_PORT" --redis "127.0.0.1:$REDIS_PORT" --token "$LU_TOKEN" \
    >"$_LU_WORK/lu.out" 2>"$_LU_WORK/lu.err" &
  _LU_PIDS+=($!)
  local lu_pid=$!
  for _ in $(seq 1 100); do
    if grep -q "^local-upstash listening on $LU_URL\$" "$_LU_WORK/lu.out"; then return 0; fi
    if ! kill -0 "$lu_pid" 2>/dev/null; then echo "local-upstash exited:"; cat "$_LU_WORK/lu.err"; return 1; fi
    sleep 0.05
  done
  echo "local-upstash did not come up"
  return 1
}

# Where local-upstash writes its errors, for a script to show them at the end.
local_upstash_stderr() {
  echo "$_LU_WORK/lu.err"
}
