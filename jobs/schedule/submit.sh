#!/usr/bin/env bash
# Submit one scheduled re-analysis of a study to a running Ray cluster, without waiting.
#
#   jobs/schedule/submit.sh s3://my-bucket/studies/tokyo.yaml [key=value ...]
#
# The submission id is <study file name>-<UTC date>, so a second run on the same day is
# refused by Ray instead of running twice. The study re-runs only what changed since
# its last run: new images or a new city (see README, "Scheduled re-analysis").
# Needs RAY_ADDRESS (e.g. http://127.0.0.1:8265 through `ray dashboard cluster.yaml`)
# and, on a token-auth cluster, RAY_AUTH_MODE=token with ~/.ray/auth_token present.
set -euo pipefail
study="${1:?usage: submit.sh STUDY_URI [key=value ...]}"
shift
repo="$(cd "$(dirname "$0")/../.." && pwd)"
name="$(basename "$study" .yaml)"
id="${name}-$(date -u +%Y%m%d)"
exec ray job submit --no-wait --submission-id "$id" --working-dir "$repo" \
  -- python jobs/run_study.py "$study" "$@"
