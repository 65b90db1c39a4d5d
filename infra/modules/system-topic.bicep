// The Event Grid system topic of the subscription this resource group is in. Azure allows one
// system topic per source: a subscription that already has one needs its event subscription added
// to that topic instead (README, "Deploying to Azure").

param name string
param tags object

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  // Subscription events are global.
  location: 'global'
  tags: tags
  // Dead-lettering is delivered with this identity, so the dead-letter storage needs no key.
  // Global system topics take a system-assigned identity.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

output name string = topic.name
output principalId string = topic.identity.principalId
