// The Function App and what it runs on: Flex Consumption plan, custom handler runtime, host storage
// reached with keysync's user-assigned identity (shared keys off, so the host never depends on an
// account key that keysync or anyone else rotates), Application Insights with Entra ID auth.

param location string
param namePrefix string
param tags object
param subscriptionIds array
param rotationSchedule string
param rotateAfterDays int
param rotateMinIntervalHours int
param rotateAccounts array
param logLevel string
param armEndpoint string
param armScope string
param maxConcurrency int
param requestTimeoutSeconds int
param eventDeadlineSeconds int
param timerDeadlineSeconds int
param httpDeadlineSeconds int
param verify bool
param verifyTimeoutSeconds int
param verifyConcurrency int
param remintSas bool
param sasLifetimeDays int
param customRuntimeVersion string
param maximumInstanceCount int
param instanceMemoryMB int

var token = uniqueString(resourceGroup().id, namePrefix)
var packageContainerName = 'app-package'
var deadLetterContainerName = 'event-deadletter'

// Built-in roles, by their fixed ids.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// One identity for the host's storage and for keysync's ARM calls: any code in the app can ask
// the platform for a token of every identity attached to it, so a second identity would add no
// boundary, only another principal to manage.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${namePrefix}'
  location: location
  tags: tags
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without a virtual network reaches its storage over the public endpoint; access needs an Entra ID token (shared keys are off), see README "Operations" for the VNet option
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: the host and Event Grid dead-lettering reach this account over its public endpoint, with Entra ID only
  // checkov:skip=CKV_AZURE_206: holds only what a redeployment recreates (host keys, timer leases, the package) and dead-lettered events, which are hints the next sweep makes redundant
  // checkov:skip=CKV_AZURE_43: the name is computed ('st' + namePrefix + uniqueString, cut to 24), lower-case letters and digits whenever namePrefix is
  name: take('st${namePrefix}${token}', 24)
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: packageContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${namePrefix}-${token}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${namePrefix}-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

// The host keeps its keys, timer leases and the deployed package in blobs; it uses no queues or
// tables here (no queue, blob or durable triggers).
resource hostStorageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, monitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: a zone outage only delays repairs: Event Grid retries for eventTimeToLiveMinutes and the next timer sweep reconciles every account; zone redundancy needs ZRS storage and a supporting region
  name: 'plan-${namePrefix}-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers to the KeyRegenerated function over the app's public endpoint (authenticated with the host's system key); closing it would stop the events
  // checkov:skip=CKV_AZURE_17: callers (Event Grid, an operator with a function key) cannot present client certificates; every function needs a key
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; a cold start only delays a repair by seconds, and always-ready instances would bill around the clock
  // checkov:skip=CKV_AZURE_213: App Service health checks do not apply to Flex Consumption; the host restarts a handler that exits, and Event Grid redelivers what failed
  name: 'func-${namePrefix}-${token}'
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        // The host's own storage, through the identity (no connection string, no key).
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identity.properties.clientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: insights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
        }
        // keysync's own settings, every one from a parameter of main.bicep: this list replaces
        // the app's settings on each deployment. See the README, "Configuration reference".
        {
          name: 'AZURE_CLIENT_ID'
          value: identity.properties.clientId
        }
        {
          name: 'KEYSYNC_SUBSCRIPTIONS'
          value: join(subscriptionIds, ',')
        }
        {
          name: 'KEYSYNC_ROTATION_SCHEDULE'
          value: rotationSchedule
        }
        {
          name: 'KEYSYNC_ROTATE_AFTER_DAYS'
          value: string(rotateAfterDays)
        }
        {
          name: 'KEYSYNC_ROTATE_MIN_INTERVAL_HOURS'
          value: string(rotateMinIntervalHours)
        }
        {
          name: 'KEYSYNC_ROTATE_ACCOUNTS'
          value: join(rotateAccounts, ',')
        }
        {
          name: 'KEYSYNC_ARM_ENDPOINT'
          value: armEndpoint
        }
        {
          name: 'KEYSYNC_ARM_SCOPE'
          value: armScope
        }
        {
          name: 'KEYSYNC_MAX_CONCURRENCY'
          value: string(maxConcurrency)
        }
        {
          name: 'KEYSYNC_REQUEST_TIMEOUT_SECS'
          value: string(requestTimeoutSeconds)
        }
        {
          name: 'KEYSYNC_EVENT_DEADLINE_SECS'
          value: string(eventDeadlineSeconds)
        }
        {
          name: 'KEYSYNC_TIMER_DEADLINE_SECS'
          value: string(timerDeadlineSeconds)
        }
        {
          name: 'KEYSYNC_HTTP_DEADLINE_SECS'
          value: string(httpDeadlineSeconds)
        }
        {
          name: 'KEYSYNC_VERIFY'
          value: verify ? 'true' : 'false'
        }
        {
          name: 'KEYSYNC_VERIFY_TIMEOUT_SECS'
          value: string(verifyTimeoutSeconds)
        }
        {
          name: 'KEYSYNC_VERIFY_CONCURRENCY'
          value: string(verifyConcurrency)
        }
        {
          name: 'KEYSYNC_REMINT_SAS'
          value: remintSas ? 'true' : 'false'
        }
        {
          name: 'KEYSYNC_SAS_LIFETIME_DAYS'
          value: string(sasLifetimeDays)
        }
        {
          name: 'RUST_LOG'
          value: logLevel
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${packageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: customRuntimeVersion
      }
    }
  }
  dependsOn: [
    hostStorageAccess
    telemetryAccess
    packageContainer
  ]
}

output functionAppName string = site.name
output keyRegeneratedFunctionId string = '${site.id}/functions/KeyRegenerated'
output applicationInsightsName string = insights.name
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output storageAccountName string = storage.name
output storageAccountId string = storage.id
output deadLetterContainerName string = deadLetterContainer.name
