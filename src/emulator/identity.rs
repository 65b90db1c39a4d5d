//! Identity: the App Service-style managed identity endpoint (`GET /msi/token`), the simulated
//! portal user's tokens, and the bearer-token check in front of every ARM request. Tokens are
//! shaped like Entra ID's access tokens (JWTs), so that one in a log looks like one, but the
//! emulator never reads them: it remembers each with its audience, caller and expiry.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::query::Query;
use super::random;
use super::reply::Reply;
use super::scenario::{IdentitySpec, UserSpec};

/// The api-version App Service's identity endpoint serves.
pub(crate) const MSI_API_VERSION: &str = "2019-08-01";

/// Audiences ARM accepts, compared without a trailing slash and ignoring case.
const ARM_AUDIENCES: [&str; 2] = [
    "https://management.azure.com",
    "https://management.core.windows.net",
];

/// Who called: recorded with each token and reported in event claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    ManagedIdentity {
        client_id: String,
        principal_id: String,
    },
    User(UserSpec),
}

/// Why an ARM request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthError {
    Missing,
    Malformed,
    Unknown,
    Expired { expired_at: u64 },
    WrongAudience(String),
}

#[derive(Debug, Clone)]
struct Issued {
    /// Unix seconds, the precision of `expires_on`.
    expires_on: u64,
    resource: String,
    principal: Principal,
}

/// The tokens handed out so far.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    tokens: HashMap<String, Issued>,
    /// Tokens issued by `/msi/token`, i.e. to a client using managed identity.
    managed_identity_issued: u64,
    /// Every token ever issued, expired ones too, so that a test can search its output for any
    /// of them.
    issued: Vec<String>,
}

impl TokenStore {
    /// Issues a token for `resource`; returns it with its expiry in Unix seconds.
    pub(crate) fn issue(
        &mut self,
        resource: &str,
        principal: Principal,
        lifetime: Duration,
    ) -> (String, u64) {
        let now = unix_now();
        self.tokens.retain(|_, issued| issued.expires_on > now);
        let expires_on = now + lifetime.as_secs();
        let token = mint(resource, &principal, now, expires_on);
        if matches!(principal, Principal::ManagedIdentity { .. }) {
            self.managed_identity_issued += 1;
        }
        let issued = Issued {
            expires_on,
            resource: resource.to_string(),
            principal,
        };
        self.tokens.insert(token.clone(), issued);
        self.issued.push(token.clone());
        (token, expires_on)
    }

    /// Every token issued since start, in order.
    pub(crate) fn all_issued(&self) -> &[String] {
        &self.issued
    }

    /// How many managed-identity tokens were issued since start.
    pub(crate) fn managed_identity_issued(&self) -> u64 {
        self.managed_identity_issued
    }

    /// Checks an `Authorization` header and returns the caller.
    pub(crate) fn check(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Malformed);
        }
        let issued = self.tokens.get(token.trim()).ok_or(AuthError::Unknown)?;
        if unix_now() >= issued.expires_on {
            return Err(AuthError::Expired {
                expired_at: issued.expires_on,
            });
        }
        if !is_arm_audience(&issued.resource) {
            return Err(AuthError::WrongAudience(issued.resource.clone()));
        }
        Ok(issued.principal.clone())
    }
}

fn is_arm_audience(resource: &str) -> bool {
    let resource = resource.trim_end_matches('/');
    ARM_AUDIENCES
        .iter()
        .any(|aud| aud.eq_ignore_ascii_case(resource))
}

/// A token in the shape of an Entra ID access token: a JWT (`header.claims.signature`, each
/// base64url), starting `eyJ0eXAiOiJKV1Qi` as theirs do, with the audience, times and caller's
/// object id as claims and a random signature that nothing checks.
fn mint(resource: &str, principal: &Principal, issued_at: u64, expires_on: u64) -> String {
    let object_id = match principal {
        Principal::ManagedIdentity { principal_id, .. } => principal_id,
        Principal::User(user) => &user.object_id,
    };
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "keysync-emulator"});
    let claims = json!({
        "aud": resource, "iat": issued_at, "nbf": issued_at, "exp": expires_on, "oid": object_id
    });
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.{}", part(&header), part(&claims), random::token())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// ARM's 401 for a request that failed authentication.
pub(crate) fn auth_failure(error: &AuthError, tenant: &str) -> Reply {
    let (code, message) = match error {
        AuthError::Missing => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".to_string(),
        ),
        AuthError::Malformed => (
            "InvalidAuthenticationToken",
            "The access token is invalid: the 'Authorization' header must be 'Bearer <token>'."
                .to_string(),
        ),
        AuthError::Unknown => (
            "InvalidAuthenticationToken",
            "The access token is invalid.".to_string(),
        ),
        AuthError::Expired { expired_at } => (
            "ExpiredAuthenticationToken",
            format!(
                "The access token expiry UTC time '{expired_at}' (Unix seconds) is earlier than \
                 current UTC time '{}'.",
                unix_now()
            ),
        ),
        AuthError::WrongAudience(resource) => (
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{resource}'. \
                 It should exactly match with one of the allowed audiences \
                 'https://management.core.windows.net/','https://management.azure.com/'."
            ),
        ),
    };
    let challenge = format!(
        "Bearer authorization_uri=\"https://login.microsoftonline.com/{tenant}\", \
         error=\"invalid_token\", error_description=\"{message}\""
    );
    Reply::error(StatusCode::UNAUTHORIZED, code, message).header(WWW_AUTHENTICATE, challenge)
}

/// The identities the token endpoint can speak for.
#[derive(Debug, Clone)]
pub(crate) struct Identities {
    pub system: IdentitySpec,
    pub user_assigned: Vec<IdentitySpec>,
    pub lifetime: Duration,
}

impl Identities {
    /// Picks the identity a token request names; `None` when it names one that is not
    /// assigned. Without a list of identities, any `client_id` is taken as given.
    fn select(&self, query: &Query) -> Option<IdentitySpec> {
        let by_client = query.get("client_id");
        let by_object = query.get("object_id").or_else(|| query.get("principal_id"));
        let all = || std::iter::once(&self.system).chain(&self.user_assigned);
        match (by_client, by_object) {
            (None, None) => Some(self.system.clone()),
            (Some(client), _) => all()
                .find(|i| i.client_id.eq_ignore_ascii_case(client))
                .cloned()
                .or_else(|| self.unlisted(client)),
            (None, Some(object)) => all()
                .find(|i| i.principal_id.eq_ignore_ascii_case(object))
                .cloned(),
        }
    }

    fn unlisted(&self, client_id: &str) -> Option<IdentitySpec> {
        self.user_assigned.is_empty().then(|| IdentitySpec {
            client_id: client_id.to_string(),
            principal_id: client_id.to_string(),
        })
    }
}

/// Answers `GET /msi/token` the way App Service does.
pub(crate) fn token_request(
    tokens: &mut TokenStore,
    identities: &Identities,
    query: &Query,
    secret_header: Option<&str>,
    expected_secret: &str,
) -> Reply {
    if secret_header != Some(expected_secret) {
        return msi_error(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
        );
    }
    if query.get("api-version") != Some(MSI_API_VERSION) {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "The api-version parameter must be 2019-08-01.",
        );
    }
    let Some(resource) = query.get("resource").filter(|r| !r.trim().is_empty()) else {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "The resource parameter is required.",
        );
    };
    let Some(identity) = identities.select(query) else {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "No managed identity found for the specified client_id or object_id.",
        );
    };
    let principal = Principal::ManagedIdentity {
        client_id: identity.client_id.clone(),
        principal_id: identity.principal_id.clone(),
    };
    let (token, expires_on) = tokens.issue(resource, principal, identities.lifetime);
    Reply::ok(json!({
        "access_token": token,
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    }))
}

/// A token for the simulated portal user, for ARM.
pub(crate) fn user_token(tokens: &mut TokenStore, user: &UserSpec, lifetime: Duration) -> Value {
    let resource = "https://management.core.windows.net/";
    let (token, expires_on) = tokens.issue(resource, Principal::User(user.clone()), lifetime);
    json!({
        "access_token": token,
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    })
}

fn msi_error(status: StatusCode, message: &str) -> Reply {
    Reply::json(
        status,
        json!({ "statusCode": status.as_u16(), "message": message }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "header-secret";

    fn identities(user_assigned: Vec<IdentitySpec>) -> Identities {
        Identities {
            system: IdentitySpec::default(),
            user_assigned,
            lifetime: Duration::from_secs(3600),
        }
    }

    fn query(raw: &str) -> Query {
        Query::parse(Some(raw))
    }

    fn issued_token(reply: &Reply) -> String {
        reply.json_body().unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_token_for_arm_authenticates_arm_requests() {
        let mut tokens = TokenStore::default();
        let q = query("api-version=2019-08-01&resource=https://management.azure.com");
        let reply = token_request(&mut tokens, &identities(vec![]), &q, Some(SECRET), SECRET);
        assert_eq!(reply.status(), StatusCode::OK);
        let body = reply.json_body().unwrap();
        assert!(body["expires_on"].as_str().unwrap().parse::<u64>().is_ok());
        let bearer = format!("Bearer {}", issued_token(&reply));
        let principal = tokens.check(Some(&bearer)).unwrap();
        assert!(matches!(principal, Principal::ManagedIdentity { .. }));
    }

    #[test]
    fn tokens_look_like_entra_access_tokens_and_differ() {
        let mut tokens = TokenStore::default();
        let user = Principal::User(UserSpec::default());
        let hour = Duration::from_secs(3600);
        let (token, expires_on) = tokens.issue("https://management.azure.com/", user.clone(), hour);

        assert!(token.starts_with("eyJ0eXAiOiJKV1Qi"), "{token}");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://management.azure.com/");
        assert_eq!(claims["exp"], expires_on);
        assert_eq!(claims["oid"], UserSpec::default().object_id);
        let (again, _) = tokens.issue("https://management.azure.com/", user, hour);
        assert_ne!(token, again);
    }

    #[test]
    fn the_identity_header_is_required() {
        let mut tokens = TokenStore::default();
        let q = query("api-version=2019-08-01&resource=https://management.azure.com");
        let ids = identities(vec![]);
        for header in [None, Some("wrong")] {
            let reply = token_request(&mut tokens, &ids, &q, header, SECRET);
            assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(tokens.managed_identity_issued(), 0);
    }

    #[test]
    fn an_unassigned_client_id_is_refused_when_identities_are_listed() {
        let mut tokens = TokenStore::default();
        let listed = IdentitySpec {
            client_id: "c1".into(),
            principal_id: "p1".into(),
        };
        let ids = identities(vec![listed]);
        let base = "api-version=2019-08-01&resource=https://management.azure.com";
        let known = token_request(
            &mut tokens,
            &ids,
            &query(&format!("{base}&client_id=C1")),
            Some(SECRET),
            SECRET,
        );
        assert_eq!(known.status(), StatusCode::OK);
        let unknown = token_request(
            &mut tokens,
            &ids,
            &query(&format!("{base}&client_id=c2")),
            Some(SECRET),
            SECRET,
        );
        assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn tokens_are_refused_when_missing_unknown_expired_or_for_another_audience() {
        let mut tokens = TokenStore::default();
        assert_eq!(tokens.check(None), Err(AuthError::Missing));
        assert_eq!(tokens.check(Some("Basic abc")), Err(AuthError::Malformed));
        assert_eq!(tokens.check(Some("Bearer nope")), Err(AuthError::Unknown));

        let principal = Principal::User(UserSpec::default());
        let (expired, _) = tokens.issue(
            "https://management.azure.com/",
            principal.clone(),
            Duration::ZERO,
        );
        let expired = tokens.check(Some(&format!("Bearer {expired}")));
        assert!(matches!(expired, Err(AuthError::Expired { .. })));

        let hour = Duration::from_secs(3600);
        let (storage, _) = tokens.issue("https://storage.azure.com/", principal, hour);
        let wrong = tokens.check(Some(&format!("Bearer {storage}")));
        assert!(matches!(wrong, Err(AuthError::WrongAudience(_))));
    }

    #[test]
    fn a_refusal_carries_a_bearer_challenge_and_no_token() {
        let reply = auth_failure(&AuthError::Missing, "tenant");
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
        assert!(
            reply
                .header_value("www-authenticate")
                .unwrap()
                .starts_with("Bearer ")
        );
        assert_eq!(
            reply.json_body().unwrap()["error"]["code"],
            "AuthenticationFailed"
        );
    }
}
