#!/usr/bin/env bash
# Captures golden workflow histories (ADR 0009) from real executions: starts a private dev stack on
# spare ports, connects the emulator's demo account, runs a manual backup, a sweep, housekeeping
# and an uninstall, then saves one history of each workflow type with `temporal workflow show`.
#   scripts/capture-golden-histories.sh VERSION     # writes workflows/testdata/history/VERSION/
set -euo pipefail
version=${1:?usage: $0 VERSION (for example v2)}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/workflows/testdata/history/$version"
work=$(mktemp -d)
chmod 755 "$work" # the private Postgres runs as the postgres user when we are root
pg=${CAPTURE_PG_PORT:-56432} tp=${CAPTURE_TEMPORAL_PORT:-17233} ui=${CAPTURE_UI_PORT:-18233}
http=127.0.0.1:${CAPTURE_HTTP_PORT:-18080} emu=127.0.0.1:${CAPTURE_EMULATOR_PORT:-17990}
temporal() { "$root/bin/temporal" --address "127.0.0.1:$tp" --namespace default "$@"; }

cd "$root"
make -s build
bash scripts/install-tools.sh --dev-only >/dev/null
GITSEC_PUBLIC_URL="http://$http" GITSEC_BACKUP_QUIET_PERIOD=1s ./bin/gitsec dev --dir "$work/state" \
  --postgres-port "$pg" --temporal-port "$tp" --temporal-ui-port "$ui" --http-addr "$http" \
  --emulator-addr "$emu" >"$work/dev.log" 2>&1 &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 120); do grep -q "stack is up" "$work/dev.log" && break; sleep 1; done
grep -q "stack is up" "$work/dev.log" || { tail -40 "$work/dev.log"; exit 1; }

token=$(cat "$work/state/dev-token")
api() { curl -sf -H "Authorization: Bearer $token" "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
wait_for() { # description, command
  for _ in $(seq 120); do if eval "$2" >/dev/null 2>&1; then return 0; fi; sleep 1; done
  echo "timed out waiting for $1" >&2; tail -40 "$work/dev.log" >&2; exit 1
}

url=$(api -c "$work/jar" -X POST "http://$http/api/v1/installations/bitbucket/connect" | json 'd["authorize_url"]')
callback=$(curl -s -o /dev/null -w '%{redirect_url}' -X POST "$url" --data 'user=alice&decision=grant')
curl -sf -c "$work/jar" -b "$work/jar" "$callback" >/dev/null
inst=$(api "http://$http/api/v1/installations" | json 'd["installations"][0]["id"]')
wait_for "onboarding" "api http://$http/api/v1/installations/$inst | json 'd[\"installation\"][\"status\"]' | grep -qx active"
repo=$(api "http://$http/api/v1/repositories?workspace=acme" | json 'd["repositories"][0]["id"]')
wait_for "first backup" "api http://$http/api/v1/repositories/$repo | json 'd[\"repository\"].get(\"last_snapshot_id\") or \"\"' | grep -q ."
api -X POST "http://$http/api/v1/repositories/$repo/backups" >/dev/null
temporal schedule trigger --schedule-id "sweep-$inst" >/dev/null
temporal schedule trigger --schedule-id gitsec-housekeeping >/dev/null
wait_for "sweep" "temporal workflow list --query 'WorkflowType=\"SweepInstallation\" AND ExecutionStatus=\"Completed\"' | grep -q Sweep"
wait_for "housekeeping" "temporal workflow list --query 'WorkflowType=\"Housekeeping\" AND ExecutionStatus=\"Completed\"' | grep -q House"
sleep 8 # the manual backup's quiet period and run
# A restore through the Restore App into a new repository, a drill and a drill round.
url=$(api -c "$work/jar" -X POST "http://$http/api/v1/installations/$inst/restore-app/connect" | json 'd["authorize_url"]')
callback=$(curl -s -o /dev/null -w '%{redirect_url}' -X POST "$url" --data 'user=alice&decision=grant')
curl -sf -c "$work/jar" -b "$work/jar" "$callback" >/dev/null
snap=$(api "http://$http/api/v1/repositories/$repo/snapshots?limit=1" | json 'd["snapshots"][0]["id"]')
api -X POST "http://$http/api/v1/restores" -d '{"snapshot_id":"'"$snap"'","target":{"mode":"new","workspace":"acme","slug":"golden-restore"},"options":{"restore_metadata":true,"restore_open_pull_requests":true}}' >/dev/null
api -X POST "http://$http/api/v1/repositories/$repo/drills" >/dev/null
temporal schedule trigger --schedule-id "drills-$inst" >/dev/null
wait_for "restore" "temporal workflow list --query 'WorkflowType=\"Restore\" AND ExecutionStatus=\"Completed\"' | grep -q Restore"
wait_for "drill round" "temporal workflow list --query 'WorkflowType=\"DrillInstallation\" AND ExecutionStatus=\"Completed\"' | grep -q Drill"
wait_for "drill" "temporal workflow list --query 'WorkflowType=\"DrillRestore\" AND ExecutionStatus=\"Completed\"' | grep -q Drill"
api -X DELETE "http://$http/api/v1/installations/$inst" >/dev/null
wait_for "uninstall" "temporal workflow list --query 'WorkflowType=\"UninstallInstallation\" AND ExecutionStatus=\"Completed\"' | grep -q Uninstall"

mkdir -p "$out"
for wf in ${CAPTURE_WORKFLOWS:-Housekeeping OnboardInstallation SweepInstallation UninstallInstallation BackupRepository Restore DrillRestore DrillInstallation}; do
  # The execution with the longest history of each type exercises the most code.
  best= bestlen=0
  for id in $(temporal workflow list --query "WorkflowType=\"$wf\"" --output json | json '"\n".join(e["execution"]["workflowId"]+" "+e["execution"]["runId"] for e in d)' | tr ' ' ','); do
    temporal workflow show --workflow-id "${id%%,*}" --run-id "${id##*,}" --output json >"$work/h.json"
    n=$(json 'len(d["events"])' <"$work/h.json")
    if [ "$n" -gt "$bestlen" ]; then bestlen=$n; best=$(cat "$work/h.json"); fi
  done
  [ -n "$best" ] || { echo "no execution of $wf" >&2; exit 1; }
  printf '%s\n' "$best" >"$out/$wf.json"
  echo "captured $wf ($bestlen events)"
done
