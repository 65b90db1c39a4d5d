#!/usr/bin/env bash
# Deploys keysync to Azure from a clone of this repository, signed in with `az login`:
#
#   1. builds the package (scripts/package.sh);
#   2. deploys infra/main.bicep at subscription scope without the Event Grid subscriptions;
#   3. deploys the package to the Function App and waits for the KeyRegenerated function;
#   4. deploys infra/main.bicep again, now with the Event Grid subscriptions, which need that
#      function to exist.
#
# Every step can be run again: a second run changes nothing that is already in place.
#
#   infra/deploy.sh LOCATION [PARAMETERS_FILE]      # e.g. infra/deploy.sh swedencentral infra/my.bicepparam
set -euo pipefail
cd "$(dirname "$0")/.."

location=${1:?usage: infra/deploy.sh LOCATION [PARAMETERS_FILE]}
params=${2:-infra/main.bicepparam}
deployment=${KEYSYNC_DEPLOYMENT_NAME:-keysync}

step() {
    echo "--- $*" >&2
}

deploy_infrastructure() {
    KEYSYNC_WIRE_EVENTS=$1 az deployment sub create --name "$deployment" \
        --location "$location" --parameters "$params" --output none
}

output() {
    az deployment sub show --name "$deployment" --query "properties.outputs.$1.value" --output tsv
}

wait_for_function() {
    local group=$1 app=$2 function=$3
    for _ in $(seq 60); do
        if az functionapp function show --resource-group "$group" --name "$app" \
            --function-name "$function" --output none 2>/dev/null; then
            return 0
        fi
        sleep 5
    done
    echo "deploy: $function did not appear in $app within 5 minutes; see its log stream" >&2
    return 1
}

step "building the package"
package=$(scripts/package.sh)

step "deploying the infrastructure ($params, in $location)"
deploy_infrastructure false
group=$(output resourceGroupName)
app=$(output functionAppName)

step "deploying $package to $app"
az functionapp deployment source config-zip --resource-group "$group" --name "$app" \
    --src "$package" --output none
wait_for_function "$group" "$app" KeyRegenerated

step "wiring the Event Grid subscriptions"
deploy_infrastructure true
echo "keysync is deployed: Function App $app in resource group $group" >&2
