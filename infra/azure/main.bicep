// Altostratus on Azure: two Function Apps (Flex Consumption, Python 3.11) on one code package, Service Bus,
// Table and Blob Storage, Key Vault, Application Insights on a Log Analytics workspace; every connection by
// managed identity.
//   ./infra/azure/deploy.sh    (az deployment group create -f main.bicep, then publishes the code to both apps)
//
// Two apps because an identity is per app: `api` (HTTP) may send to the queue and read or write jobs, never
// receive messages or read the model's key; `worker` (the queue trigger, the dead-letter trigger and the
// reconcile timer) may. Each app disables the other's functions (AzureWebJobs.NAME.Disabled).

@description('Prefix for resource names (lowercase letters and digits).')
@minLength(3)
@maxLength(10)
param name string = 'alto'

@description('Where everything is deployed.')
param location string = resourceGroup().location

@description('Deliveries before Service Bus dead-letters a job message.')
@minValue(1)
@maxValue(2000)
param maxDeliveryCount int = 5

@description('Most instances per function group (the HTTP functions together, each queue-triggered function on its own). Flex Consumption takes 40..1000; the provider rate limit is kept by the shared token buckets, not by this cap.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('The worker functions\' timeout, in minutes: the Service Bus lock is renewed a little longer, the job deadline and lease end a little sooner.')
@minValue(2)
@maxValue(60)
param workerTimeoutMinutes int = 10

@description('The api\'s longest wait (long-poll, buffered SSE), in seconds.')
@minValue(5)
@maxValue(200)
param apiWaitSeconds int = 25

@description('The first API keys, as hashes: tenant=sha256:...,tenant2=sha256:... (`alto config hash-key KEY`). A hash is safe in an app setting; a raw key is not.')
param apiKeyHashes string = ''

@description('Object id of who deploys (deploy.sh passes the signed-in user): may write the model key into the vault.')
param deployerPrincipalId string = ''

@description('A safety policy redacts PII: the api and the worker read the vault\'s key (the secret vault-key, which deploy.sh stores as a random key) through the app setting ALTO_VAULT_KEY; the configuration names it as safety.vault_key: env:ALTO_VAULT_KEY.')
param safetyVault bool = false

@description('Action group notified by the alerts (empty: none).')
param actionGroupId string = ''

var queueName = '${name}-jobs'
var suffix = uniqueString(resourceGroup().id)
var secretName = 'anthropic-api-key'
var vaultKeyName = 'vault-key'

// ---- timing, derived from the parameters above (tests/test_azure_infra.py checks the relations)
var workerTimeoutSeconds = workerTimeoutMinutes * 60
var functionTimeout = '00:${padLeft(string(workerTimeoutMinutes), 2, '0')}:00'
// the message lock is renewed past the function's own timeout, so no run outlives its lock
var lockRenewal = '00:${padLeft(string(workerTimeoutMinutes + 5), 2, '0')}:00'
var leaseSeconds = workerTimeoutSeconds - 60
var reconcileAfterSeconds = workerTimeoutSeconds + 600

// ---- what each app's identity is granted, by grant (tests/test_azure_deploy.py records every call each app
// makes and checks both directions against this table)
var appNames = ['api', 'worker']
var grants = {
  sender: ['api', 'worker'] // the api's output binding; the worker's deferrals, fan-out, callbacks, re-sends
  receiver: ['worker'] // the queue trigger and its dead-letter queue
  tables: ['api', 'worker'] // jobs and state
  blobs: ['api', 'worker'] // Contributor on the data container: inputs, snapshots, streams, the audit log
  secret: ['worker'] // the model's API key, through the app setting's Key Vault reference
  vaultKey: safetyVault ? ['api', 'worker'] : [] // a redacting policy seals at submit, opens for views and callbacks
}
// each app runs its functions and disables the others (one package, two apps)
var disabledSettings = {
  api: [
    { name: 'AzureWebJobs.worker.Disabled', value: 'true' }
    { name: 'AzureWebJobs.dead_letter.Disabled', value: 'true' }
    { name: 'AzureWebJobs.reconcile.Disabled', value: 'true' }
  ]
  worker: [
    { name: 'AzureWebJobs.api.Disabled', value: 'true' }
  ]
}

var roles = {
  serviceBusSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  blobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: '${name}-sb-${suffix}'
  location: location
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

resource jobsQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: serviceBus
  name: queueName
  properties: {
    maxDeliveryCount: maxDeliveryCount
    lockDuration: 'PT5M' // Service Bus's longest lock; the trigger renews it up to lockRenewal
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P4D'
    requiresDuplicateDetection: false
  }
}

// The app data: jobs and state tables, blobs (documents, snapshots, streams, audit, claim-checks)
resource storage 'Microsoft.Storage/storageAccounts@2023-01-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption apps without VNet integration reach storage over its public endpoint; access is by managed identity only (shared keys off)
  // checkov:skip=CKV_AZURE_43: the name is built from a lowercase prefix and uniqueString(), within the 3-24 character rule
  name: '${name}data${suffix}'
  location: location
  sku: {
    name: 'Standard_GZRS' // jobs, state and documents survive a zone and a region
  }
  kind: 'StorageV2'
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

// The Functions host's own storage (leases, timer locks, the deployment package): its identity owns this
// account, and nothing of the app's data lives in it
resource hostStorage 'Microsoft.Storage/storageAccounts@2023-01-01' = {
  // checkov:skip=CKV_AZURE_35: the Functions host reaches its storage over the public endpoint without VNet integration; managed identity only
  // checkov:skip=CKV_AZURE_43: the name is built from a lowercase prefix and uniqueString(), within the 3-24 character rule
  // checkov:skip=CKV_AZURE_206: host leases and the deployment package only, rebuilt by a redeploy; the app data account is zone-redundant
  name: '${name}host${suffix}'
  location: location
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-01-01' = {
  parent: storage
  name: 'default'
}

resource dataContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-01-01' = {
  parent: blobService
  name: 'alto'
  properties: {
    publicAccess: 'None'
  }
}

resource hostBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-01-01' = {
  parent: hostStorage
  name: 'default'
}

resource deploymentContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-01-01' = [for app in appNames: {
  parent: hostBlobService
  name: 'deploy-${app}'
  properties: {
    publicAccess: 'None'
  }
}]

// Every prefix expires, as on the other clouds (job records and state expire by their own TTL fields)
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [for rule in [
        { prefix: 'alto/claim-check/', days: 15 }
        { prefix: 'alto/workflow-inputs/', days: 31 }
        { prefix: 'alto/streams/', days: 31 }
        { prefix: 'alto/audit/retention=90d/', days: 90 }
      ]: {
        name: 'expire-${replace(replace(replace(rule.prefix, 'alto/', ''), '/', ''), '=', '-')}'
        enabled: true
        type: 'Lifecycle'
        definition: {
          filters: {
            blobTypes: ['blockBlob']
            prefixMatch: [rule.prefix]
          }
          actions: {
            baseBlob: {
              delete: {
                daysAfterModificationGreaterThan: rule.days
              }
            }
          }
        }
      }]
    }
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-01-01' = {
  parent: storage
  name: 'default'
}

resource jobsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-01-01' = {
  parent: tableService
  name: 'altojobs'
}

resource stateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-01-01' = {
  parent: tableService
  name: 'altostate'
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Flex Consumption apps without VNet integration resolve Key Vault references over the public endpoint; access is RBAC-only
  // checkov:skip=CKV_AZURE_189: as above: public network access stays on for the platform's Key Vault reference resolution
  name: '${name}-kv-${suffix}'
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: secretName
}

resource vaultKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: vaultKeyName
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: '${name}-logs-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

// workspace-based (classic Application Insights was retired in 2024)
resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${name}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
  }
}

resource identities 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = [for app in appNames: {
  name: '${name}-${app}-id-${suffix}'
  location: location
}]

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption scales instances on demand across the region; zone redundancy is a regional opt-in with always-ready instances
  name: '${name}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

// ---- role assignments, each on the one resource its call touches; the apps wait for them (dependsOn), so a
// first start never meets a 403
resource senders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for app in grants.sender: {
  name: guid(jobsQueue.id, identities[indexOf(appNames, app)].id, roles.serviceBusSender)
  scope: jobsQueue
  properties: {
    principalId: identities[indexOf(appNames, app)].properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusSender)
  }
}]

resource receivers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for app in grants.receiver: {
  name: guid(jobsQueue.id, identities[indexOf(appNames, app)].id, roles.serviceBusReceiver)
  scope: jobsQueue
  properties: {
    principalId: identities[indexOf(appNames, app)].properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusReceiver)
  }
}]

resource jobsTableAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for app in grants.tables: {
  name: guid(jobsTable.id, identities[indexOf(appNames, app)].id, roles.tableDataContributor)
  scope: jobsTable
  properties: {
    principalId: identities[indexOf(appNames, app)].properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}]

resource stateTableAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for app in grants.tables: {
  name: guid(stateTable.id, identities[indexOf(appNames, app)].id, roles.tableDataContributor)
  scope: stateTable
  properties: {
    principalId: identities[indexOf(appNames, app)].properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}]

resource blobAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for app in grants.blobs: {
  name: guid(dataContainer.id, identities[indexOf(appNames, app)].id, roles.blobDataContributor)
  scope: dataContainer
  properties: {
    principalId: identities[indexOf(appNames, app)].properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
  }
}]

// the Functions host's own account (AzureWebJobsStorage): Owner, as the host requires, on that account only
resource hostAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for app in appNames: {
  name: guid(hostStorage.id, identities[indexOf(appNames, app)].id, roles.blobDataOwner)
  scope: hostStorage
  properties: {
    principalId: identities[indexOf(appNames, app)].properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataOwner)
  }
}]

resource secretReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for app in grants.secret: {
  name: guid(vault.id, secretName, identities[indexOf(appNames, app)].id, roles.keyVaultSecretsUser)
  scope: secret
  properties: {
    principalId: identities[indexOf(appNames, app)].properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}]

resource vaultKeyReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for app in grants.vaultKey: {
  name: guid(vault.id, vaultKeyName, identities[indexOf(appNames, app)].id, roles.keyVaultSecretsUser)
  scope: vaultKey
  properties: {
    principalId: identities[indexOf(appNames, app)].properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}]

// who deploys may write the secret (Key Vault uses RBAC: without this nobody can store the key)
resource deployerSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: deployerPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

var commonSettings = [
  { name: 'AzureWebJobsStorage__accountName', value: hostStorage.name }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: '${serviceBus.name}.servicebus.windows.net' }
  { name: 'ServiceBusConnection__credential', value: 'managedidentity' }
  { name: 'ALTO_QUEUE_NAME', value: queueName }
  { name: 'ALTO_STORAGE_ACCOUNT', value: storage.name }
  { name: 'ALTO_JOBS_TABLE', value: jobsTable.name }
  { name: 'ALTO_STATE_TABLE', value: stateTable.name }
  { name: 'ALTO_CONTAINER', value: dataContainer.name }
  { name: 'ALTO_CONFIG', value: 'altostratus.yaml' }
  { name: 'ALTO_API_KEY_HASHES', value: apiKeyHashes }
  { name: 'ALTO_FUNCTION_TIMEOUT_S', value: string(workerTimeoutSeconds) }
  { name: 'ALTO_QUEUE__MAX_RECEIVES', value: string(maxDeliveryCount) }
  { name: 'ALTO_GOVERNANCE__LEASE_S', value: string(leaseSeconds) }
  { name: 'ALTO_GOVERNANCE__RECONCILE_AFTER_S', value: string(reconcileAfterSeconds) }
  { name: 'ALTO_STREAM__MAX_WAIT_S', value: string(apiWaitSeconds) }
  // host.json's timings, from the same parameters (app settings override host.json)
  { name: 'AzureFunctionsJobHost__functionTimeout', value: functionTimeout }
  { name: 'AzureFunctionsJobHost__extensions__serviceBus__maxAutoLockRenewalDuration', value: lockRenewal }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
]

resource functionApps 'Microsoft.Web/sites@2023-12-01' = [for (app, i) in appNames: {
  // checkov:skip=CKV_AZURE_222: the api is a public HTTP API behind its own keys; the worker app has no HTTP function, and publishing to Flex Consumption goes through the public endpoint
  // checkov:skip=CKV_AZURE_17: callers authenticate with the app's own API keys, not client certificates
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero on demand; always-ready instances are a cost choice
  // checkov:skip=CKV_AZURE_18: http20Enabled is true below (CKV_AZURE_67 passes on it); this check also wants an ARM apiVersion key the Bicep conversion does not carry
  name: '${name}-${app}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identities[i].id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identities[i].id
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}deploy-${app}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identities[i].id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      ftpsState: 'Disabled'
      healthCheckPath: app == 'api' ? '/healthz' : null
      appSettings: concat(commonSettings, [
        { name: 'AzureWebJobsStorage__clientId', value: identities[i].properties.clientId }
        { name: 'ServiceBusConnection__clientId', value: identities[i].properties.clientId }
        { name: 'AZURE_CLIENT_ID', value: identities[i].properties.clientId }
        // only the app that reads the model's key holds the reference (resolved by the platform with its identity)
        { name: 'ANTHROPIC_API_KEY', value: contains(grants.secret, app) ? '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${secretName})' : '' }
        { name: 'ALTO_VAULT_KEY', value: contains(grants.vaultKey, app) ? '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${vaultKeyName})' : '' }
      ], disabledSettings[app])
    }
  }
  dependsOn: [
    senders
    receivers
    jobsTableAccess
    stateTableAccess
    blobAccess
    hostAccess
    secretReaders
    vaultKeyReaders
    deploymentContainers
  ]
}]

output apiAppName string = functionApps[0].name
output workerAppName string = functionApps[1].name
output keyVaultName string = vault.name
output secretName string = secretName
output vaultKeyName string = safetyVault ? vaultKeyName : ''

// ---- alerts that fire with the shipped configuration: dead letters and a backlog (Service Bus's own metrics),
// and the provider's error rate from the `provider.reply` / `provider.error` lines the workers log
var alertActions = empty(actionGroupId) ? [] : [actionGroupId]

resource deadLetterAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${name}-dead-letters'
  location: 'global'
  properties: {
    description: 'A job message was dead-lettered: alto dlq list says why, alto dlq replay retries it.'
    severity: 2
    enabled: true
    scopes: [serviceBus.id]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'deadLettered'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [jobsQueue.name]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: [for id in alertActions: { actionGroupId: id }]
  }
}

resource backlogAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${name}-backlog'
  location: 'global'
  properties: {
    description: 'More than 1000 job messages have waited for 10 minutes: workers are not keeping up (check their logs and the provider rate limit).'
    severity: 2
    enabled: true
    scopes: [serviceBus.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'backlog'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'ActiveMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [jobsQueue.name]
            }
          ]
          operator: 'GreaterThan'
          threshold: 1000
          timeAggregation: 'Minimum'
        }
      ]
    }
    actions: [for id in alertActions: { actionGroupId: id }]
  }
}

resource errorRateAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${name}-provider-error-rate'
  location: location
  properties: {
    displayName: 'Provider error rate over 20%'
    severity: 2
    enabled: true
    scopes: [insights.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: 'traces | where message has \'"event": "provider.\' | extend event = tostring(parse_json(message).event) | summarize failed = countif(event == "provider.error"), total = countif(event in ("provider.error", "provider.reply")) | where total > 0 and todouble(failed) / total > 0.2'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: alertActions
    }
  }
}
