//! Telling a workflow engine how a job ended: `WorkflowCallbackPort`
//! (AWS Step Functions task tokens).

use async_trait::async_trait;
use thiserror::Error;

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
