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
