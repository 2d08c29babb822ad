//! Telling a workflow engine how a job ended: `WorkflowCallbackPort`
//! (AWS Step Functions task tokens).

use async_trait::async_trait;
use thiserror::Error;

/// Which answer a task token was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackSent {
    TaskSuccess,
    TaskFailure,
}

/// What happened to a job's workflow callback. Printed (and stored) as
/// `sent task_success`, `sent task_failure` or `failed: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    Sent(CallbackSent),
    Failed(String),
}

impl CallbackOutcome {
    /// Reads the printed form back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sent task_success" => Some(Self::Sent(CallbackSent::TaskSuccess)),
            "sent task_failure" => Some(Self::Sent(CallbackSent::TaskFailure)),
            _ => s
                .strip_prefix("failed: ")
                .map(|reason| Self::Failed(reason.to_owned())),
        }
    }
}

impl std::fmt::Display for CallbackOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sent(CallbackSent::TaskSuccess) => f.write_str("sent task_success"),
            Self::Sent(CallbackSent::TaskFailure) => f.write_str("sent task_failure"),
            Self::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

/// The callback could not be delivered (after the adapter's retries).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the workflow callback failed: {0}")]
pub struct CallbackError(pub String);

#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait WorkflowCallbackPort: Send + Sync + 'static {
    /// The job succeeded (possibly with errors); `output` is JSON.
    async fn succeed(&self, task_token: &str, output: &str) -> Result<(), CallbackError>;
    /// The job failed or was cancelled.
    async fn fail(&self, task_token: &str, error: &str, cause: &str) -> Result<(), CallbackError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_print_and_parse_back() {
        for outcome in [
            CallbackOutcome::Sent(CallbackSent::TaskSuccess),
            CallbackOutcome::Sent(CallbackSent::TaskFailure),
            CallbackOutcome::Failed("the endpoint answered 500".into()),
        ] {
            assert_eq!(CallbackOutcome::parse(&outcome.to_string()), Some(outcome));
        }
        assert_eq!(CallbackOutcome::parse("sent nothing"), None);
    }
}
