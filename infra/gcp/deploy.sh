#!/usr/bin/env bash
# Deploy Altostratus to Google Cloud: build the function source, then `terraform apply` on infra/gcp (the one
# source of truth: there is no second, gcloud-only path to drift from it).
#
#   PROJECT=my-project API_KEY_HASHES=acme=sha256:... ANTHROPIC_API_KEY=sk-... ./infra/gcp/deploy.sh
#   ./infra/gcp/deploy.sh --build-only       # just build/function-source.zip
#
# PROJECT        the project (required to deploy); REGION (us-central1) and NAME (alto) as in variables.tf
# API_KEY_HASHES the first API keys as hashes, tenant=sha256:... (`alto config hash-key KEY`)
# ANTHROPIC_API_KEY  stored as the secret's first version when it has none (never in the Terraform state)
# TF_ARGS        more arguments for `terraform apply` (e.g. "-var worker_timeout_s=300"; "-var safety_vault=true"
#                when a safety policy redacts PII: its vault key, made and granted here)
# CONFIG         the altostratus.yaml to ship (default: the one beside this script), validated every section
#                with PYTHON (default python3, with the project installed) before anything is built
set -euo pipefail
CONFIG=$(realpath "${CONFIG:-$(dirname "$0")/altostratus.yaml}")
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
PROJECT=${PROJECT:-}
REGION=${REGION:-us-central1}
NAME=${NAME:-alto}
source ../stage.sh

build() {
  stage build/source gcp
  # main.py at the root re-exports the entry points of adapters/gcp/main.py (functions-framework
  # looks for the target in ./main.py)
  cp requirements.txt build/source/
  printf 'from adapters.gcp.main import api, dead_letter, reconcile, worker  # noqa: F401\n' > build/source/main.py
  (cd build/source && rm -f ../function-source.zip && zip -qr ../function-source.zip .)
  echo "built infra/gcp/build/function-source.zip"
}

build
[ "${1:-}" = "--build-only" ] && exit 0
[ -n "$PROJECT" ] || { echo "set PROJECT=<your project id>" >&2; exit 2; }

terraform init -input=false
# shellcheck disable=SC2086  # TF_ARGS is a list of arguments
terraform apply -input=false -var "project=$PROJECT" -var "region=$REGION" -var "name=$NAME" \
  -var "api_key_hashes=${API_KEY_HASHES:-}" ${TF_ARGS:-}
secret=$(terraform output -raw secret)
if [ -z "$(gcloud secrets versions list "$secret" --project "$PROJECT" --limit 1 --format='value(name)')" ]; then
  if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
    printf %s "$ANTHROPIC_API_KEY" | gcloud secrets versions add "$secret" --data-file=- --project "$PROJECT" >/dev/null
    echo "stored the model's API key as $secret's first version"
  else
    echo "the model's API key is not stored yet; until it is, jobs fail saying so. Store it with:" >&2
    echo "  printf %s \"\$ANTHROPIC_API_KEY\" | gcloud secrets versions add $secret --data-file=- --project $PROJECT" >&2
  fi
fi
vault=$(terraform output -raw vault_secret)  # with -var safety_vault=true: a redacting policy's key
if [ -n "$vault" ] && [ -z "$(gcloud secrets versions list "$vault" --project "$PROJECT" --limit 1 --format='value(name)')" ]; then
  openssl rand -base64 32 | tr -d '\n' | gcloud secrets versions add "$vault" --data-file=- --project "$PROJECT" >/dev/null
  echo "stored a random vault key as $vault's first version (safety.vault_key: gcp-sm:$vault)"
fi
[ -n "${API_KEY_HASHES:-}" ] || echo "no API key given: every request answers 401 until API_KEY_HASHES is set and deploy.sh rerun" >&2
echo "deployed: $(terraform output -raw api_url)"
