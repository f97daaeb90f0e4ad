# Sourced by infra/gcp/deploy.sh and infra/azure/deploy.sh (ROOT and CONFIG set): the part of the
# function source both clouds ship.
#
# stage DEST ADAPTER: validate every section of $CONFIG, as the worker loads it (the api function
# validates only the sections it reads), then copy core (without its test fakes), adapters/ADAPTER
# and the config into DEST, with no __pycache__.
stage() {
  local dest=$1 adapter=$2
  # --skip-secrets: the build machine doesn't hold the service's secrets (they live in the cloud's store)
  (cd "$ROOT" && "${PYTHON:-python3}" -m core.entrypoints.cli --config "$CONFIG" config check --skip-secrets) ||
    { echo "not deploying: fix $CONFIG (the check needs PYTHON=<a python with the project installed>)" >&2; exit 1; }
  rm -rf "$dest" && mkdir -p "$dest/adapters"
  cp -r "$ROOT/core" "$dest/" && rm -rf "$dest/core/testing"
  cp "$ROOT/adapters/__init__.py" "$dest/adapters/" && cp -r "$ROOT/adapters/$adapter" "$dest/adapters/"
  cp "$CONFIG" "$dest/altostratus.yaml"
  find "$dest" -name __pycache__ -prune -exec rm -rf {} +
}
