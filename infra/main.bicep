// keysync on Azure, deployed at subscription scope:
//
//   - in this subscription, resource group rg-<prefix>: the Function App (Flex Consumption, custom
//     handler), its storage (reached with a managed identity only, shared keys off), Application
//     Insights, and keysync's user-assigned managed identity;
//   - a custom role with exactly the actions keysync calls (keysync-role.json), assigned to that
//     identity at each subscription in scope;
//   - in each subscription in scope, resource group rg-<prefix>-events: an Event Grid system topic
//     on the subscription and, when wireEvents is true, an event subscription that sends storage
//     key regenerations to the KeyRegenerated function, dead-lettering to a blob container.
//
// The event subscription needs the KeyRegenerated function to exist, so a first deployment runs
// with wireEvents=false, then the package is deployed, then this runs again with wireEvents=true.
// infra/deploy.sh does the three steps; see the README, "Deploying to Azure".

targetScope = 'subscription'

@description('Region of keysync\'s resources. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations). Defaults to the deployment\'s --location.')
param location string = deployment().location

@description('Prefix of every resource name: 3 to 11 lower-case letters and digits.')
@minLength(3)
@maxLength(11)
param namePrefix string = 'keysync'

@description('Subscriptions keysync watches and repairs (KEYSYNC_SUBSCRIPTIONS). Each gets the role assignment and an Event Grid system topic. The deployer needs Owner or User Access Administrator plus Contributor on each.')
@minLength(1)
param subscriptionIds array = [
  subscription().subscriptionId
]

@description('NCRONTAB schedule of the RotateKeys timer, 6 fields, UTC (KEYSYNC_ROTATION_SCHEDULE).')
@minLength(11)
param rotationSchedule string = '0 0 3 * * *'

@description('Age in days of the key in use at which keysync rotates it (KEYSYNC_ROTATE_AFTER_DAYS).')
@minValue(1)
@maxValue(3650)
param rotateAfterDays int = 90

@description('No account is rotated twice within this many hours (KEYSYNC_ROTATE_MIN_INTERVAL_HOURS); less than rotateAfterDays.')
@minValue(1)
@maxValue(87600)
param rotateMinIntervalHours int = 24

@description('Storage account resource ids to rotate, besides accounts tagged keysync-rotate: true (KEYSYNC_ROTATE_ACCOUNTS).')
param rotateAccounts array = []

@description('Create the Event Grid subscriptions. False on the very first deployment, before the package (and so the KeyRegenerated function) exists.')
param wireEvents bool = true

@description('Event Grid delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes Event Grid keeps retrying an event before it is dead-lettered.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveMinutes int = 1440

@description('Log filter of the handler (RUST_LOG, tracing syntax).')
param logLevel string = 'info'

@description('Base URL of Azure Resource Manager (KEYSYNC_ARM_ENDPOINT); change it together with armScope for a sovereign cloud.')
param armEndpoint string = 'https://management.azure.com'

@description('Token scope keysync asks for to call Azure Resource Manager (KEYSYNC_ARM_SCOPE).')
param armScope string = 'https://management.azure.com/.default'

@description('ARM requests keysync has in flight per subscription (KEYSYNC_MAX_CONCURRENCY).')
@minValue(1)
@maxValue(256)
param maxConcurrency int = 24

@description('Seconds one ARM request, body included, or one attempt at a token may take (KEYSYNC_REQUEST_TIMEOUT_SECS).')
@minValue(1)
@maxValue(600)
param requestTimeoutSeconds int = 30

@description('Seconds after which a KeyRegenerated invocation starts no new work, so that it answers before Event Grid stops waiting, about 30 s (KEYSYNC_EVENT_DEADLINE_SECS).')
@minValue(1)
@maxValue(600)
param eventDeadlineSeconds int = 25

@description('The same for a RotateKeys tick (KEYSYNC_TIMER_DEADLINE_SECS); keep it under host.json\'s functionTimeout, 300 s.')
@minValue(1)
@maxValue(3600)
param timerDeadlineSeconds int = 270

@description('The same for a call of /api/reconcile (KEYSYNC_HTTP_DEADLINE_SECS); Azure gives up on an HTTP trigger after 230 s.')
@minValue(1)
@maxValue(220)
param httpDeadlineSeconds int = 200

@description('After a run, check every AccountKey and SAS datastore on the account against storage (KEYSYNC_VERIFY).')
param verify bool = true

@description('Seconds one storage check may take, from connecting to the end of the answer (KEYSYNC_VERIFY_TIMEOUT_SECS).')
@minValue(1)
@maxValue(60)
param verifyTimeoutSeconds int = 5

@description('Storage checks in flight at once in one run (KEYSYNC_VERIFY_CONCURRENCY).')
@minValue(1)
@maxValue(64)
param verifyConcurrency int = 8

@description('Replace a SAS token that storage rejects with one of the same scope (KEYSYNC_REMINT_SAS). Needs verify: keysync refuses to start with remintSas true and verify false.')
param remintSas bool = false

@description('Days a re-minted SAS token is valid (KEYSYNC_SAS_LIFETIME_DAYS).')
@minValue(1)
@maxValue(365)
param sasLifetimeDays int = 30

@description('Version of the Flex Consumption "custom" runtime (az functionapp list-flexconsumption-runtimes --location <region> --runtime custom).')
param customRuntimeVersion string = '1.0'

@description('Most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Tags for every resource group and resource.')
param tags object = {}

var role = loadJsonContent('keysync-role.json')
var eventsResourceGroupName = 'rg-${namePrefix}-events'
var watchedScopes = [for id in subscriptionIds: '/subscriptions/${id}']

resource appGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${namePrefix}'
  location: location
  tags: tags
}

module app 'modules/app.bicep' = {
  name: '${namePrefix}-app'
  scope: appGroup
  params: {
    location: location
    namePrefix: namePrefix
    tags: tags
    subscriptionIds: subscriptionIds
    rotationSchedule: rotationSchedule
    rotateAfterDays: rotateAfterDays
    rotateMinIntervalHours: rotateMinIntervalHours
    rotateAccounts: rotateAccounts
    logLevel: logLevel
    armEndpoint: armEndpoint
    armScope: armScope
    maxConcurrency: maxConcurrency
    requestTimeoutSeconds: requestTimeoutSeconds
    eventDeadlineSeconds: eventDeadlineSeconds
    timerDeadlineSeconds: timerDeadlineSeconds
    httpDeadlineSeconds: httpDeadlineSeconds
    verify: verify
    verifyTimeoutSeconds: verifyTimeoutSeconds
    verifyConcurrency: verifyConcurrency
    remintSas: remintSas
    sasLifetimeDays: sasLifetimeDays
    customRuntimeVersion: customRuntimeVersion
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

// Role definitions live in the tenant; this one may be assigned in every subscription in scope
// (and in this one, where it is created).
resource keysyncRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, namePrefix, 'keysync-role')
  properties: {
    roleName: '${role.roleName} (${namePrefix})'
    description: role.description
    type: 'CustomRole'
    permissions: [
      {
        actions: role.actions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: union(watchedScopes, [subscription().id])
  }
}

module watched 'modules/watched-subscription.bicep' = [for (id, i) in subscriptionIds: {
  name: '${namePrefix}-watch-${i}'
  scope: subscription(id)
  params: {
    location: location
    tags: tags
    eventsResourceGroupName: eventsResourceGroupName
    topicName: 'evgt-${namePrefix}-subscription'
    roleDefinitionGuid: keysyncRole.name
    principalId: app.outputs.identityPrincipalId
  }
  dependsOn: [
    keysyncRole
  ]
}]

module deadLetterAccess 'modules/dead-letter-access.bicep' = [for (id, i) in subscriptionIds: {
  name: '${namePrefix}-deadletter-${i}'
  scope: appGroup
  params: {
    storageAccountName: app.outputs.storageAccountName
    containerName: app.outputs.deadLetterContainerName
    principalId: watched[i].outputs.topicPrincipalId
  }
}]

module keyRegenerated 'modules/event-subscription.bicep' = [for (id, i) in subscriptionIds: if (wireEvents) {
  name: '${namePrefix}-events-${i}'
  scope: resourceGroup(id, eventsResourceGroupName)
  params: {
    topicName: watched[i].outputs.topicName
    functionResourceId: app.outputs.keyRegeneratedFunctionId
    deadLetterStorageAccountId: app.outputs.storageAccountId
    deadLetterContainerName: app.outputs.deadLetterContainerName
    maxDeliveryAttempts: maxDeliveryAttempts
    eventTimeToLiveMinutes: eventTimeToLiveMinutes
  }
  dependsOn: [
    deadLetterAccess[i]
  ]
}]

output resourceGroupName string = appGroup.name
output functionAppName string = app.outputs.functionAppName
output applicationInsightsName string = app.outputs.applicationInsightsName
output identityClientId string = app.outputs.identityClientId
output identityPrincipalId string = app.outputs.identityPrincipalId
output roleDefinitionName string = keysyncRole.properties.roleName
output eventsWired bool = wireEvents
