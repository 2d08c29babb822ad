//! The workflow notifier: answers a job's AWS Step Functions task token
//! (through `WorkflowCallbackPort`) when the job ends, and records the
//! outcome on the job.

use std::sync::Arc;

use tracing::warn;

use ferry_domain::JobStatus;
use ferry_domain::ports::{CallbackOutcome, CallbackSent, JobRecord, WorkflowCallbackPort};

use super::recorder::Recorder;

/// Tells the workflow how jobs with a task token ended.
#[derive(Default)]
pub(super) struct WorkflowNotifier {
    pub(super) callback: Option<Arc<dyn WorkflowCallbackPort>>,
}

impl WorkflowNotifier {
    /// Tells the workflow how the job ended, if it carries a task token, and
    /// records the outcome on the job. A failed callback never changes the
    /// job's own result.
    pub(super) async fn notify(&self, recorder: &Recorder, record: &mut JobRecord) {
        let (Some(callback), Some(token)) = (&self.callback, record.task_token.clone()) else {
            return;
        };
        let summary = record.job.summary();
        let status = record.job.status();
        let outcome = match status {
            JobStatus::Completed | JobStatus::CompletedWithErrors => {
                let output = serde_json::json!({
                    "job_id": record.job.id.as_str(),
                    "status": status.as_str(),
                    "destination": record.destination.to_string(),
                    "files": { "total": summary.total, "succeeded": summary.succeeded, "skipped": summary.skipped, "failed": summary.failed },
                    "bytes": summary.bytes_done,
                });
                callback
                    .succeed(&token, &output.to_string())
                    .await
                    .map(|()| CallbackSent::TaskSuccess)
            }
            JobStatus::Cancelled => callback
                .fail(&token, "ferry.JobCancelled", "the job was cancelled")
                .await
                .map(|()| CallbackSent::TaskFailure),
            _ => {
                let cause = record.job.failure().unwrap_or("the job failed").to_owned();
                callback
                    .fail(&token, "ferry.JobFailed", &cause)
                    .await
                    .map(|()| CallbackSent::TaskFailure)
            }
        };
        record.callback = Some(match outcome {
            Ok(sent) => CallbackOutcome::Sent(sent),
            Err(e) => {
                warn!(job = %record.job.id, error = %e, "workflow callback failed");
                CallbackOutcome::Failed(e.to_string())
            }
        });
        if let Err(e) = recorder.save_job(record).await {
            warn!(job = %record.job.id, error = %e, "could not record the callback outcome");
        }
    }
}
