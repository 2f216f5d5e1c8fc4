//! Where an extension came from and how far the operator trusts it.
//! The reference treats it as information; our operator policy uses the
//! trust class to cap the capabilities an extension may be granted.

use serde::{Deserialize, Serialize};

macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        #[non_exhaustive]
        pub enum $name { #[default] $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $s),+ } }
            pub fn parse(s: &str) -> Option<Self> { Self::ALL.iter().copied().find(|v| v.as_str() == s) }
        }
    };
}

str_enum!(
    /// `local` | `registry` | `git`
    Origin { Local = "local", Registry = "registry", Git = "git" }
);
str_enum!(
    /// `dev` | `verified` | `trusted`
    TrustClass { Dev = "dev", Verified = "verified", Trusted = "trusted" }
);
str_enum!(
    /// `personal` | `team` | `org`
    OwnerClass { Personal = "personal", Team = "team", Org = "org" }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Provenance {
    pub origin: Origin,
    pub trust_class: TrustClass,
    pub owner_class: OwnerClass,
}
