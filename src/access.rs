//! What a login may do: read and write, or only read. It decides which
//! upstream role a session uses; every layer speaks of it, so it is a leaf.

use std::fmt;

/// What a login may do; decides which upstream role its sessions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Readwrite,
    Readonly,
}

impl Access {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Access::Readwrite => "readwrite",
            Access::Readonly => "readonly",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Access> {
        match text {
            "readwrite" => Some(Access::Readwrite),
            "readonly" => Some(Access::Readonly),
            _ => None,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
