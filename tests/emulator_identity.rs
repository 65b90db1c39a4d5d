//! The real `azure_identity::ManagedIdentityCredential` (App Service source) gets its tokens from
//! the emulator's identity endpoint, and ARM on the emulator accepts them.
//!
//! The credential reads `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` from the process environment,
//! so this file holds exactly one test: its binary has no other test thread that could read the
//! environment while it is written.

use azure_core::credentials::TokenCredential;
use azure_identity::ManagedIdentityCredential;
use keysync::emulator::{EmulatorOptions, RunningEmulator, Scenario};

#[tokio::test]
async fn the_managed_identity_credential_gets_tokens_that_arm_accepts() {
    let emulator = RunningEmulator::start(Scenario::demo(), EmulatorOptions::default())
        .await
        .unwrap();
    for (name, value) in emulator.env() {
        if name.starts_with("IDENTITY_") {
            // SAFETY: `set_var` is unsound only while another thread reads or writes the
            // environment. This binary runs this single test; the test runtime is
            // current-thread and nothing has resolved a host name or started a blocking thread
            // yet, so the only other thread is the harness's main thread, which is waiting for
            // this test and does not touch the environment.
            unsafe { std::env::set_var(&name, &value) };
        }
    }

    let credential = ManagedIdentityCredential::new(None).unwrap();
    let scope = ["https://management.azure.com/.default"];
    let token = credential.get_token(&scope, None).await.unwrap();
    let again = credential.get_token(&scope, None).await.unwrap();
    assert_eq!(
        token.token.secret(),
        again.token.secret(),
        "the credential caches its token"
    );
    assert_eq!(emulator.state()["managedIdentityTokensIssued"], 1);
    assert!(token.expires_on > time::OffsetDateTime::now_utc() + time::Duration::minutes(50));

    let url = format!(
        "{}subscriptions/11111111-2222-3333-4444-555555555555/providers/Microsoft.Storage/storageAccounts?api-version=2025-08-01",
        emulator.base_url()
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = http
        .get(url)
        .bearer_auth(token.token.secret())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let requests = emulator.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].operation, "StorageAccounts_List");
    assert_eq!(requests[0].status, 200);
}
