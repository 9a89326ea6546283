#!/usr/bin/env bash
# Runs the production shape on one machine: a private redis-server, three claude-lb replicas on
# ports 8081-8083 sharing it, and nginx on :8080 in front. Ctrl-C stops everything it started.
# Needs redis-server and nginx (Debian: apt-get install redis-server nginx) and Go.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

for bin in redis-server nginx go; do
	command -v "$bin" >/dev/null || { echo "run.sh: $bin is not installed (Debian: apt-get install redis-server nginx)" >&2; exit 1; }
done
: "${PERSONAL_API_KEY:?export PERSONAL_API_KEY (and WORK_OAUTH_TOKEN) first}"
: "${WORK_OAUTH_TOKEN:?export WORK_OAUTH_TOKEN first}"

redis_port=${REDIS_PORT:-6390}
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
export REDIS_URL="redis://127.0.0.1:$redis_port/0"

(cd "$root" && go build -o "$work/claude-lb" ./cmd/claude-lb)
for i in 1 2 3; do
	CLAUDE_LB_REPLICA=replica$i PORT=808$i "$work/claude-lb" serve -c "$here/claude-lb.yaml" >"$work/replica$i.log" 2>&1 &
	pids+=($!)
done

sed -e "s#@WORK@#$work#g" "$here/nginx.conf" >"$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" &
pids+=($!)

for i in 1 2 3; do
	until curl -sf "http://127.0.0.1:808$i/readyz" >/dev/null; do sleep 0.2; done
done
cat <<TXT
ready: nginx http://127.0.0.1:8080 -> replicas :8081 :8082 :8083, Redis $REDIS_URL
  export ANTHROPIC_BASE_URL=http://127.0.0.1:8080
  dashboards: http://127.0.0.1:8081/dashboard (any replica shows the shared state)
  logs: $work/replica{1,2,3}.log
  try: kill the Redis (kill ${pids[0]}) and watch /readyz say store_degraded while requests go on
TXT
wait
