// The pull worker on Azure Container Apps: `alto worker --cloud azure` (infra/container/Dockerfile) receiving from
// the Service Bus queue main.bicep made, next to (or instead of) the Functions worker. Deploy it into the same
// resource group once the image is in a registry the environment can pull from:
//   az deployment group create -g RG -f infra/azure/container-app.bicep -p image=... environmentId=... \
//     workerIdentityName=... serviceBusName=... storageName=... jobsTable=... stateTable=... container=... secretUri=...
// (main.bicep's resources, named in its outputs and the Function App's settings).
//
// The app runs as the Functions worker's own user-assigned identity: the same role assignments, which
// tests/test_azure_deploy.py proves the worker needs, and nothing else. KEDA's azure-servicebus rule reads the
// queue's count with an identity of its own (its scaler asks for Azure Service Bus Data Owner on the namespace),
// never the worker's. Timing: Container Apps allows at most 600 s between SIGTERM and SIGKILL, so a job here may
// run 570 s and the drain margin is 15 s (tests/test_containers.py checks the relation).

param location string = resourceGroup().location
param name string = 'alto'
@description('The worker image, built with --build-arg CLOUD=azure, by digest')
param image string
@description('The Container Apps environment to run in (its own virtual network, logs, workload profile)')
param environmentId string
@description('main.bicep\'s worker identity (${name}-worker-id-${suffix}): the Functions worker\'s grants')
param workerIdentityName string
param serviceBusName string
param queueName string = '${name}-jobs' // main.bicep's jobs queue
param storageName string
param jobsTable string
param stateTable string
param container string
@description('The Key Vault secret holding the provider key (main.bicep\'s anthropic-api-key), versionless')
param secretUri string
@description('With main.bicep\'s safetyVault: its vault-key secret, versionless (empty: no policy redacts)')
param vaultKeyUri string = ''
@description('Follows the provider\'s rate limit: replicas x 32 calls in flight within requests_per_minute x seconds per call / 60 (`alto config replicas`)')
@minValue(1)
param maxReplicas int = 1

var concurrency = 32
var jobDeadlineSeconds = 570
var drainMarginSeconds = 15
var graceSeconds = 600 // Container Apps' ceiling for terminationGracePeriodSeconds
var lockSeconds = 300 // the queue's lockDuration in main.bicep (PT5M): each lock is renewed every third of it
var dataOwner = '090c5cfd-751d-490a-894a-3ce6f1109419' // Azure Service Bus Data Owner

resource workerIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: workerIdentityName
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusName
}

resource scalerIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${name}-pull-scaler-id'
  location: location
}

resource scalerReads 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, scalerIdentity.id, dataOwner)
  scope: serviceBus
  properties: {
    principalId: scalerIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataOwner)
  }
}

resource worker 'Microsoft.App/containerApps@2024-03-01' = {
  name: '${name}-pull-worker'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${workerIdentity.id}': {}
      '${scalerIdentity.id}': {}
    }
  }
  dependsOn: [scalerReads]
  properties: {
    environmentId: environmentId
    configuration: {
      activeRevisionsMode: 'Single'
      secrets: concat([
        { name: 'anthropic-api-key', keyVaultUrl: secretUri, identity: workerIdentity.id }
      ], empty(vaultKeyUri) ? [] : [
        { name: 'vault-key', keyVaultUrl: vaultKeyUri, identity: workerIdentity.id }
      ])
    }
    template: {
      terminationGracePeriodSeconds: graceSeconds
      containers: [
        {
          name: 'worker'
          image: image
          resources: { cpu: json('0.25'), memory: '0.5Gi' }
          env: concat([
            { name: 'AZURE_CLIENT_ID', value: workerIdentity.properties.clientId } // DefaultAzureCredential's pick
            { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: '${serviceBus.name}.servicebus.windows.net' }
            { name: 'ALTO_QUEUE_NAME', value: queueName }
            { name: 'ALTO_STORAGE_ACCOUNT', value: storageName }
            { name: 'ALTO_JOBS_TABLE', value: jobsTable }
            { name: 'ALTO_STATE_TABLE', value: stateTable }
            { name: 'ALTO_CONTAINER', value: container }
            { name: 'ANTHROPIC_API_KEY', secretRef: 'anthropic-api-key' }
            { name: 'ALTO_PULL__CONCURRENCY', value: string(concurrency) }
            { name: 'ALTO_PULL__JOB_DEADLINE_S', value: string(jobDeadlineSeconds) }
            { name: 'ALTO_PULL__DRAIN_MARGIN_S', value: string(drainMarginSeconds) }
            { name: 'ALTO_QUEUE__VISIBILITY_TIMEOUT_S', value: string(lockSeconds) }
          ], empty(vaultKeyUri) ? [] : [{ name: 'ALTO_VAULT_KEY', secretRef: 'vault-key' }])
          probes: [
            { type: 'Startup', httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 2, failureThreshold: 30 }
            { type: 'Liveness', httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 15, failureThreshold: 4 }
            { type: 'Readiness', httpGet: { path: '/readyz', port: 8080 }, periodSeconds: 5 }
          ]
        }
      ]
      scale: {
        minReplicas: 0
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'jobs-backlog'
            custom: {
              type: 'azure-servicebus'
              identity: scalerIdentity.id
              metadata: {
                namespace: serviceBus.name
                queueName: queueName
                messageCount: string(concurrency)
              }
            }
          }
        ]
      }
    }
  }
}

output workerAppName string = worker.name
