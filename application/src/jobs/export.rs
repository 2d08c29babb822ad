//! The export phase of a job that starts an export at a provider instead
//! of listing its files: StartExportJob + PollExportStatus with the job's
//! poll policy, until the manifest arrives (validated like a job's files),
//! the provider fails the export, or the deadline passes.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use ferry_domain::ports::{ExportPoll, ExportProviderPort, JobEventKind, JobRecord, JobStoreError};
use ferry_domain::source::redact_text;
use ferry_domain::{JobStatus, SourceUrl};

use super::recorder::Recorder;
use super::validate::validate_files;

/// How an export phase ended.
pub(super) enum ExportOutcome {
    /// The manifest arrived; the job is downloading.
    Ready,
    /// The job failed (the reason is on the job).
    Failed(String),
}

/// Starts and polls exports for jobs that do not list their files.
pub(super) struct ExportPhase {
    pub(super) provider: Option<Arc<dyn ExportProviderPort>>,
    /// Export phases running at once on this server (each holds one while
    /// it starts and polls; the rest wait, pending).
    pub(super) phases: Arc<tokio::sync::Semaphore>,
    pub(super) max_files_per_job: usize,
    pub(super) allow_file_sources: bool,
}

impl ExportPhase {
    /// StartExportJob at the provider + PollExportStatus until the manifest
    /// arrives, the provider fails the export, or the deadline passes. A
    /// restart continues from what is stored: an export already started is
    /// polled, never started twice.
    pub(super) async fn run(
        &self,
        recorder: &Recorder,
        record: &mut JobRecord,
    ) -> Result<ExportOutcome, JobStoreError> {
        let id = record.job.id.clone();
        let Some(provider) = self.provider.clone() else {
            return Ok(ExportOutcome::Failed(
                "this job starts an export, but no export provider is configured".into(),
            ));
        };
        let Some(mut export) = record.export.clone() else {
            return Ok(ExportOutcome::Failed(
                "the job has no export to start".into(),
            ));
        };
        let Ok(_phase) = self.phases.clone().acquire_owned().await else {
            return Ok(ExportOutcome::Failed(
                "the server is shutting down its export phases".into(),
            ));
        };
        if record.job.status() == JobStatus::Pending {
            record
                .job
                .start_export()
                .map_err(|e| JobStoreError::Unexpected(Box::new(e)))?;
            export.progress.started_at_ms = Some(recorder.now_ms());
            record.export = Some(export.clone());
            recorder.save_job(record).await?;
            recorder.emit(&id, JobEventKind::ExportStarted).await;
        }
        let policy = export.spec.poll;
        let started_at = export
            .progress
            .started_at_ms
            .unwrap_or_else(|| recorder.now_ms());
        let deadline_ms = i64::try_from(policy.deadline().as_millis()).unwrap_or(i64::MAX);
        let deadline_at = started_at.saturating_add(deadline_ms);
        let timed_out = || {
            format!(
                "the export was not ready within its deadline of {} ms",
                policy.deadline().as_millis()
            )
        };
        // Waits before the next call; false once the deadline has passed.
        let wait = |attempt: u32| async move {
            let left = deadline_at.saturating_sub(recorder.now_ms());
            if left <= 0 {
                return false;
            }
            let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
            tokio::time::sleep(policy.interval(attempt).min(left)).await;
            true
        };

        let status_url: SourceUrl = match export.progress.status_url.clone() {
            Some(url) => url,
            None => {
                let mut attempt = 0;
                loop {
                    match provider.start(&id, &export.spec).await {
                        Ok(url) => break url,
                        Err(e) if e.class().is_retryable() => {
                            warn!(job = %id, error = %e, "export start failed; retrying");
                            if !wait(attempt).await {
                                return Ok(ExportOutcome::Failed(timed_out()));
                            }
                            attempt += 1;
                        }
                        Err(e) => {
                            return Ok(ExportOutcome::Failed(format!(
                                "the export could not be started: {}",
                                redact_text(&e.to_string())
                            )));
                        }
                    }
                }
            }
        };
        if export.progress.status_url.is_none() {
            export.progress.status_url = Some(status_url.clone());
            record.export = Some(export.clone());
            recorder.save_job(record).await?;
            info!(job = %id, status_url = %status_url, "export started");
        }

        let mut attempt = 0;
        loop {
            if !wait(attempt).await {
                return Ok(ExportOutcome::Failed(timed_out()));
            }
            attempt += 1;
            let entries = match provider.poll(&status_url).await {
                Ok(ExportPoll::Pending) => continue,
                Ok(ExportPoll::Ready(entries)) => entries,
                Ok(ExportPoll::Failed(reason)) => {
                    return Ok(ExportOutcome::Failed(format!(
                        "the provider reported that the export failed: {}",
                        redact_text(&reason)
                    )));
                }
                Err(e) if e.class().is_retryable() => {
                    warn!(job = %id, error = %e, "export poll failed; polling again");
                    continue;
                }
                Err(e) => {
                    return Ok(ExportOutcome::Failed(format!(
                        "the export's status could not be read: {}",
                        redact_text(&e.to_string())
                    )));
                }
            };
            let files = match validate_files(
                &entries,
                "manifest.files",
                self.max_files_per_job,
                self.allow_file_sources,
                &record.options.attributes,
            ) {
                Ok(files) => files,
                Err(e) => {
                    return Ok(ExportOutcome::Failed(format!(
                        "the export's manifest is not valid: {}",
                        redact_text(&e.to_string())
                    )));
                }
            };
            let count = files.len();
            record
                .job
                .export_ready(files)
                .map_err(|e| JobStoreError::Unexpected(Box::new(e)))?;
            recorder
                .save_job_and_tasks_and_emit(record, JobEventKind::ExportReady { files: count })
                .await?;
            info!(job = %id, files = count, "export ready");
            return Ok(ExportOutcome::Ready);
        }
    }
}
