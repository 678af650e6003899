#!/bin/sh
# Start a run of a Prefect deployment and wait for it, with curl and jq only: what
# `ameide-migrate trigger --wait` does, for CI without Python.
#
#   deployments/ci/trigger.sh FLOW/DEPLOYMENT [DATABASE ...]
#   e.g. deployments/ci/trigger.sh migrate/staging threads graph
#
# Environment:
#   PREFECT_API_URL          the Prefect API, e.g. https://prefect.example.com/api, or for Prefect
#                            Cloud https://api.prefect.cloud/api/accounts/ID/workspaces/ID
#   PREFECT_API_KEY          Prefect Cloud: sent as `Authorization: Bearer KEY`
#   PREFECT_API_AUTH_STRING  a self-hosted server with basic auth: user:password
#   IMAGE                    run on this image (REPOSITORY@sha256:DIGEST), not the deployment's
#   TIMEOUT                  seconds to wait for the run (default 3600); the run keeps going after
#   POLL_SECONDS             seconds between two looks at the run (default 5)
#
# Exits 0 completed; 1 failed, crashed or cancelled; 2 usage or configuration (no API address,
# the API unreachable or refusing the credentials, the deployment not registered, any answer that
# is not 2xx); 3 drift found (drift flow); 4 timed out.
set -eu

fail() {
  code=$1
  shift
  printf 'FAILED: %s\n' "$*" >&2
  exit "$code"
}

[ $# -ge 1 ] || fail 2 "usage: $0 FLOW/DEPLOYMENT [DATABASE ...], e.g. migrate/staging"
deployment=$1
shift
case $deployment in
  */*) ;;
  *) fail 2 "$deployment is not FLOW/DEPLOYMENT, e.g. migrate/staging" ;;
esac
api=${PREFECT_API_URL:-}
[ -n "$api" ] || fail 2 "PREFECT_API_URL is empty: set it to the Prefect API (https://HOST/api)"
api=${api%/}
timeout=${TIMEOUT:-3600}
poll=${POLL_SECONDS:-5}
case $timeout$poll in
  '' | *[!0-9]*) fail 2 "TIMEOUT and POLL_SECONDS are whole seconds: got '$timeout', '$poll'" ;;
esac
for tool in curl jq; do
  command -v "$tool" >/dev/null || fail 2 "$tool is not on PATH"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The credentials reach curl in a file of the private folder, never on a command line that any
# process may read.
if [ -n "${PREFECT_API_KEY:-}" ]; then
  printf 'Authorization: Bearer %s\n' "$PREFECT_API_KEY" >"$work/headers"
elif [ -n "${PREFECT_API_AUTH_STRING:-}" ]; then
  basic=$(printf '%s' "$PREFECT_API_AUTH_STRING" | base64 | tr -d '\n')
  printf 'Authorization: Basic %s\n' "$basic" >"$work/headers"
fi
printf 'Content-Type: application/json\n' >>"$work/headers"

# request METHOD PATH [BODY]: the answer's status in $status, its body in $work/answer.
# Only an API that cannot be reached stops here; the caller judges the status.
request() {
  method=$1
  path=$2
  if [ $# -ge 3 ]; then
    printf '%s' "$3" >"$work/body"
    set -- --data-binary "@$work/body" --retry 3
  else
    set -- --retry 3
  fi
  # A transient fault (timeout, 429, 5xx: a busy server answers 503) is asked again, a few
  # times; the one write, starting the run, carries an idempotency key, so asking again can
  # never start a second run.
  status=$(curl --silent --show-error --max-time 30 --header "@$work/headers" \
    --request "$method" --output "$work/answer" --write-out '%{http_code}' \
    "$@" "$api$path") || fail 2 "the Prefect API at $api cannot be reached (curl exit $?)"
}

# expect WHAT: stops with the answer unless it is 2xx.
expect() {
  case $status in
    2??) ;;
    401 | 403)
      fail 2 "$1: the Prefect API at $api refused the credentials (HTTP $status): set" \
        "PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING (user:password)" ;;
    *) fail 2 "$1: the Prefect API answered HTTP $status: $(head -c 500 "$work/answer")" ;;
  esac
}

request GET "/deployments/name/$deployment"
[ "$status" != 404 ] || fail 2 "deployment $deployment is not registered on $api:" \
  "register it (ameide-migrate deploy --env ENV), or check its name"
expect "reading deployment $deployment"
id=$(jq -er '.id | strings' "$work/answer") ||
  fail 2 "reading deployment $deployment: no id in the answer: $(head -c 500 "$work/answer")"

key="trigger-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
body=$(jq -cn --arg image "${IMAGE:-}" --arg key "$key" '
  {parameters: (if $ARGS.positional == [] then {} else {databases: $ARGS.positional} end),
   idempotency_key: $key}
  + (if $image == "" then {} else {job_variables: {image: $image}} end)' --args "$@")
request POST "/deployments/$id/create_flow_run" "$body"
expect "starting a run of $deployment"
run=$(jq -er '.id | strings' "$work/answer") ||
  fail 2 "starting a run of $deployment: no id in the answer: $(head -c 500 "$work/answer")"

ui=${PREFECT_UI_URL:-$(printf '%s' "$api" | sed -e 's#/api$##' \
  -e 's#^https://api\.prefect\.cloud/api/accounts/#https://app.prefect.cloud/account/#' \
  -e 's#/workspaces/#/workspace/#')}
echo "flow run $run: $ui/runs/flow-run/$run"

deadline=$(($(date +%s) + timeout))
seen=
while :; do
  request GET "/flow_runs/$run"
  expect "reading flow run $run"
  type=$(jq -r '.state.type // "SCHEDULED"' "$work/answer")
  name=$(jq -r '.state.name // "Scheduled"' "$work/answer")
  if [ "$name" != "$seen" ]; then
    echo "state: $name"
    seen=$name
  fi
  case $type in
    COMPLETED) exit 0 ;;
    FAILED | CRASHED | CANCELLED)
      jq -r '.state.message // empty' "$work/answer"
      [ "$name" != Drifted ] || exit 3
      exit 1
      ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "still $name after ${timeout}s; the run keeps going: $ui/runs/flow-run/$run"
    exit 4
  fi
  sleep "$poll"
done
