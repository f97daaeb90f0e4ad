#!/usr/bin/env bash
# Deploy Altostratus to Google Cloud with the native CLI (or build the source for Terraform).
#
#   PROJECT=my-project ./infra/gcp/deploy.sh               # topics, bucket, Firestore, secret, 4 functions, DLQ policy
#   ./infra/gcp/deploy.sh --build-only                     # build/function-source.zip for `terraform apply`
#   PROJECT=... ./infra/gcp/deploy.sh --dead-letter-only   # (Terraform calls this) the worker subscription's DLQ policy
#   CONFIG=path/to/altostratus.yaml (default: the one beside this script) is validated, every section, with
#   PYTHON (default python3, with the project installed) before anything is built
set -euo pipefail
CONFIG=$(realpath "${CONFIG:-$(dirname "$0")/altostratus.yaml}")  # what to deploy (default: the one beside this script)
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
PROJECT=${PROJECT:-}
REGION=${REGION:-us-central1}
NAME=${NAME:-alto}
MAX_DELIVERY_ATTEMPTS=${MAX_DELIVERY_ATTEMPTS:-5}
TOPIC="$NAME-jobs"
DEAD_TOPIC="$NAME-jobs-dead"
BUCKET="$PROJECT-$NAME-data"
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

dead_letter_policy() {
  # Eventarc creates the worker's subscription; give it the dead-letter topic and attempt limit
  local trigger sub number
  trigger=$(gcloud functions describe "$NAME-worker" --gen2 --region "$REGION" --project "$PROJECT" \
    --format='value(eventTrigger.trigger)')
  sub=$(gcloud eventarc triggers describe "${trigger##*/}" --location "$REGION" --project "$PROJECT" \
    --format='value(transport.pubsub.subscription)')
  gcloud pubsub subscriptions update "$sub" --project "$PROJECT" \
    --dead-letter-topic="projects/$PROJECT/topics/$DEAD_TOPIC" --max-delivery-attempts="$MAX_DELIVERY_ATTEMPTS"
  number=$(gcloud projects describe "$PROJECT" --format='value(projectNumber)')
  gcloud pubsub subscriptions add-iam-policy-binding "$sub" --project "$PROJECT" \
    --member="serviceAccount:service-$number@gcp-sa-pubsub.iam.gserviceaccount.com" --role=roles/pubsub.subscriber >/dev/null
  gcloud pubsub topics add-iam-policy-binding "$DEAD_TOPIC" --project "$PROJECT" \
    --member="serviceAccount:service-$number@gcp-sa-pubsub.iam.gserviceaccount.com" --role=roles/pubsub.publisher >/dev/null
  echo "dead-letter policy: $sub -> $DEAD_TOPIC after $MAX_DELIVERY_ATTEMPTS deliveries"
}

case "${1:-}" in
  --build-only) build; exit 0 ;;
  --dead-letter-only) [ -n "$PROJECT" ] || { echo "set PROJECT" >&2; exit 2; }; dead_letter_policy; exit 0 ;;
esac
[ -n "$PROJECT" ] || { echo "set PROJECT=<your project id>" >&2; exit 2; }

build
gcloud services enable cloudfunctions.googleapis.com run.googleapis.com eventarc.googleapis.com \
  pubsub.googleapis.com firestore.googleapis.com secretmanager.googleapis.com cloudscheduler.googleapis.com \
  cloudbuild.googleapis.com --project "$PROJECT"
gcloud pubsub topics describe "$TOPIC" --project "$PROJECT" >/dev/null 2>&1 || gcloud pubsub topics create "$TOPIC" --project "$PROJECT"
gcloud pubsub topics describe "$DEAD_TOPIC" --project "$PROJECT" >/dev/null 2>&1 || gcloud pubsub topics create "$DEAD_TOPIC" --project "$PROJECT"
gcloud storage buckets describe "gs://$BUCKET" --project "$PROJECT" >/dev/null 2>&1 || \
  gcloud storage buckets create "gs://$BUCKET" --location "$REGION" --uniform-bucket-level-access --project "$PROJECT"
gcloud firestore databases describe --database="$NAME-db" --project "$PROJECT" >/dev/null 2>&1 || \
  gcloud firestore databases create --database="$NAME-db" --location="$REGION" --project "$PROJECT"
# one service account per function, each with only what its code path calls (as functions.tf)
for fn in api worker dead-letter reconcile; do
  sa="$NAME-$fn@$PROJECT.iam.gserviceaccount.com"
  gcloud iam service-accounts describe "$sa" --project "$PROJECT" >/dev/null 2>&1 || \
    gcloud iam service-accounts create "$NAME-$fn" --display-name="Altostratus $fn function" --project "$PROJECT"
  gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$sa" --role=roles/datastore.user \
    --condition=None >/dev/null
  role=roles/storage.objectUser; [ "$fn" = dead-letter ] && role=roles/storage.objectViewer
  gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member="serviceAccount:$sa" --role="$role" >/dev/null
  [ "$fn" = dead-letter ] || gcloud pubsub topics add-iam-policy-binding "$TOPIC" --project "$PROJECT" \
    --member="serviceAccount:$sa" --role=roles/pubsub.publisher >/dev/null
done
gcloud secrets describe "$NAME-anthropic-api-key" --project "$PROJECT" >/dev/null 2>&1 && \
  gcloud secrets add-iam-policy-binding "$NAME-anthropic-api-key" --project "$PROJECT" \
    --member="serviceAccount:$NAME-worker@$PROJECT.iam.gserviceaccount.com" --role=roles/secretmanager.secretAccessor >/dev/null
ENV="ALTO_GCP_PROJECT=$PROJECT,ALTO_TOPIC=$TOPIC,ALTO_BUCKET=$BUCKET,ALTO_CONFIG=altostratus.yaml,ALTO_FIRESTORE_DATABASE=$NAME-db,ALTO_QUEUE__MAX_RECEIVES=$MAX_DELIVERY_ATTEMPTS"
common=(--gen2 --runtime=python312 --region="$REGION" --project="$PROJECT" --source=build/source)
sa() { echo "--service-account=$NAME-$1@$PROJECT.iam.gserviceaccount.com"; }
gcloud functions deploy "$NAME-api" "${common[@]}" "$(sa api)" --set-env-vars="$ENV" --entry-point=api \
  --trigger-http --allow-unauthenticated --timeout=30s
gcloud functions deploy "$NAME-worker" "${common[@]}" "$(sa worker)" --set-env-vars="$ENV,ALTO_FUNCTION_TIMEOUT_S=540" \
  --entry-point=worker --trigger-topic="$TOPIC" --retry --timeout=540s --memory=1Gi --max-instances=10 --concurrency=1
gcloud functions deploy "$NAME-dead-letter" "${common[@]}" "$(sa dead-letter)" --set-env-vars="$ENV" \
  --entry-point=dead_letter --trigger-topic="$DEAD_TOPIC" --retry --timeout=60s
gcloud functions deploy "$NAME-reconcile" "${common[@]}" "$(sa reconcile)" --set-env-vars="$ENV" --entry-point=reconcile \
  --trigger-http --no-allow-unauthenticated --ingress-settings=internal-only --timeout=120s
for fn in worker dead-letter reconcile; do  # each trigger's identity may invoke its own function only
  gcloud functions add-invoker-policy-binding "$NAME-$fn" --region="$REGION" --project="$PROJECT" \
    --member="serviceAccount:$NAME-$fn@$PROJECT.iam.gserviceaccount.com" >/dev/null
done
url=$(gcloud functions describe "$NAME-reconcile" --gen2 --region "$REGION" --project "$PROJECT" --format='value(serviceConfig.uri)')
gcloud scheduler jobs describe "$NAME-reconcile" --location "$REGION" --project "$PROJECT" >/dev/null 2>&1 || \
  gcloud scheduler jobs create http "$NAME-reconcile" --location "$REGION" --project "$PROJECT" \
    --schedule="*/5 * * * *" --uri="$url" --http-method=POST \
    --oidc-service-account-email="$NAME-reconcile@$PROJECT.iam.gserviceaccount.com"
dead_letter_policy
echo "deployed; create the secret once: printf %s \"\$ANTHROPIC_API_KEY\" | gcloud secrets create $NAME-anthropic-api-key --data-file=- --project $PROJECT"
