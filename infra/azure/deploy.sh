#!/usr/bin/env bash
# Deploy Altostratus to Azure: infrastructure with Bicep, code with Azure Functions Core Tools.
#
#   RESOURCE_GROUP=alto-rg ./infra/azure/deploy.sh      # az deployment group create, then func azure functionapp publish
#   ./infra/azure/deploy.sh --build-only                # just the app folder, in infra/azure/build/app
#   CONFIG=path/to/altostratus.yaml (default: the one beside this script) is validated, every section, with
#   PYTHON (default python3, with the project installed) before anything is built
set -euo pipefail
CONFIG=$(realpath "${CONFIG:-$(dirname "$0")/altostratus.yaml}")  # what to deploy (default: the one beside this script)
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
app=$(az deployment group create --resource-group "$RESOURCE_GROUP" --template-file main.bicep \
  --parameters name="$NAME" --query properties.outputs.functionAppName.value --output tsv)
vault=$(az deployment group show --resource-group "$RESOURCE_GROUP" --name main \
  --query properties.outputs.keyVaultName.value --output tsv)
echo "infrastructure ready: function app $app, key vault $vault"
(cd build/app && func azure functionapp publish "$app" --python)
echo "deployed; store the key once: az keyvault secret set --vault-name $vault --name anthropic-api-key --value \"\$ANTHROPIC_API_KEY\""
