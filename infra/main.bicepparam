// Parameters for main.bicep: copy this file, edit it, and pass it to infra/deploy.sh (or to
// az deployment sub create --parameters). See README, "Deploying to Azure".
using 'main.bicep'

// Three to eleven lower-case letters and digits; every resource name starts with it.
param namePrefix = 'keysync'

// The subscriptions keysync watches. Replace with your own subscription ids.
param subscriptionIds = [
  '00000000-0000-0000-0000-000000000000'
]

// Scheduled rotation: every day at 03:00 UTC, rotate a key in use once it is 90 days old, never
// twice within a day. Accounts rotate when tagged keysync-rotate: true or listed here by id.
param rotationSchedule = '0 0 3 * * *'
param rotateAfterDays = 90
param rotateMinIntervalHours = 24
param rotateAccounts = []

// Checking datastore credentials against storage after each run, and re-minting the SAS tokens
// storage rejects (off by default; it needs verify). Every other setting keysync reads has a
// parameter too, with the default keysync itself uses: see README, "Configuration reference".
// Set them here rather than by hand on the Function App, where the next deployment resets them.
param verify = true
param remintSas = false
param sasLifetimeDays = 30

// infra/deploy.sh sets KEYSYNC_WIRE_EVENTS=false for its first pass, before the KeyRegenerated
// function exists; keep this line in a copy of this file.
param wireEvents = bool(readEnvironmentVariable('KEYSYNC_WIRE_EVENTS', 'true'))
