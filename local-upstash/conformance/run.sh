#!/usr/bin/env bash
# Conformance run: build local-upstash (release), start a private redis-server and a
# local-upstash in front of it on free loopback ports with a generated token, drive them with
# the official @upstash/redis client (node --test), then stop exactly the processes started here.
# Exits non-zero if the build, the start-up, or any test fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../../scripts/local-upstash.sh"

if [[ ! -d "$HERE/node_modules/@upstash/redis" ]]; then
  echo "== npm ci (conformance client)"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
fi

start_local_upstash

echo "== node --test"
set +e
(cd "$HERE" && LOCAL_UPSTASH_URL="$LU_URL" LOCAL_UPSTASH_TOKEN="$LU_TOKEN" \
  LOCAL_UPSTASH_BIN="$LU_BIN" UPSTASH_DISABLE_TELEMETRY=1 \
  node --test --test-reporter=spec --test-concurrency=1 conformance.test.mjs)
rc=$?
set -e
if [[ -s "$(local_upstash_stderr)" ]]; then echo "== local-upstash stderr"; cat "$(local_upstash_stderr)"; fi
if [[ $rc -ne 0 ]]; then echo "== conformance FAILED (node exit $rc)"; else echo "== conformance passed"; fi
exit "$rc"
