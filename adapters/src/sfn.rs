//! `WorkflowCallbackPort` on AWS Step Functions (aws-sdk-sfn):
//! SendTaskSuccess / SendTaskFailure, with the SDK's standard retries
//! (4 attempts, exponential backoff) for throttling and 5xx.

use async_trait::async_trait;
use aws_sdk_sfn::config::Region;
use aws_sdk_sfn::config::retry::RetryConfig;

use ferry_domain::ports::{CallbackError, WorkflowCallbackPort};

use crate::error_text::error_chain;

/// Step Functions' limits on a failure's fields.
const MAX_ERROR: usize = 256;
const MAX_CAUSE: usize = 32_768;

/// Answers Step Functions task tokens.
#[derive(Debug, Clone)]
pub struct StepFunctionsCallback {
    client: aws_sdk_sfn::Client,
}

fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl StepFunctionsCallback {
    /// A client from the standard AWS chain; `endpoint_url` overrides the
    /// Step Functions endpoint.
    pub async fn connect(endpoint_url: Option<String>) -> Self {
        let mut loader = crate::aws::config_loader();
        if let Some(endpoint) = endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_sfn::config::Builder::from(&shared)
            .retry_config(RetryConfig::standard().with_max_attempts(4));
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        Self::from_client(aws_sdk_sfn::Client::from_conf(builder.build()))
    }

    pub fn from_client(client: aws_sdk_sfn::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl WorkflowCallbackPort for StepFunctionsCallback {
    async fn succeed(&self, task_token: &str, output: &str) -> Result<(), CallbackError> {
        self.client
            .send_task_success()
            .task_token(task_token)
            .output(output)
            .send()
            .await
            .map_err(|e| CallbackError(error_chain(&e)))?;
        Ok(())
    }

    async fn fail(&self, task_token: &str, error: &str, cause: &str) -> Result<(), CallbackError> {
        self.client
            .send_task_failure()
            .task_token(task_token)
            .error(truncated(error, MAX_ERROR))
            .cause(truncated(cause, MAX_CAUSE))
            .send()
            .await
            .map_err(|e| CallbackError(error_chain(&e)))?;
        Ok(())
    }
}
