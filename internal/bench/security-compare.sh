#!/usr/bin/env bash
# What security costs: the same bench against a gateway with security on
# (authentication, OPA, durable audit) and off (FHIRGATE_SECURITY=off),
# each over a fresh database, alternating, ROUNDS times.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin/fhirgate}
ROUNDS=${ROUNDS:-3}
RES=${RES:-30000}
DUR=${DUR:-20s}
[ -x "$BIN" ] || { echo "build $BIN first (make build)" >&2; exit 1; }
export FHIRGATE_DATA_DIR=${FHIRGATE_DATA_DIR:-.data/secbench}
mkdir -p $FHIRGATE_DATA_DIR
run() { # mode round
	local mode=$1 round=$2 db=fhirgate_secbench_$1
	psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" postgres
	psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" postgres
	local url="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable"
	local sec=on; [ $mode = off ] && sec=off
	DATABASE_URL=$url FHIRGATE_SECURITY=$sec FHIRGATE_ADDR=127.0.0.1:18380 FHIRGATE_DEBUG_ADDR=127.0.0.1:16380 \
		FHIRGATE_MLLP_ADDR=off FHIRGATE_LOG_LEVEL=warn $BIN serve > .data/secbench-serve-$mode.log 2>&1 &
	local pid=$!
	for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/18380) 2>/dev/null && break; sleep 0.2; done
	local tok; tok=$($BIN token -sub bench-svc -scope 'system/*.cruds')
	local stats=""; [ $mode = on ] && stats="-stats-url http://127.0.0.1:16380/debug/fhirgate"
	echo "=== security $mode, round $round"
	$BIN bench -url http://127.0.0.1:18380/fhir -token "$tok" $stats -phases ingest,vacuum,read,search \
		-database-url "$url" -resources $RES -duration $DUR 2>/dev/null
	kill $pid; wait $pid 2>/dev/null
	psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" postgres
}
for r in $(seq 1 $ROUNDS); do
	if [ $((r % 2)) = 1 ]; then run on $r; run off $r; else run off $r; run on $r; fi
done
