//! Who may see which jobs: a scoped caller sees only the jobs it submitted;
//! an admin (or the caller of an open API) sees them all.

/// A caller's view of the jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every job.
    All,
    /// Only the jobs whose owner is this name.
    Owner(String),
}

impl Access {
    /// Whether this caller may see a job of `owner`.
    pub fn can_see(&self, owner: Option<&str>) -> bool {
        match self {
            Access::All => true,
            Access::Owner(name) => owner == Some(name.as_str()),
        }
    }

    /// The owner to filter listings by.
    pub fn owner_filter(&self) -> Option<String> {
        match self {
            Access::All => None,
            Access::Owner(name) => Some(name.clone()),
        }
    }
}
