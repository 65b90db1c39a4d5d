//! Azure Resource Manager resource ids, parsed and compared the way ARM does: segment by
//! segment, ignoring case.

use std::fmt;

/// Why a string is not the resource id that was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceIdError {
    #[error(
        "not an ARM resource id (expected /subscriptions/<id>/resourceGroups/<name>/providers/...)"
    )]
    Malformed,
    #[error("resource id names a {found} resource, expected {expected}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("not a valid {kind} name ({rule})")]
    BadName {
        kind: &'static str,
        rule: &'static str,
    },
}

/// A parsed ARM resource id in a resource group: `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/{type}/{name}]...`.
#[derive(Clone)]
pub struct ResourceId {
    raw: String,
    subscription: String,
    resource_group: String,
    namespace: String,
    /// `(type, name)` pairs from the top-level resource down to the leaf.
    types: Vec<(String, String)>,
}

impl ResourceId {
    /// Parses an id; a trailing slash and surrounding whitespace are tolerated.
    pub fn parse(input: &str) -> Result<Self, ResourceIdError> {
        let trimmed = input.trim().trim_end_matches('/');
        let mut segments = trimmed
            .strip_prefix('/')
            .ok_or(ResourceIdError::Malformed)?
            .split('/');
        let mut expect = |label: &str| -> Result<String, ResourceIdError> {
            let key = segments.next().ok_or(ResourceIdError::Malformed)?;
            let value = segments.next().ok_or(ResourceIdError::Malformed)?;
            if !key.eq_ignore_ascii_case(label) || !is_valid_segment(value) {
                return Err(ResourceIdError::Malformed);
            }
            Ok(value.to_string())
        };
        let subscription = expect("subscriptions")?;
        let resource_group = expect("resourceGroups")?;
        let namespace = expect("providers")?;
        let rest: Vec<&str> = segments.collect();
        if rest.is_empty()
            || !rest.len().is_multiple_of(2)
            || !rest.iter().all(|s| is_valid_segment(s))
        {
            return Err(ResourceIdError::Malformed);
        }
        let types = rest
            .chunks(2)
            .map(|pair| (pair[0].to_string(), pair[1].to_string()))
            .collect();
        Ok(Self {
            raw: trimmed.to_string(),
            subscription,
            resource_group,
            namespace,
            types,
        })
    }

    /// The id as given (without a trailing slash).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    pub fn resource_group(&self) -> &str {
        &self.resource_group
    }

    /// The name of the leaf resource.
    pub fn name(&self) -> &str {
        self.types
            .last()
            .map(|(_, name)| name.as_str())
            .unwrap_or_default()
    }

    /// The full type of the leaf resource, such as `Microsoft.Storage/storageAccounts`.
    pub fn resource_type(&self) -> String {
        let mut out = self.namespace.clone();
        for (kind, _) in &self.types {
            out.push('/');
            out.push_str(kind);
        }
        out
    }

    /// True when the leaf resource has the given full type (case-insensitive).
    pub fn is_type(&self, full_type: &str) -> bool {
        self.resource_type().eq_ignore_ascii_case(full_type)
    }

    fn canonical(&self) -> String {
        self.raw.to_ascii_lowercase()
    }
}

/// A segment ARM could have issued: not empty, not `.` or `..` (which a URL would resolve into
/// another path), and free of what would end the path or forge a log line.
fn is_valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && !segment
            .chars()
            .any(|c| c.is_control() || c == '?' || c == '#' || is_invisible(c))
}

/// Line and paragraph separators, zero-width and bidirectional formatting characters: none is
/// allowed in an ARM name, and each can make a log line read as something it is not.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}'
        | '\u{FEFF}')
}

/// Azure's rule for storage account names: 3 to 24 lower-case letters and digits. ARM compares
/// names without regard to case (and people type them both ways), so upper case is accepted.
pub(crate) fn is_storage_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// [`is_storage_account_name`], as the error an id that breaks it gets.
fn check_storage_account_name(name: &str) -> Result<(), ResourceIdError> {
    match is_storage_account_name(name) {
        true => Ok(()),
        false => Err(ResourceIdError::BadName {
            kind: "storage account",
            rule: "3 to 24 letters and digits",
        }),
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.raw.eq_ignore_ascii_case(&other.raw)
    }
}

impl Eq for ResourceId {}

impl std::hash::Hash for ResourceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical().hash(state);
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({})", self.raw)
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $full_type:literal) => {
        typed_id!($(#[$doc])* $name, $full_type, |_: &str| Ok(()));
    };
    ($(#[$doc:meta])* $name:ident, $full_type:literal, $check_name:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(ResourceId);

        impl $name {
            /// The ARM resource type this id must have.
            pub const TYPE: &'static str = $full_type;

            /// Parses an id and checks that it names a resource of this type.
            pub fn parse(input: &str) -> Result<Self, ResourceIdError> {
                let id = ResourceId::parse(input)?;
                if !id.is_type(Self::TYPE) {
                    return Err(ResourceIdError::WrongType {
                        expected: Self::TYPE,
                        found: id.resource_type(),
                    });
                }
                let check_name: fn(&str) -> Result<(), ResourceIdError> = $check_name;
                check_name(id.name())?;
                Ok(Self(id))
            }

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }

            pub fn subscription(&self) -> &str {
                self.0.subscription()
            }

            pub fn resource_group(&self) -> &str {
                self.0.resource_group()
            }

            pub fn name(&self) -> &str {
                self.0.name()
            }

            pub fn resource_id(&self) -> &ResourceId {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = ResourceIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

typed_id!(
    /// The id of a storage account.
    StorageAccountId,
    "Microsoft.Storage/storageAccounts",
    check_storage_account_name
);
typed_id!(
    /// The id of an Azure Machine Learning workspace.
    WorkspaceId,
    "Microsoft.MachineLearningServices/workspaces"
);
typed_id!(
    /// The id of a datastore inside an Azure Machine Learning workspace.
    DatastoreId,
    "Microsoft.MachineLearningServices/workspaces/datastores"
);

impl StorageAccountId {
    /// Builds the id of an account from its parts.
    pub fn new(
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> Result<Self, ResourceIdError> {
        Self::parse(&format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Storage/storageAccounts/{name}"
        ))
    }
}

impl WorkspaceId {
    /// The id of a datastore in this workspace.
    pub fn datastore(&self, name: &str) -> Result<DatastoreId, ResourceIdError> {
        DatastoreId::parse(&format!("{}/datastores/{name}", self.as_str()))
    }
}

impl DatastoreId {
    /// The workspace that holds this datastore.
    pub fn workspace(&self) -> WorkspaceId {
        let mut parent = self.0.clone();
        parent.types.pop();
        let cut = parent.raw.len() - self.name().len() - "/datastores/".len();
        parent.raw.truncate(cut);
        WorkspaceId(parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlshared01";

    #[test]
    fn parses_the_parts_of_a_storage_account_id() {
        let id = StorageAccountId::parse(ACCOUNT).unwrap();
        assert_eq!(id.subscription(), "11111111-2222-3333-4444-555555555555");
        assert_eq!(id.resource_group(), "rg-ml");
        assert_eq!(id.name(), "stmlshared01");
    }

    #[test]
    fn compares_ids_ignoring_case_and_trailing_slash() {
        let a = StorageAccountId::parse(ACCOUNT).unwrap();
        let b = StorageAccountId::parse(&format!("{}/", ACCOUNT.to_uppercase())).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_ids_of_other_types_and_children() {
        let err = StorageAccountId::parse(&format!("{ACCOUNT}/blobServices/default")).unwrap_err();
        assert!(matches!(err, ResourceIdError::WrongType { .. }), "{err:?}");
        let hub = "/subscriptions/s/resourceGroups/r/providers/Microsoft.EventHub/namespaces/n";
        assert!(StorageAccountId::parse(hub).is_err());
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "stmlshared01",
            "/subscriptions/s",
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts",
            "/subscriptions//resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a",
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a?x=1",
            "/tenants/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a",
        ] {
            assert_eq!(
                ResourceId::parse(bad).err(),
                Some(ResourceIdError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn dot_segments_and_invisible_characters_are_refused() {
        for name in [".", "..", "x\u{2028}y", "x\u{202e}y", "x\u{200b}"] {
            let id =
                format!("/subscriptions/s/resourceGroups/r/providers/Microsoft.Foo/bars/{name}");
            assert_eq!(
                ResourceId::parse(&id).err(),
                Some(ResourceIdError::Malformed),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_storage_account_name_follows_azures_rule() {
        let with = |name: &str| ACCOUNT.replace("stmlshared01", name);
        assert!(StorageAccountId::parse(&with("StMlShared01")).is_ok());
        for bad in [
            "st",
            "st-ml",
            "st ml",
            "stml.shared",
            &"s".repeat(25),
            "stmlß01",
        ] {
            let err = StorageAccountId::parse(&with(bad)).unwrap_err();
            assert!(
                matches!(err, ResourceIdError::BadName { .. }),
                "{bad:?}: {err:?}"
            );
            assert_eq!(
                err.to_string(),
                "not a valid storage account name (3 to 24 letters and digits)"
            );
        }
    }

    #[test]
    fn a_datastore_id_knows_its_workspace() {
        let ws = WorkspaceId::parse(
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w",
        )
        .unwrap();
        let ds = ws.datastore("workspaceblobstore").unwrap();
        assert_eq!(ds.name(), "workspaceblobstore");
        assert_eq!(ds.workspace(), ws);
    }
}
