// The event subscription that sends storage key regenerations in this subscription to the
// KeyRegenerated function. Events are hints (keysync reads Azure's state itself and the timer's
// sweep repairs anything missed), so undeliverable ones are dead-lettered rather than retried
// forever.

param topicName string
@description('The resource id of the KeyRegenerated function: <function app id>/functions/KeyRegenerated.')
param functionResourceId string
param deadLetterStorageAccountId string
param deadLetterContainerName string
param maxDeliveryAttempts int
param eventTimeToLiveMinutes int

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: topicName
}

resource keyRegenerated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'keysync-key-regenerated'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: functionResourceId
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceActionSuccess'
      ]
      // The same event type fires for listKeys (keysync's own calls included); keysync filters
      // again in code, case-insensitively, as string filters here are.
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: [
            'Microsoft.Storage/storageAccounts/regenerateKey/action'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output name string = keyRegenerated.name
