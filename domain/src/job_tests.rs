use super::*;

fn spec(n: usize) -> FileSpec {
    FileSpec {
        source: SourceUrl::parse(&format!("http://origin.test/{n}.bin")).unwrap(),
        key: ObjectKey::parse(&format!("out/{n}.bin")).unwrap(),
        expected_size: None,
        expected: Vec::new(),
        headers: Default::default(),
        attributes: Default::default(),
    }
}

fn job(n: usize) -> Job {
    Job::new(JobId::parse("job-1").unwrap(), (0..n).map(spec).collect())
}

fn sha() -> Checksum {
    Checksum::sha256(&"a".repeat(64)).unwrap()
}

fn failure() -> TaskFailure {
    TaskFailure {
        class: ErrorClass::Client,
        code: crate::ErrorCode::ChecksumMismatch,
        message: "sha256 mismatch".into(),
    }
}

#[test]
fn job_ids_are_validated() {
    assert!(JobId::parse("job_01-AB").is_ok());
    for bad in ["", "a b", "../x", &"x".repeat(65), "ü"] {
        assert!(JobId::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn statuses_round_trip_through_their_names() {
    for s in [
        JobStatus::Pending,
        JobStatus::Exporting,
        JobStatus::Downloading,
        JobStatus::Completed,
        JobStatus::CompletedWithErrors,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        assert_eq!(JobStatus::parse(s.as_str()), Some(s));
    }
    for s in [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ] {
        assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
    }
    assert_eq!(JobStatus::parse("done"), None);
}

#[test]
fn happy_path_completes() {
    let mut j = job(2);
    j.start_downloading().unwrap();
    for i in 0..2 {
        let t = j.task_mut(i).unwrap();
        t.start().unwrap();
        t.progress(50).unwrap();
        t.succeed(100, sha(), None).unwrap();
    }
    assert_eq!(j.complete().unwrap(), JobStatus::Completed);
    let s = j.summary();
    assert_eq!((s.total, s.succeeded, s.bytes_done), (2, 2, 200));
}

#[test]
fn some_failures_complete_with_errors_all_failures_fail() {
    let mut j = job(2);
    j.start_downloading().unwrap();
    j.task_mut(0).unwrap().start().unwrap();
    j.task_mut(0).unwrap().succeed(10, sha(), None).unwrap();
    j.task_mut(1).unwrap().start().unwrap();
    j.task_mut(1).unwrap().fail(failure()).unwrap();
    assert_eq!(j.complete().unwrap(), JobStatus::CompletedWithErrors);
    assert_eq!(j.tasks()[1].failure().unwrap().code, "checksum_mismatch");

    let mut all_bad = job(1);
    all_bad.start_downloading().unwrap();
    all_bad.task_mut(0).unwrap().start().unwrap();
    all_bad.task_mut(0).unwrap().fail(failure()).unwrap();
    assert_eq!(all_bad.complete().unwrap(), JobStatus::Failed);
    assert!(all_bad.failure().is_some());
}

#[test]
fn a_job_completes_only_when_every_task_is_terminal() {
    let mut j = job(3);
    j.start_downloading().unwrap();
    j.task_mut(0).unwrap().start().unwrap();
    assert_eq!(
        j.complete(),
        Err(TransitionError::TasksNotTerminal { pending: 3 })
    );
    assert_eq!(j.status(), JobStatus::Downloading);
}

#[test]
fn terminal_states_are_final() {
    let mut j = job(1);
    j.cancel().unwrap();
    assert_eq!(j.tasks()[0].status(), TaskStatus::Cancelled);
    assert!(j.cancel().is_err());
    assert!(j.fail("x".into()).is_err());
    assert!(j.start_downloading().is_err());
    assert!(j.complete().is_err());
    assert!(j.task_mut(0).is_err());

    let mut t = FileTask::new(0, spec(0));
    t.start().unwrap();
    t.succeed(1, sha(), None).unwrap();
    assert!(t.start().is_err());
    assert!(t.fail(failure()).is_err());
    assert!(t.cancel().is_err());
    assert!(t.requeue().is_err());
    assert!(t.progress(5).is_err());
}

#[test]
fn illegal_task_transitions_are_errors_with_names() {
    let mut t = FileTask::new(4, spec(4));
    assert_eq!(
        t.succeed(1, sha(), None),
        Err(TransitionError::Task {
            index: 4,
            from: "queued",
            to: "succeeded"
        })
    );
    assert!(t.fail(failure()).is_err());
    assert!(t.requeue().is_err());
    t.start().unwrap();
    assert!(t.start().is_err());
}

#[test]
fn retries_count_attempts_and_reset_progress() {
    let mut t = FileTask::new(0, spec(0));
    t.start().unwrap();
    t.progress(70).unwrap();
    t.progress(30).unwrap();
    assert_eq!(
        t.bytes_done(),
        70,
        "progress is monotonic within an attempt"
    );
    t.requeue().unwrap();
    t.start().unwrap();
    assert_eq!((t.attempts(), t.bytes_done()), (2, 0));
}

#[test]
fn export_flow_and_restart_requeue() {
    let mut j = Job::new(JobId::parse("exp").unwrap(), Vec::new());
    j.start_export().unwrap();
    assert!(j.start_downloading().is_err());
    j.export_ready(vec![spec(0), spec(1)]).unwrap();
    assert_eq!(j.status(), JobStatus::Downloading);
    j.task_mut(1).unwrap().start().unwrap();
    assert_eq!(j.requeue_running(), 1);
    assert_eq!(j.summary().queued, 2);
    // A job with an explicit list cannot start an export.
    let mut explicit = job(1);
    assert!(explicit.start_export().is_err());
}

#[test]
fn export_failure_fails_the_job() {
    let mut j = Job::new(JobId::parse("exp").unwrap(), Vec::new());
    j.start_export().unwrap();
    j.fail("provider answered failed".into()).unwrap();
    assert_eq!(j.status(), JobStatus::Failed);
    assert_eq!(j.failure(), Some("provider answered failed"));
}

#[test]
fn summary_counts_are_consistent() {
    let mut j = job(5);
    j.start_downloading().unwrap();
    j.task_mut(0).unwrap().start().unwrap();
    j.task_mut(1).unwrap().start().unwrap();
    j.task_mut(1).unwrap().succeed(9, sha(), None).unwrap();
    j.task_mut(2).unwrap().cancel().unwrap();
    let s = j.summary();
    assert_eq!(
        s.queued + s.running + s.succeeded + s.failed + s.cancelled,
        s.total
    );
    assert_eq!(
        (s.queued, s.running, s.succeeded, s.cancelled),
        (2, 1, 1, 1)
    );
}

#[test]
fn a_task_expires_whether_running_or_waiting_but_not_once_over() {
    let mut j = job(3);
    j.start_downloading().unwrap();
    j.task_mut(0).unwrap().expire(failure()).unwrap();
    assert_eq!(j.tasks()[0].status(), TaskStatus::Failed);
    assert_eq!(j.tasks()[0].attempts(), 0, "no attempt is invented");
    let t = j.task_mut(1).unwrap();
    t.start().unwrap();
    t.expire(failure()).unwrap();
    assert_eq!(t.failure(), Some(&failure()));
    let t = j.task_mut(2).unwrap();
    t.start().unwrap();
    t.succeed(1, sha(), None).unwrap();
    assert!(t.expire(failure()).is_err());
    assert_eq!(t.status(), TaskStatus::Succeeded);
}

/// A job ends the same whether its tasks are at hand or only their counts
/// (a head, as the store sums them): the one rule, `JobSummary::outcome`.
#[test]
fn a_head_completes_as_its_job_does() {
    use crate::ports::JobRecord;
    // Per file: 0 succeeds, 1 fails, 2 is cancelled, 3 is skipped.
    let mixes: [&[u8]; 7] = [&[0, 0], &[0, 1], &[1, 1], &[2], &[3, 3], &[3, 1], &[]];
    for mix in mixes {
        let mut j = job(mix.len());
        j.start_downloading().unwrap();
        for (i, end) in mix.iter().enumerate() {
            let t = j.task_mut(i).unwrap();
            match end {
                0 => {
                    t.start().unwrap();
                    t.succeed(5, sha(), None).unwrap();
                }
                1 => {
                    t.start().unwrap();
                    t.fail(failure()).unwrap();
                }
                2 => t.cancel().unwrap(),
                _ => {
                    t.start().unwrap();
                    t.skip(0, sha()).unwrap();
                }
            }
        }
        let record = JobRecord {
            job: j.clone(),
            destination: crate::Destination::parse("s3://bucket/p").unwrap(),
            options: JobOptions::default(),
            task_token: None,
            owner: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            callback: None,
            export: None,
            last_event_seq: 0,
        };
        let mut head = record.head();
        let by_head = head.complete();
        let by_job = j.complete();
        assert_eq!(by_head, by_job, "{mix:?}");
        assert_eq!(head.status, j.status(), "{mix:?}");
        assert_eq!(head.failure.as_deref(), j.failure(), "{mix:?}");
        assert!(head.complete().is_err(), "a head completes once");
    }
    // Not every file over: neither completes.
    let mut j = job(2);
    j.start_downloading().unwrap();
    j.task_mut(0).unwrap().start().unwrap();
    let summary = j.summary();
    assert_eq!(
        summary.outcome(),
        Err(TransitionError::TasksNotTerminal { pending: 2 })
    );
}
