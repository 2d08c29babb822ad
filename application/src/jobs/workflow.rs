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
        if self.callback.is_none() || !job.has_task_token {
            return;
        }
        let token = match recorder.store().task_token(&job.id).await {
            Ok(Some(token)) => Ok(token),
            Ok(None) => return,
            Err(e) => Err(format!("could not read the job's task token: {e}")),
        };
        self.answer_and_record(recorder, job, token).await;
    }

    /// [`Self::notify`] for a job held whole (its token at hand, not read
    /// again): the outcome lands on the record too.
    pub(super) async fn notify_record(&self, recorder: &Recorder, record: &mut JobRecord) {
        let Some(token) = record.task_token.clone() else {
            return;
        };
        if self.callback.is_none() {
            return;
        }
        let mut head = record.head();
        self.answer_and_record(recorder, &mut head, Ok(token)).await;
        record.callback = head.callback;
        record.updated_at_ms = head.updated_at_ms;
        record.task_token = None;
    }

    /// Answers `token` (or records why it could not be read) and stores
    /// the outcome on the job.
    async fn answer_and_record(
        &self,
        recorder: &Recorder,
        job: &mut JobHead,
        token: Result<String, String>,
    ) {
        let Some(callback) = &self.callback else {
            return;
        };
        let outcome = match token {
            Ok(token) => answer(callback.as_ref(), job, &token).await,
            Err(e) => Err(e),
        };
        job.callback = Some(match outcome {
            Ok(sent) => CallbackOutcome::Sent(sent),
            Err(e) => {
                warn!(job = %job.id, error = %e, "workflow callback failed");
                CallbackOutcome::Failed(e)
            }
        });
        if let Err(e) = recorder.save_job(job).await {
            warn!(job = %job.id, error = %e, "could not record the callback outcome");
        }
    }
}

/// Answers `token` with how `job` ended.
async fn answer(
    callback: &dyn WorkflowCallbackPort,
    job: &JobHead,
    token: &str,
) -> Result<CallbackSent, String> {
    let summary = job.summary;
    let status = job.status;
    let sent = match status {
        JobStatus::Completed | JobStatus::CompletedWithErrors => {
            let output = serde_json::json!({
                "job_id": job.id.as_str(),
                "status": status.as_str(),
                "destination": job.destination.to_string(),
                "files": { "total": summary.total, "succeeded": summary.succeeded, "skipped": summary.skipped, "failed": summary.failed },
                "bytes": summary.bytes_done,
            });
            callback
                .succeed(token, &output.to_string())
                .await
                .map(|()| CallbackSent::TaskSuccess)
        }
        JobStatus::Cancelled => callback
            .fail(token, "ferry.JobCancelled", "the job was cancelled")
            .await
            .map(|()| CallbackSent::TaskFailure),
        _ => {
            let cause = job
                .failure
                .as_deref()
                .unwrap_or("the job failed")
                .to_owned();
            callback
                .fail(token, "ferry.JobFailed", &cause)
                .await
                .map(|()| CallbackSent::TaskFailure)
        }
    };
    sent.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ferry_domain::ports::events::MockJobEventsPort;
    use ferry_domain::ports::job_store::MockJobStorePort;
    use ferry_domain::ports::workflow::MockWorkflowCallbackPort;
    use ferry_domain::ports::{JobStoreError, JobUpdate};
    use ferry_domain::{Destination, Job, JobId, JobOptions};

    use super::*;
    use crate::checkpointing::SystemClock;

    /// A cancelled job with a task token, as its head.
    fn cancelled() -> JobHead {
        let mut job = Job::new(JobId::parse("sfn").unwrap(), Vec::new());
        job.cancel().unwrap();
        JobRecord {
            job,
            destination: Destination::parse("s3://bucket/p").unwrap(),
            options: JobOptions::default(),
            task_token: Some("tok-1".into()),
            owner: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            callback: None,
            export: None,
            last_event_seq: 0,
        }
        .head()
    }

    /// A notifier over `callback` and a recorder whose store answers the
    /// token read with `token` and keeps every saved job row.
    fn notifier(
        callback: MockWorkflowCallbackPort,
        token: Result<Option<String>, JobStoreError>,
    ) -> (WorkflowNotifier, Recorder, Arc<Mutex<Vec<JobUpdate>>>) {
        let saved = Arc::new(Mutex::new(Vec::new()));
        let mut store = MockJobStorePort::new();
        let token = Mutex::new(Some(token));
        store
            .expect_task_token()
            .times(1)
            .returning(move |_| token.lock().unwrap().take().unwrap());
        let s = saved.clone();
        store.expect_save_job().returning(move |u| {
            s.lock().unwrap().push(u.clone());
            Ok(())
        });
        let recorder = Recorder::new(
            Arc::new(store),
            Arc::new(MockJobEventsPort::new()),
            Arc::new(SystemClock),
            16,
        );
        let notifier = WorkflowNotifier {
            callback: Some(Arc::new(callback)),
        };
        (notifier, recorder, saved)
    }

    #[tokio::test]
    async fn the_token_is_read_alone_and_answered_with_how_the_job_ended() {
        let mut callback = MockWorkflowCallbackPort::new();
        callback.expect_succeed().never();
        callback
            .expect_fail()
            .withf(|token, error, _| token == "tok-1" && error == "ferry.JobCancelled")
            .times(1)
            .returning(|_, _, _| Ok(()));
        let (notifier, recorder, saved) = notifier(callback, Ok(Some("tok-1".into())));
        let mut head = cancelled();
        notifier.notify(&recorder, &mut head).await;
        let sent = Some(CallbackOutcome::Sent(CallbackSent::TaskFailure));
        assert_eq!(head.callback, sent);
        let saved = saved.lock().unwrap();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].callback, sent, "the outcome is stored");
    }

    #[tokio::test]
    async fn a_token_that_cannot_be_read_is_recorded_as_a_failed_callback() {
        let mut callback = MockWorkflowCallbackPort::new();
        callback.expect_succeed().never();
        callback.expect_fail().never();
        let (notifier, recorder, saved) = notifier(
            callback,
            Err(JobStoreError::Unavailable("disk gone".into())),
        );
        let mut head = cancelled();
        notifier.notify(&recorder, &mut head).await;
        let Some(CallbackOutcome::Failed(why)) = &head.callback else {
            panic!("{:?}", head.callback);
        };
        assert!(
            why.contains("could not read the job's task token") && why.contains("disk gone"),
            "{why}"
        );
        assert_eq!(saved.lock().unwrap()[0].callback, head.callback);
    }
}
