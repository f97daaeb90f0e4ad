#!/usr/bin/env bash
# Deploy Altostratus to Azure: infrastructure with Bicep, then the one code package published to both apps
# (api and worker) with Azure Functions Core Tools.
#
#   RESOURCE_GROUP=alto-rg API_KEY_HASHES=acme=sha256:... ANTHROPIC_API_KEY=sk-... ./infra/azure/deploy.sh
#   ./infra/azure/deploy.sh --build-only                # just the app folder, in infra/azure/build/app
#
# RESOURCE_GROUP  where to deploy (created in LOCATION, default westeurope); NAME (alto) as in main.bicep
# API_KEY_HASHES  the first API keys as hashes, tenant=sha256:... (`alto config hash-key KEY`)
# ANTHROPIC_API_KEY  stored in the vault before the code starts, so the worker's Key Vault reference resolves
# BICEP_ARGS      more `--parameters` for the deployment (e.g. "workerTimeoutMinutes=15"; "safetyVault=true" when a
#                 safety policy redacts PII: its vault key, stored here as a random value and granted)
# CONFIG          the altostratus.yaml to ship (default: the one beside this script), validated every section
#                 with PYTHON (default python3, with the project installed) before anything is built
set -euo pipefail
CONFIG=$(realpath "${CONFIG:-$(dirname "$0")/altostratus.yaml}")
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
NAME=${NAME:-alto}
LOCATION=${LOCATION:-westeurope}
source ../stage.sh

build() {
  stage build/app azure
  # the host looks for function_app.py, host.json and requirements.txt at the app root
  printf 'from adapters.azure.function_app import app  # noqa: F401\n' > build/app/function_app.py
  cp "$ROOT/adapters/azure/host.json" "$ROOT/adapters/azure/requirements.txt" build/app/
  echo "built infra/azure/build/app"
}

build
[ "${1:-}" = "--build-only" ] && exit 0
[ -n "${RESOURCE_GROUP:-}" ] || { echo "set RESOURCE_GROUP=<resource group>" >&2; exit 2; }
az group create --name "$RESOURCE_GROUP" --location "$LOCATION" >/dev/null
# the vault uses RBAC: whoever deploys is granted Key Vault Secrets Officer on it, to store the model's key
deployer=$(az ad signed-in-user show --query id --output tsv 2>/dev/null || true)
# shellcheck disable=SC2086  # BICEP_ARGS is a list of arguments
az deployment group create --resource-group "$RESOURCE_GROUP" --name altostratus --template-file main.bicep \
  --parameters name="$NAME" apiKeyHashes="${API_KEY_HASHES:-}" deployerPrincipalId="$deployer" ${BICEP_ARGS:-} >/dev/null
out() { az deployment group show --resource-group "$RESOURCE_GROUP" --name altostratus --query "properties.outputs.$1.value" --output tsv; }
vault=$(out keyVaultName); secret=$(out secretName); api=$(out apiAppName); worker=$(out workerAppName)
if [ -n "${ANTHROPIC_API_KEY:-}" ]; then  # before the code starts: the reference resolves at the first start
  az keyvault secret set --vault-name "$vault" --name "$secret" --value "$ANTHROPIC_API_KEY" --output none
elif ! az keyvault secret show --vault-name "$vault" --name "$secret" --output none 2>/dev/null; then
  echo "the model's API key is not stored yet; until it is, jobs fail saying so. Store it, then restart the worker:" >&2
  echo "  az keyvault secret set --vault-name $vault --name $secret --value \"\$ANTHROPIC_API_KEY\"" >&2
  echo "  az functionapp restart --resource-group $RESOURCE_GROUP --name $worker" >&2
fi
vault_key=$(out vaultKeyName)  # with safetyVault=true: made once, before the code starts (the references resolve)
if [ -n "$vault_key" ] && ! az keyvault secret show --vault-name "$vault" --name "$vault_key" --output none 2>/dev/null; then
  az keyvault secret set --vault-name "$vault" --name "$vault_key" --value "$(openssl rand -base64 32)" --output none
  echo "stored a random vault key as $vault_key (safety.vault_key: env:ALTO_VAULT_KEY)"
fi
for app in "$api" "$worker"; do  # one package; each app runs only its own functions (AzureWebJobs.NAME.Disabled)
  (cd build/app && func azure functionapp publish "$app" --python)
done
[ -n "${API_KEY_HASHES:-}" ] || echo "no API key given: every request answers 401 until API_KEY_HASHES is set and deploy.sh rerun" >&2
echo "deployed: https://$(az functionapp show --resource-group "$RESOURCE_GROUP" --name "$api" --query defaultHostName --output tsv)"
