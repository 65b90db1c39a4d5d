// One subscription keysync watches: the custom role assigned to keysync's identity at the
// subscription, and the subscription's Event Grid system topic (in its own resource group).

targetScope = 'subscription'

param location string
param tags object
param eventsResourceGroupName string
param topicName string
@description('The name (a GUID) of the custom role definition.')
param roleDefinitionGuid string
@description('The object id of keysync\'s managed identity.')
param principalId string

resource keysyncAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roleDefinitionGuid)
  properties: {
    description: 'keysync: read storage accounts and keys, regenerate keys, update AML datastores in place, resync workspaces'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource eventsGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: eventsResourceGroupName
  location: location
  tags: tags
}

module topic 'system-topic.bicep' = {
  name: '${topicName}-topic'
  scope: eventsGroup
  params: {
    name: topicName
    tags: tags
  }
}

output topicName string = topic.outputs.name
output topicPrincipalId string = topic.outputs.principalId
