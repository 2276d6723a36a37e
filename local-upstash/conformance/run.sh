#!/usr/bin/env bash
# Conformance run: build local-upstash (release), start a private redis-server and a
# local-upstash in front of it on free loopback ports with a generated token, drive them with
# the official @upstash/redis client (node --test), then stop exactly the processes started here.
# Exits non-zero if the build, the start-up, or any test fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CRATE="$(cd "$HERE/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/local-upstash-conf.XXXXXX")"
REDIS_PID=""
LU_PID=""

cleanup() {
  local rc=$?
  for pid in "$LU_PID" "$REDIS_PID"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

echo "== building local-upstash (release)"
cargo build --release --quiet --manifest-path "$CRATE/Cargo.toml"
BIN="$CRATE/target/release/local-upstash"

if [[ ! -d "$HERE/node_modules/@upstash/redis" ]]; then
  echo "== npm install"
  (cd "$HERE" && npm install --no-audit --no-fund --loglevel=error)
fi

REDIS_PORT="$(free_port)"
echo "== starting redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --save '' --appendonly no --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize no \
  --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then break; fi
  if ! kill -0 "$REDIS_PID" 2>/dev/null; then echo "redis-server exited:"; cat "$WORK/redis.log"; exit 1; fi
  sleep 0.05
done

TOKEN="conf-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
LU_PORT="$(free_port)"
echo "== starting local-upstash on 127.0.0.1:$LU_PORT"
"$BIN" --listen "127.0.0.1:$LU_PORT" --redis "127.0.0.1:$REDIS_PORT" --token "$TOKEN" \
  >"$WORK/lu.out" 2>"$WORK/lu.err" &
LU_PID=$!
for _ in $(seq 1 100); do
  if grep -q "^local-upstash listening on http://127.0.0.1:$LU_PORT\$" "$WORK/lu.out"; then break; fi
  if ! kill -0 "$LU_PID" 2>/dev/null; then echo "local-upstash exited:"; cat "$WORK/lu.err"; exit 1; fi
  sleep 0.05
done
grep -q "listening" "$WORK/lu.out" || { echo "local-upstash did not come up"; exit 1; }

echo "== node --test"
set +e
(cd "$HERE" && LOCAL_UPSTASH_URL="http://127.0.0.1:$LU_PORT" LOCAL_UPSTASH_TOKEN="$TOKEN" \
  LOCAL_UPSTASH_BIN="$BIN" UPSTASH_DISABLE_TELEMETRY=1 \
  node --test --test-reporter=spec --test-concurrency=1 conformance.test.mjs)
rc=$?
set -e
if [[ -s "$WORK/lu.err" ]]; then echo "== local-upstash stderr"; cat "$WORK/lu.err"; fi
if [[ $rc -ne 0 ]]; then echo "== conformance FAILED (node exit $rc)"; else echo "== conformance passed"; fi
exit "$rc"
