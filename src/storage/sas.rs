//! Shared access signature (SAS) tokens: reading the fields of one, and signing one with an
//! account key. A token is a secret (its `sig` above all): [`SasToken`]'s `Debug` and
//! [`SasToken::summary`] never show the signature, and a signed token is returned as a
//! [`SecretString`].
//!
//! keysync signs tokens of service version 2020-12-06 and later. The string to sign is, one
//! field a line (empty when the field is absent, values decoded):
//!
//! - **account SAS** (`ss` and `srt`): the account name, `sp`, `ss`, `srt`, `st`, `se`, `sip`,
//!   `spr`, `sv`, `ses`, each followed by a newline (the last one too);
//! - **blob service SAS** on a container (`sr=c`): `sp`, `st`, `se`, the canonicalized resource
//!   `/blob/<account>/<container>`, `si`, `sip`, `spr`, `sv`, `sr`, the snapshot time (empty),
//!   `ses`, `rscc`, `rscd`, `rsce`, `rscl`, `rsct`, joined by newlines;
//! - **file service SAS** on a share (`sr=s`): `sp`, `st`, `se`, the canonicalized resource
//!   `/file/<account>/<share>`, `si`, `sip`, `spr`, `sv`, `rscc`, `rscd`, `rsce`, `rscl`,
//!   `rsct`, joined by newlines.
//!
//! The signature `sig` is the base64 HMAC-SHA256 of that string under the account key. A user
//! delegation SAS (`skoid`, `sktid`, ...) is signed with a key from Entra ID, not an account key,
//! so keysync neither signs nor re-mints one.

use std::fmt;

use percent_encoding::percent_decode_str;
use secrecy::SecretString;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};
use zeroize::Zeroizing;

use super::STORAGE_VERSION;
use super::shared_key::AccountKey;
use crate::model::ml::Datastore;
use crate::report::printable;

/// The oldest signed version whose string to sign keysync knows.
pub const OLDEST_SIGNED_VERSION: &str = "2020-12-06";

/// The fields a user delegation SAS carries and other tokens do not.
const USER_DELEGATION_FIELDS: [&str; 6] = ["skoid", "sktid", "skt", "ske", "sks", "skv"];

/// The fields keysync carries over when it re-mints a token; a token with any other field
/// (a stored access policy `si`, response header overrides, ...) is left to a human.
const REMINTABLE_FIELDS: [&str; 11] = [
    "sv", "ss", "srt", "sr", "sp", "st", "se", "sip", "spr", "ses", "sig",
];

/// Which kind of SAS a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasKind {
    /// `ss` and `srt`: services and resource types of the whole account.
    Account,
    /// `sr`: one container, share, blob, file or directory.
    Service,
    /// Signed with a user delegation key from Entra ID.
    UserDelegation,
}

/// What a service SAS is signed for: the datastore's container or share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedResource<'a> {
    /// A blob container (or an ADLS Gen2 filesystem).
    Container(&'a str),
    /// An Azure Files share.
    Share(&'a str),
}

impl<'a> SignedResource<'a> {
    /// The container (`AzureBlob`, `AzureDataLakeGen2`) or share (`AzureFile`) a datastore
    /// names, or why it names none, in words.
    pub fn of(datastore: &'a Datastore) -> Result<Self, String> {
        let kind = datastore.datastore_type().unwrap_or("unknown");
        let (name, resource): (_, fn(&'a str) -> Self) = match kind {
            "AzureBlob" | "AzureDataLakeGen2" => (datastore.container(), Self::Container),
            "AzureFile" => (datastore.file_share(), Self::Share),
            _ => return Err(format!("a {kind} datastore has no container or share")),
        };
        name.map(str::trim)
            .filter(|n| !n.is_empty())
            .map(resource)
            .ok_or_else(|| format!("the {kind} datastore names no container or share"))
    }
}

/// Why a token cannot be read, signed or re-minted. Never holds a field's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    #[error("the token is not a query string of percent-encoded fields")]
    Undecodable,
    #[error("the token has no '{0}' field")]
    Missing(&'static str),
    #[error("the token has neither 'ss' and 'srt' (account SAS) nor 'sr' (service SAS)")]
    UnknownKind,
    #[error("a user delegation SAS is signed with a key from Entra ID, not with an account key")]
    UserDelegation,
    #[error("the token refers to a stored access policy ('si'), which keysync does not re-mint")]
    StoredPolicy,
    #[error("the token carries the field '{0}', which keysync does not re-mint")]
    UnsupportedField(String),
    #[error("the token is scoped to 'sr={0}', not to the datastore's {1}")]
    Scope(String, &'static str),
    #[error("keysync signs SAS versions {OLDEST_SIGNED_VERSION} and later, not '{0}'")]
    Version(String),
}

/// A SAS token's fields, decoded, in the order given. The values (`sig` among them) are cleared
/// from memory when the token is dropped.
#[derive(Clone)]
pub struct SasToken {
    fields: Vec<Field>,
}

/// A field's name and its decoded value.
type Field = (String, Zeroizing<String>);

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SasToken({})", self.summary())
    }
}

impl SasToken {
    /// Reads a token such as `sv=...&sp=r&...&sig=...`, with or without a leading `?`.
    pub fn parse(token: &str) -> Result<SasToken, SasError> {
        let fields = parse_fields(token)?;
        let token = SasToken { fields };
        for required in ["sig", "sv"] {
            token.get(required).ok_or(SasError::Missing(required))?;
        }
        token.kind()?;
        Ok(token)
    }

    /// Reads the fields of a token that is not signed yet (no `sig`).
    pub fn unsigned(token: &str) -> Result<SasToken, SasError> {
        let fields = parse_fields(token)?
            .into_iter()
            .filter(|(name, _)| name != "sig")
            .collect();
        Ok(SasToken { fields })
    }

    /// A field's decoded value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn field(&self, name: &str) -> &str {
        self.get(name).unwrap_or_default()
    }

    pub fn kind(&self) -> Result<SasKind, SasError> {
        if USER_DELEGATION_FIELDS.iter().any(|f| self.get(f).is_some()) {
            Ok(SasKind::UserDelegation)
        } else if self.get("ss").is_some() && self.get("srt").is_some() {
            Ok(SasKind::Account)
        } else if self.get("sr").is_some() {
            Ok(SasKind::Service)
        } else {
            Err(SasError::UnknownKind)
        }
    }

    /// When the token stops working (`se`), if it says and the date can be read.
    pub fn expiry(&self) -> Option<OffsetDateTime> {
        self.get("se").and_then(parse_time)
    }

    /// When the token starts working (`st`), if it says and the date can be read.
    pub fn start(&self) -> Option<OffsetDateTime> {
        self.get("st").and_then(parse_time)
    }

    /// The token's scope and limits, safe to log: never the signature, nor `sip`.
    pub fn summary(&self) -> String {
        let kind = match self.kind() {
            Ok(SasKind::Account) => "account SAS",
            Ok(SasKind::Service) => "service SAS",
            Ok(SasKind::UserDelegation) => "user delegation SAS",
            Err(_) => "SAS",
        };
        let shown: Vec<String> = ["ss", "srt", "sr", "sp", "spr", "se"]
            .iter()
            .filter_map(|name| {
                self.get(name)
                    .map(|v| format!("{name}={}", printable(v, 40)))
            })
            .collect();
        format!("{kind} {}", shown.join(" "))
    }

    /// A new token with this one's permissions, services, resource types, protocol and IP range,
    /// valid until `expiry`, signed with `key` at keysync's service version.
    pub fn remint(
        &self,
        key: &AccountKey,
        resource: SignedResource<'_>,
        expiry: OffsetDateTime,
    ) -> Result<SecretString, SasError> {
        match self.kind()? {
            SasKind::UserDelegation => return Err(SasError::UserDelegation),
            SasKind::Account | SasKind::Service => {}
        }
        if self.get("si").is_some() {
            return Err(SasError::StoredPolicy);
        }
        if let Some((name, _)) = self
            .fields
            .iter()
            .find(|(name, _)| !REMINTABLE_FIELDS.contains(&name.as_str()))
        {
            return Err(SasError::UnsupportedField(printable(name, 40)));
        }
        self.get("sp").ok_or(SasError::Missing("sp"))?;
        let mut fields = vec![field("sv", STORAGE_VERSION)];
        for name in ["ss", "srt", "sr", "sp"] {
            self.copy_to(&mut fields, name);
        }
        fields.push(field("se", &format_time(expiry)));
        for name in ["sip", "spr", "ses"] {
            self.copy_to(&mut fields, name);
        }
        sign(&SasToken { fields }, key, resource)
    }

    fn copy_to(&self, fields: &mut Vec<Field>, name: &str) {
        if let Some(value) = self.get(name) {
            fields.push(field(name, value));
        }
    }
}

fn field(name: &str, value: &str) -> Field {
    (name.to_string(), Zeroizing::new(value.to_string()))
}

/// Signs `token`'s fields (any `sig` in it is ignored) with `key` and returns the whole token,
/// its fields percent-encoded, ending with `sig`.
pub fn sign(
    token: &SasToken,
    key: &AccountKey,
    resource: SignedResource<'_>,
) -> Result<SecretString, SasError> {
    let signature = Zeroizing::new(key.sign(&string_to_sign(token, key.account(), resource)?));
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in token.fields.iter().filter(|(name, _)| name != "sig") {
        query.append_pair(name, value);
    }
    query.append_pair("sig", &signature);
    Ok(SecretString::from(query.finish()))
}

/// True when `token`'s signature is the one `key` gives its fields for `resource`: which key
/// signed a token is found by signing it again with each. `resource` is not signed over by an
/// account SAS; an error says why the token's string to sign is unknown.
pub fn is_signed_with(
    token: &SasToken,
    key: &AccountKey,
    resource: SignedResource<'_>,
) -> Result<bool, SasError> {
    let signature = Zeroizing::new(key.sign(&string_to_sign(token, key.account(), resource)?));
    Ok(token.get("sig") == Some(signature.as_str()))
}

/// The string a token is signed over (see the module documentation).
pub fn string_to_sign(
    token: &SasToken,
    account: &str,
    resource: SignedResource<'_>,
) -> Result<String, SasError> {
    let version = token.get("sv").ok_or(SasError::Missing("sv"))?;
    if version < OLDEST_SIGNED_VERSION {
        return Err(SasError::Version(printable(version, 40)));
    }
    let f = |name| token.field(name);
    let lines: Vec<String> = match (token.kind()?, resource) {
        (SasKind::UserDelegation, _) => return Err(SasError::UserDelegation),
        (SasKind::Account, _) => {
            let fields = ["sp", "ss", "srt", "st", "se", "sip", "spr", "sv", "ses"];
            let mut lines: Vec<String> = std::iter::once(account.to_string())
                .chain(fields.iter().map(|name| f(name).to_string()))
                .collect();
            // Every line of an account SAS ends with a newline, the last one included.
            lines.push(String::new());
            lines
        }
        (SasKind::Service, SignedResource::Container(container)) => {
            expect_scope(token, "c", "container")?;
            let mut lines = service_head(token, format!("/blob/{account}/{container}"));
            lines.extend([f("sr"), "", f("ses")].map(str::to_string));
            lines.extend(header_overrides(token));
            lines
        }
        (SasKind::Service, SignedResource::Share(share)) => {
            expect_scope(token, "s", "share")?;
            let mut lines = service_head(token, format!("/file/{account}/{share}"));
            lines.extend(header_overrides(token));
            lines
        }
    };
    Ok(lines.join("\n"))
}

/// `sp`, `st`, `se`, the canonicalized resource, `si`, `sip`, `spr`, `sv`.
fn service_head(token: &SasToken, resource: String) -> Vec<String> {
    let f = |name| token.field(name).to_string();
    vec![
        f("sp"),
        f("st"),
        f("se"),
        resource,
        f("si"),
        f("sip"),
        f("spr"),
        f("sv"),
    ]
}

/// `rscc`, `rscd`, `rsce`, `rscl`, `rsct`: the response headers a service SAS overrides.
fn header_overrides(token: &SasToken) -> Vec<String> {
    ["rscc", "rscd", "rsce", "rscl", "rsct"]
        .iter()
        .map(|name| token.field(name).to_string())
        .collect()
}

fn expect_scope(token: &SasToken, wanted: &str, what: &'static str) -> Result<(), SasError> {
    match token.field("sr") {
        scope if scope == wanted => Ok(()),
        scope => Err(SasError::Scope(printable(scope, 40), what)),
    }
}

fn parse_fields(token: &str) -> Result<Vec<Field>, SasError> {
    let token = token.trim().trim_start_matches('?');
    token
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| SasError::Undecodable)?;
            Ok((name.to_string(), Zeroizing::new(value.into_owned())))
        })
        .collect()
}

/// `se`/`st` as Azure accepts them: `2030-01-31`, `2030-01-31T08:00Z` or
/// `2030-01-31T08:00:00Z` (or with an offset).
fn parse_time(value: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Some(t);
    }
    if let Ok(date) = Date::parse(value, format_description!("[year]-[month]-[day]")) {
        return Some(date.midnight().assume_utc());
    }
    let minutes = format_description!("[year]-[month]-[day]T[hour]:[minute]Z");
    PrimitiveDateTime::parse(value, minutes)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// `2030-01-31T08:00:00Z`: the form Azure's tools write.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use time::macros::datetime;

    /// `base64("keysync shared key test vector, not a real key!!!")`, as in `shared_key`.
    const KEY: &str = "a2V5c3luYyBzaGFyZWQga2V5IHRlc3QgdmVjdG9yLCBub3QgYSByZWFsIGtleSEhIQ==";

    fn key() -> AccountKey {
        AccountKey::new("stvector01", &SecretString::from(KEY)).unwrap()
    }

    fn unsigned(token: &str) -> SasToken {
        SasToken::unsigned(token).unwrap()
    }

    #[test]
    fn an_account_sas_is_signed_over_the_documented_lines() {
        let token =
            unsigned("sv=2024-11-04&ss=bf&srt=co&sp=rl&se=2030-01-31T08%3A00%3A00Z&spr=https,http");
        // Written by hand: account, sp, ss, srt, st (empty), se, sip (empty), spr, sv,
        // ses (empty), each followed by a newline.
        let expected =
            "stvector01\nrl\nbf\nco\n\n2030-01-31T08:00:00Z\n\nhttps,http\n2024-11-04\n\n";
        let resource = SignedResource::Container("data");
        assert_eq!(
            string_to_sign(&token, "stvector01", resource).unwrap(),
            expected
        );
        // `printf '%s' "$STRING_TO_SIGN" | openssl dgst -sha256 -mac HMAC \
        //   -macopt hexkey:<the key's bytes in hex> -binary | base64`
        let signed = sign(&token, &key(), resource).unwrap();
        let signed = SasToken::parse(signed.expose_secret()).unwrap();
        assert_eq!(
            signed.get("sig"),
            Some("16iQ1Z+x4DaJ1AkUJlUcuduXsrtPoKKDe2+mNzWQqQ0=")
        );
    }

    #[test]
    fn a_container_sas_is_signed_over_the_blob_resource() {
        let token = unsigned(
            "sv=2024-11-04&sr=c&sp=rwl&st=2026-03-01T00:00:00Z&se=2026-04-01T00:00:00Z&spr=https",
        );
        let expected = "rwl\n2026-03-01T00:00:00Z\n2026-04-01T00:00:00Z\n/blob/stvector01/data\n\n\nhttps\n2024-11-04\nc\n\n\n\n\n\n\n";
        let resource = SignedResource::Container("data");
        assert_eq!(
            string_to_sign(&token, "stvector01", resource).unwrap(),
            expected
        );
        let signed = sign(&token, &key(), resource).unwrap();
        let signed = SasToken::parse(signed.expose_secret()).unwrap();
        assert_eq!(
            signed.get("sig"),
            Some("F9r77ZTl5f06LlIKNl7YpcqF9kKCoGqsompiSEC5ZOY=")
        );
    }

    #[test]
    fn a_share_sas_is_signed_over_the_file_resource() {
        let token = unsigned("sv=2024-11-04&sr=s&sp=rl&se=2026-04-01T00:00:00Z");
        let expected =
            "rl\n\n2026-04-01T00:00:00Z\n/file/stvector01/share1\n\n\n\n2024-11-04\n\n\n\n\n";
        let resource = SignedResource::Share("share1");
        assert_eq!(
            string_to_sign(&token, "stvector01", resource).unwrap(),
            expected
        );
        let signed = sign(&token, &key(), resource).unwrap();
        let signed = SasToken::parse(signed.expose_secret()).unwrap();
        assert_eq!(
            signed.get("sig"),
            Some("mvFqX1+gmj/qO4+jE779pztHFnQIitAo2Cn+7nEkDNE=")
        );
    }

    #[test]
    fn the_key_that_signed_a_token_is_found_by_signing_it_again() {
        let other = AccountKey::new("stvector01", &SecretString::from("b3RoZXIga2V5")).unwrap();
        let container = SignedResource::Container("data");
        // The container SAS signed above, by hand, with its signature from the vector.
        let token = SasToken::parse("sv=2024-11-04&sr=c&sp=rwl&st=2026-03-01T00:00:00Z&se=2026-04-01T00:00:00Z&spr=https&sig=F9r77ZTl5f06LlIKNl7YpcqF9kKCoGqsompiSEC5ZOY%3D").unwrap();
        assert_eq!(is_signed_with(&token, &key(), container), Ok(true));
        assert_eq!(is_signed_with(&token, &other, container), Ok(false));
        // The same fields over another container are another string to sign.
        let elsewhere = SignedResource::Container("other");
        assert_eq!(is_signed_with(&token, &key(), elsewhere), Ok(false));
        let blob = SasToken::parse("sv=2024-11-04&sr=b&sp=r&sig=x").unwrap();
        assert!(matches!(
            is_signed_with(&blob, &key(), container),
            Err(SasError::Scope(..))
        ));
    }

    #[test]
    fn a_reminted_token_keeps_scope_permissions_protocol_and_ip_range() {
        let old = SasToken::parse(
            "?sv=2021-08-06&ss=b&srt=sco&sp=rlw&st=2020-01-01&se=2021-01-01&sip=10.0.0.1-10.0.0.9&spr=https&sig=old%2Bsig%3D",
        )
        .unwrap();
        let expiry = datetime!(2026-05-01 12:00 UTC);
        let new = old
            .remint(&key(), SignedResource::Container("data"), expiry)
            .unwrap();
        let new = SasToken::parse(new.expose_secret()).unwrap();
        for name in ["ss", "srt", "sp", "sip", "spr"] {
            assert_eq!(new.get(name), old.get(name), "{name}");
        }
        assert_eq!(new.get("sv"), Some(STORAGE_VERSION));
        assert_eq!(new.get("se"), Some("2026-05-01T12:00:00Z"));
        assert_eq!(new.get("st"), None);
        assert_ne!(new.get("sig"), old.get("sig"));
        assert_eq!(new.expiry(), Some(expiry));
    }

    #[test]
    fn tokens_keysync_cannot_sign_are_refused_with_a_reason() {
        let refuse = |token: &str, resource| {
            let parsed = SasToken::parse(token).unwrap();
            parsed
                .remint(&key(), resource, datetime!(2026-05-01 0:00 UTC))
                .unwrap_err()
        };
        let container = SignedResource::Container("data");
        assert_eq!(
            refuse("sv=2024-11-04&sr=c&sp=r&skoid=x&sig=s", container),
            SasError::UserDelegation
        );
        assert_eq!(
            refuse("sv=2024-11-04&sr=c&si=policy1&sig=s", container),
            SasError::StoredPolicy
        );
        assert!(matches!(
            refuse("sv=2024-11-04&sr=b&sp=r&se=2030-01-01&sig=s", container),
            SasError::Scope(..)
        ));
        assert!(matches!(
            refuse("sv=2024-11-04&sr=c&sp=r&rsct=text&sig=s", container),
            SasError::UnsupportedField(f) if f == "rsct"
        ));
        assert!(matches!(
            refuse("sv=2024-11-04&sr=c&sp=r&sig=s", SignedResource::Share("s")),
            SasError::Scope(..)
        ));
        let old = unsigned("sv=2019-12-12&ss=b&srt=c&sp=r");
        assert!(matches!(
            string_to_sign(&old, "a", container),
            Err(SasError::Version(_))
        ));
    }

    #[test]
    fn parsing_reads_encoded_fields_and_debug_never_shows_the_signature() {
        let token = SasToken::parse("sv=2024-11-04&ss=b&srt=c&sp=r&se=2030-01-31&spr=https%2Chttp&sig=c2VjcmV0%2Bc2lnbmF0dXJl").unwrap();
        assert_eq!(token.kind(), Ok(SasKind::Account));
        assert_eq!(token.get("spr"), Some("https,http"));
        assert_eq!(token.get("sig"), Some("c2VjcmV0+c2lnbmF0dXJl"));
        assert_eq!(token.expiry(), Some(datetime!(2030-01-31 0:00 UTC)));
        let shown = format!("{token:?} {}", token.summary());
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("account SAS"), "{shown}");
        assert_eq!(
            SasToken::parse("sv=1&sp=r").unwrap_err(),
            SasError::Missing("sig")
        );
        assert_eq!(
            SasToken::parse("sv=1&sp=r&sig=x").unwrap_err(),
            SasError::UnknownKind
        );
    }

    #[test]
    fn times_are_read_in_the_forms_azure_accepts() {
        assert_eq!(
            parse_time("2030-01-31T08:00Z"),
            Some(datetime!(2030-01-31 8:00 UTC))
        );
        assert_eq!(
            parse_time("2030-01-31T08:00:00+01:00"),
            Some(datetime!(2030-01-31 7:00 UTC))
        );
        assert_eq!(parse_time("soon"), None);
    }
}
