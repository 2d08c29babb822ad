//! The workflow notifier: answers a job's AWS Step Functions task token
//! (through `WorkflowCallbackPort`) when the job ends, and records the
//! outcome on the job.

use std::sync::Arc;

use tracing::warn;

use ferry_domain::JobStatus;
use ferry_domain::ports::{
    CallbackOutcome, CallbackSent, JobHead, JobRecord, WorkflowCallbackPort,
};

use super::recorder::Recorder;

/// Tells the workflow how jobs with a task token ended.
#[derive(Default)]
pub(super) struct WorkflowNotifier {
    pub(super) callback: Option<Arc<dyn WorkflowCallbackPort>>,
}

impl WorkflowNotifier {
    /// Tells the workflow how the job ended, if it carries a task token, and
    /// records the outcome on the job (its head: the job's tasks are not
    /// read; the token is, alone). A failed callback never changes the
    /// job's own result.
    pub(super) async fn notify(&self, recorder: &Recorder, job: &mut JobHead) {
        let Some(callback) = &self.callback else {
            return;
        };
        if !job.has_task_token {
            return;
        }
        let token = match recorder.store().task_token(&job.id).await {
            Ok(Some(token)) => token,
            Ok(None) => return,
            Err(e) => {
                warn!(job = %job.id, error = %e, "could not read the job's task token; the workflow is not told");
                return;
            }
        };
        let summary = job.summary;
        let status = job.status;
        let outcome = match status {
            JobStatus::Completed | JobStatus::CompletedWithErrors => {
                let output = serde_json::json!({
                    "job_id": job.id.as_str(),
                    "status": status.as_str(),
                    "destination": job.destination.to_string(),
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
                let cause = job
                    .failure
                    .as_deref()
                    .unwrap_or("the job failed")
                    .to_owned();
                callback
                    .fail(&token, "ferry.JobFailed", &cause)
                    .await
                    .map(|()| CallbackSent::TaskFailure)
            }
        };
        job.callback = Some(match outcome {
            Ok(sent) => CallbackOutcome::Sent(sent),
            Err(e) => {
                warn!(job = %job.id, error = %e, "workflow callback failed");
                CallbackOutcome::Failed(e.to_string())
            }
        });
        if let Err(e) = recorder.save_job(job).await {
            warn!(job = %job.id, error = %e, "could not record the callback outcome");
        }
    }

    /// [`Self::notify`] for a job held whole: the outcome lands on the
    /// record too.
    pub(super) async fn notify_record(&self, recorder: &Recorder, record: &mut JobRecord) {
        if self.callback.is_none() || record.task_token.is_none() {
            return;
        }
        let mut head = record.head();
        self.notify(recorder, &mut head).await;
        if head.callback.is_some() {
            record.callback = head.callback;
            record.updated_at_ms = head.updated_at_ms;
            record.task_token = None;
        }
    }
}
