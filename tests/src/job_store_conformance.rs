//! The job store conformance suite: the same assertions for every
//! `JobStorePort` (SQLite, PostgreSQL).

use ferry_domain::ports::{
    JobEvent, JobEventKind, JobFilter, JobRecord, JobStoreError, JobStorePort, JobWrite,
};
use std::time::Duration;

use ferry_domain::{
    Checksum, Destination, ErrorClass, Export, ExportProgress, ExportSpec, FileSpec, FileTask,
    IfExists, Job, JobId, JobOptions, JobStatus, ObjectKey, PollPolicy, RequestedAttributes,
    SourceUrl, TaskFailure, TaskStatus,
};

fn spec(i: usize) -> FileSpec {
    FileSpec {
        source: SourceUrl::parse(&format!("https://u:secret@origin.test/{i}.bin?sig=abc")).unwrap(),
        key: ObjectKey::parse(&format!("out/{i}.bin")).unwrap(),
        expected_size: Some(10 + i as u64),
        expected: vec![Checksum::sha256(&"a".repeat(64)).unwrap()],
        headers: Default::default(),
        // Every other file has attributes of its own (stored per task).
        attributes: if i % 2 == 1 {
            RequestedAttributes {
                content_type: Some("text/csv".into()),
                metadata: vec![("file".into(), i.to_string())],
                sse: Some("aws:kms".into()),
                sse_kms_key_id: Some("key-1".into()),
                ..RequestedAttributes::default()
            }
            .validate()
            .unwrap()
        } else {
            Default::default()
        },
    }
}

pub fn record(id: &str, files: usize, created_at_ms: i64) -> JobRecord {
    JobRecord {
        job: Job::new(JobId::parse(id).unwrap(), (0..files).map(spec).collect()),
        destination: Destination::parse("s3://bucket/prefix").unwrap(),
        options: JobOptions {
            attributes: RequestedAttributes {
                cache_control: Some("max-age=60".into()),
                tags: vec![("team".into(), "data".into())],
                ..RequestedAttributes::default()
            }
            .validate()
            .unwrap(),
            if_exists: IfExists::Refuse,
        },
        task_token: Some("token-1".into()),
        owner: Some("alice".into()),
        created_at_ms,
        updated_at_ms: created_at_ms,
        callback: None,
        export: None,
        last_event_seq: 0,
    }
}

/// A job that starts an export at a provider (no files yet).
pub fn export_record(id: &str, created_at_ms: i64) -> JobRecord {
    let spec = ExportSpec {
        start_url: SourceUrl::parse("https://provider.example/exports?sig=s3cret").unwrap(),
        request_body: Some(r#"{"dataset":"d1"}"#.into()),
        poll: PollPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(200),
            Duration::from_secs(30),
        )
        .unwrap(),
    };
    JobRecord {
        export: Some(Export {
            spec,
            progress: ExportProgress::default(),
        }),
        ..record(id, 0, created_at_ms)
    }
}

/// Runs every assertion; ids are prefixed with `ns` so that runs sharing a
/// database never collide.
pub async fn run(store: &dyn JobStorePort, ns: &str) {
    let id = |s: &str| format!("{ns}-{s}");
    store.ping().await.unwrap();

    // Create and read back, secrets and all (the runner needs the full URL).
    let rec = record(&id("a"), 3, 1_000);
    store.create(&rec).await.unwrap();
    let got = store.get(&rec.job.id).await.unwrap().unwrap();
    assert_eq!(got, rec);
    assert_eq!(
        got.job.tasks()[2].spec.source.expose(),
        rec.job.tasks()[2].spec.source.expose()
    );
    assert!(matches!(
        store.create(&rec).await,
        Err(JobStoreError::AlreadyExists(_))
    ));
    assert!(
        store
            .get(&JobId::parse(&id("missing")).unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // Task and job state survive a round trip.
    let mut rec = got;
    rec.job.start_downloading().unwrap();
    {
        let t = rec.job.task_mut(0).unwrap();
        t.start().unwrap();
        t.succeed(
            10,
            Checksum::sha256(&"b".repeat(64)).unwrap(),
            Some(Checksum::md5(&"c".repeat(32)).unwrap()),
        )
        .unwrap();
    }
    {
        let t = rec.job.task_mut(1).unwrap();
        t.start().unwrap();
        t.fail(TaskFailure {
            class: ErrorClass::Client,
            code: ferry_domain::ErrorCode::ChecksumMismatch,
            message: "bad".into(),
        })
        .unwrap();
    }
    rec.job.task_mut(2).unwrap().start().unwrap();
    rec.updated_at_ms = 2_000;
    store.save_job(&rec.update()).await.unwrap();
    let tasks: Vec<JobWrite> = rec
        .job
        .tasks()
        .iter()
        .map(|t| JobWrite::Task {
            job: rec.job.id.clone(),
            task: Box::new(t.clone()),
            fence: None,
        })
        .collect();
    assert_eq!(
        store.write_batch(&tasks).await.unwrap(),
        vec![None; tasks.len()]
    );
    let got = store.get(&rec.job.id).await.unwrap().unwrap();
    assert_eq!(got, rec);
    assert_eq!(
        got.job.tasks()[1].failure().unwrap().code,
        "checksum_mismatch"
    );
    assert_eq!(got.job.tasks()[2].status(), TaskStatus::Running);

    // Unfinished jobs are found; terminal ones are not.
    let done = {
        let mut r = record(&id("done"), 1, 1_500);
        r.job.cancel().unwrap();
        r
    };
    store.create(&done).await.unwrap();
    let unfinished = store.unfinished().await.unwrap();
    assert!(unfinished.contains(&rec.job.id));
    assert!(!unfinished.contains(&done.job.id));

    // Replace tasks (a restart re-queues the running one).
    let mut restarted = got.clone();
    assert_eq!(restarted.job.requeue_running(), 1);
    store
        .replace_tasks(&restarted.job.id, restarted.job.tasks())
        .await
        .unwrap();
    let got = store.get(&restarted.job.id).await.unwrap().unwrap();
    assert_eq!(got.job.tasks()[2].status(), TaskStatus::Queued);
    restarted.updated_at_ms = got.updated_at_ms;
    assert_eq!(got, restarted);

    // Events get consecutive sequence numbers per job and replay in order.
    for k in 0..5u64 {
        let e = JobEvent {
            job_id: rec.job.id.clone(),
            seq: 0,
            at_ms: 3_000 + i64::try_from(k).unwrap(),
            kind: JobEventKind::FileProgress {
                index: 0,
                bytes_done: k,
                total: Some(10),
            },
        };
        assert_eq!(
            store.write_batch(&[JobWrite::Event(e)]).await.unwrap(),
            vec![Some(k + 1)]
        );
    }
    let other = JobEvent {
        job_id: done.job.id.clone(),
        seq: 0,
        at_ms: 1,
        kind: JobEventKind::JobCancelled,
    };
    assert_eq!(
        store.write_batch(&[JobWrite::Event(other)]).await.unwrap(),
        vec![Some(1)]
    );
    let after2 = store.events_after(&rec.job.id, 2, 100).await.unwrap();
    assert_eq!(
        after2.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(
        after2[0].kind,
        JobEventKind::FileProgress {
            index: 0,
            bytes_done: 2,
            total: Some(10)
        }
    );
    assert_eq!(
        store.events_after(&rec.job.id, 0, 2).await.unwrap().len(),
        2
    );
    assert_eq!(
        store
            .get(&rec.job.id)
            .await
            .unwrap()
            .unwrap()
            .last_event_seq,
        5,
        "a read job carries its latest event's sequence number"
    );
    let ghost = JobEvent {
        job_id: JobId::parse(&id("ghost")).unwrap(),
        seq: 0,
        at_ms: 1,
        kind: JobEventKind::JobCancelled,
    };
    assert!(matches!(
        store.write_batch(&[JobWrite::Event(ghost)]).await,
        Err(JobStoreError::NotFound(_))
    ));

    // An export job: its export survives, with its progress, and its tasks
    // arrive with the manifest.
    let mut exp = export_record(&id("export"), 1_200);
    store.create(&exp).await.unwrap();
    assert_eq!(store.get(&exp.job.id).await.unwrap().unwrap(), exp);
    exp.job.start_export().unwrap();
    if let Some(e) = exp.export.as_mut() {
        e.progress.status_url =
            Some(SourceUrl::parse("https://provider.example/exports/7?sig=x").unwrap());
        e.progress.started_at_ms = Some(1_234);
    }
    store.save_job(&exp.update()).await.unwrap();
    assert_eq!(store.get(&exp.job.id).await.unwrap().unwrap(), exp);
    assert!(store.unfinished().await.unwrap().contains(&exp.job.id));
    exp.job.export_ready((0..2).map(spec).collect()).unwrap();
    store
        .replace_tasks(&exp.job.id, exp.job.tasks())
        .await
        .unwrap();
    store.save_job(&exp.update()).await.unwrap();
    let got_exp = store.get(&exp.job.id).await.unwrap().unwrap();
    assert_eq!(got_exp, exp);
    assert_eq!(got_exp.job.status(), JobStatus::Downloading);
    assert_eq!(got_exp.job.tasks().len(), 2);

    // Listing: newest first, paged by cursor, filtered by status.
    for i in 0..5 {
        store
            .create(&record(&id(&format!("p{i}")), 1, 10_000 + i))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(&JobFilter {
                owner: None,
                status: Some(JobStatus::Pending),
                limit: 2,
                cursor: cursor.clone(),
            })
            .await
            .unwrap();
        seen.extend(page.jobs.iter().map(|h| h.id.to_string()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mine: Vec<String> = seen
        .into_iter()
        .filter(|s| s.starts_with(&id("p")))
        .collect();
    assert_eq!(
        mine,
        (0..5)
            .rev()
            .map(|i| id(&format!("p{i}")))
            .collect::<Vec<_>>()
    );
    let cancelled = store
        .list(&JobFilter {
            owner: None,
            status: Some(JobStatus::Cancelled),
            limit: 100,
            cursor: None,
        })
        .await
        .unwrap();
    assert!(cancelled.jobs.iter().any(|h| h.id == done.job.id));
    assert!(
        cancelled
            .jobs
            .iter()
            .all(|h| h.status == JobStatus::Cancelled)
    );
    // Filtered by owner: a scoped caller's listing.
    let owner = format!("owner-{ns}");
    let owned = JobRecord {
        owner: Some(owner.clone()),
        ..record(&id("owned"), 1, 20_000)
    };
    store.create(&owned).await.unwrap();
    let mine = store
        .list(&JobFilter {
            owner: Some(owner.clone()),
            status: None,
            limit: 100,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(
        mine.jobs.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
        vec![owned.job.id.clone()]
    );
    assert_eq!(mine.jobs[0].owner.as_deref(), Some(owner.as_str()));
    assert!(matches!(
        store
            .list(&JobFilter {
                owner: None,
                status: None,
                limit: 10,
                cursor: Some("garbage".into())
            })
            .await,
        Err(JobStoreError::BadCursor)
    ));

    // A file's request headers are kept while the job runs (the runner
    // needs them after a restart) and are gone once it ends.
    let mut with_headers = record(&id("headers"), 2, 9_000);
    let secret = ferry_domain::RequestedHeaders(vec![
        ("Authorization".into(), "Bearer conformance-secret".into()),
        ("X-Other".into(), "2".into()),
    ])
    .validate()
    .unwrap();
    let mut job_files: Vec<FileSpec> = (0..2).map(spec).collect();
    job_files[0].headers = secret.clone();
    with_headers.job = Job::new(with_headers.job.id.clone(), job_files);
    store.create(&with_headers).await.unwrap();
    let got = store.get(&with_headers.job.id).await.unwrap().unwrap();
    assert_eq!(got.job.tasks()[0].spec.headers, secret);
    assert!(got.job.tasks()[1].spec.headers.is_empty());
    with_headers.job.cancel().unwrap();
    store.save_job(&with_headers.update()).await.unwrap();
    let got = store.get(&with_headers.job.id).await.unwrap().unwrap();
    assert_eq!(got.job.status(), JobStatus::Cancelled);
    assert!(
        got.job.tasks()[0].spec.headers.is_empty(),
        "headers outlived the job"
    );
    // An ended job keeps no full URL; its task token stays until the
    // callback is settled, then goes.
    for task in got.job.tasks() {
        let kept = task.spec.source.expose();
        assert!(!kept.contains("secret") && !kept.contains("abc"), "{kept}");
        assert_eq!(kept, task.spec.source.redacted());
    }
    assert_eq!(got.task_token.as_deref(), Some("token-1"));
    with_headers.callback = Some(ferry_domain::ports::CallbackOutcome::Sent(
        ferry_domain::ports::CallbackSent::TaskFailure,
    ));
    store.save_job(&with_headers.update()).await.unwrap();
    let got = store.get(&with_headers.job.id).await.unwrap().unwrap();
    assert_eq!(got.task_token, None, "the token outlived its callback");
    // An ended export job keeps its provider URLs redacted.
    let mut exported = export_record(&id("export-ended"), 9_500);
    store.create(&exported).await.unwrap();
    exported.job.fail("provider gone".into()).unwrap();
    store.save_job(&exported.update()).await.unwrap();
    let got = store.get(&exported.job.id).await.unwrap().unwrap();
    let start = got.export.unwrap().spec.start_url.expose().to_owned();
    assert!(!start.contains("s3cret"), "{start}");

    keyed(store, ns).await;
    leases(store, ns).await;
    task_reads(store, ns).await;
    batched_writes(store, ns).await;
    many_tasks(store, ns).await;
    heads_and_file_pages(store, ns).await;
    progress_compaction(store, ns).await;
}

/// A job's head is its record without the tasks, their counts and bytes
/// summed by the store (the same as the domain sums them); a listing
/// gives heads; a job's tasks come a page at a time, by index, filtered
/// by status.
async fn heads_and_file_pages(store: &dyn JobStorePort, ns: &str) {
    let mut rec = record(&format!("{ns}-heads"), 7, 40_000);
    rec.job.start_downloading().unwrap();
    store.create(&rec).await.unwrap();
    store.save_job(&rec.update()).await.unwrap();
    let id = rec.job.id.clone();
    for i in [0, 3, 5] {
        let t = rec.job.task_mut(i).unwrap();
        t.start().unwrap();
        t.succeed(
            100 + i as u64,
            Checksum::sha256(&"e".repeat(64)).unwrap(),
            None,
        )
        .unwrap();
    }
    {
        let t = rec.job.task_mut(1).unwrap();
        t.start().unwrap();
        t.fail(TaskFailure {
            class: ErrorClass::Client,
            code: ferry_domain::ErrorCode::ChecksumMismatch,
            message: "bad".into(),
        })
        .unwrap();
    }
    rec.job.task_mut(2).unwrap().start().unwrap();
    rec.job.task_mut(2).unwrap().progress(7).unwrap();
    store.replace_tasks(&id, rec.job.tasks()).await.unwrap();

    let head = store.head(&id).await.unwrap().unwrap();
    let expected = rec.job.summary();
    assert_eq!(expected.succeeded, 3);
    assert_eq!(head.summary, expected);
    assert_eq!(head.summary.bytes_done, 100 + 103 + 105 + 7);
    assert_eq!(head.status, JobStatus::Downloading);
    assert_eq!(head.destination, rec.destination);
    assert_eq!(head.options, rec.options);
    assert_eq!(head.owner, rec.owner);
    assert!(head.has_task_token);
    // The same as the domain's head of the whole record.
    let whole = store.get(&id).await.unwrap().unwrap();
    assert_eq!(head, whole.head());
    assert!(
        store
            .head(&JobId::parse(&format!("{ns}-heads-missing")).unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // A job without tasks (an export not ready) sums to zero.
    let empty = export_record(&format!("{ns}-heads-empty"), 40_001);
    store.create(&empty).await.unwrap();
    let h = store.head(&empty.job.id).await.unwrap().unwrap();
    assert_eq!(h.summary, ferry_domain::JobSummary::default());
    // A listing's heads carry the same sums.
    let listed = store
        .list(&JobFilter {
            owner: None,
            status: Some(JobStatus::Downloading),
            limit: 1000,
            cursor: None,
        })
        .await
        .unwrap();
    let mine = listed.jobs.iter().find(|h| h.id == id).unwrap();
    assert_eq!(mine.summary, expected);

    // Pages of tasks, in index order.
    let page = |after: Option<usize>, status: Option<TaskStatus>, limit: u32| {
        let id = id.clone();
        async move {
            store
                .tasks(
                    &id,
                    &ferry_domain::ports::TaskFilter {
                        after,
                        status,
                        limit,
                    },
                )
                .await
                .unwrap()
                .iter()
                .map(|t| t.index)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, None, 3).await, vec![0, 1, 2]);
    assert_eq!(page(Some(2), None, 3).await, vec![3, 4, 5]);
    assert_eq!(page(Some(5), None, 3).await, vec![6]);
    assert!(page(Some(6), None, 3).await.is_empty());
    assert_eq!(
        page(None, Some(TaskStatus::Succeeded), 10).await,
        vec![0, 3, 5]
    );
    assert_eq!(page(Some(0), Some(TaskStatus::Succeeded), 1).await, vec![3]);
    assert_eq!(page(None, Some(TaskStatus::Failed), 10).await, vec![1]);
    let first = store
        .tasks(
            &id,
            &ferry_domain::ports::TaskFilter {
                after: None,
                status: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(first, rec.job.tasks().to_vec(), "whole tasks, as stored");
    let missing = JobId::parse(&format!("{ns}-heads-missing")).unwrap();
    assert!(
        store
            .tasks(
                &missing,
                &ferry_domain::ports::TaskFilter {
                    limit: 5,
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .is_empty()
    );
}

/// When a job has ended, its progress events but the last of each file
/// go; every other event stays, in order; a running job keeps them all.
async fn progress_compaction(store: &dyn JobStorePort, ns: &str) {
    let mut rec = record(&format!("{ns}-compact"), 2, 50_000);
    rec.job.start_downloading().unwrap();
    store.create(&rec).await.unwrap();
    store.save_job(&rec.update()).await.unwrap();
    let id = rec.job.id.clone();
    let event = |kind: JobEventKind| {
        JobWrite::Event(JobEvent {
            job_id: id.clone(),
            seq: 0,
            at_ms: 1,
            kind,
        })
    };
    let progress = |index: usize, bytes_done: u64| {
        event(JobEventKind::FileProgress {
            index,
            bytes_done,
            total: Some(100),
        })
    };
    let mut writes = vec![
        event(JobEventKind::FileStarted {
            index: 0,
            attempt: 1,
        }),
        event(JobEventKind::FileStarted {
            index: 1,
            attempt: 1,
        }),
    ];
    for b in 1..=5 {
        writes.push(progress(0, b * 10));
        writes.push(progress(1, b * 20));
    }
    store.write_batch(&writes).await.unwrap();
    let all = store.events_after(&id, 0, 1000).await.unwrap();
    assert_eq!(all.len(), 12);
    // Running: nothing goes.
    assert_eq!(store.compact_progress(&id).await.unwrap(), 0);
    assert_eq!(store.events_after(&id, 0, 1000).await.unwrap(), all);

    rec.job.cancel().unwrap();
    store.save_job(&rec.update()).await.unwrap();
    store
        .write_batch(&[event(JobEventKind::JobCancelled)])
        .await
        .unwrap();
    assert_eq!(store.compact_progress(&id).await.unwrap(), 8);
    let kept = store.events_after(&id, 0, 1000).await.unwrap();
    let kinds: Vec<(u64, &str)> = kept.iter().map(|e| (e.seq, e.kind.name())).collect();
    assert_eq!(
        kinds,
        vec![
            (1, "file_started"),
            (2, "file_started"),
            (11, "file_progress"),
            (12, "file_progress"),
            (13, "job_cancelled"),
        ]
    );
    assert!(matches!(
        kept[2].kind,
        JobEventKind::FileProgress {
            index: 0,
            bytes_done: 50,
            ..
        }
    ));
    assert!(matches!(
        kept[3].kind,
        JobEventKind::FileProgress {
            index: 1,
            bytes_done: 100,
            ..
        }
    ));
    // Again: nothing more.
    assert_eq!(store.compact_progress(&id).await.unwrap(), 0);
}

/// One task read with its job's status, destination and options; a job's
/// first unfinished tasks in index order (finished ones skipped, at most
/// the limit), or just its status with a limit of 0.
/// One batch of many writes (as the group commit sends): each task ends in
/// the state last written for it in the batch (a fast file's start and end
/// may share one), a task the store does not hold yet is inserted, and
/// every event is stored under its own number, in order, across jobs.
async fn batched_writes(store: &dyn JobStorePort, ns: &str) {
    let mut a = record(&format!("{ns}-batch-a"), 40, 40_000);
    let mut b = record(&format!("{ns}-batch-b"), 2, 40_001);
    for r in [&mut a, &mut b] {
        r.job.start_downloading().unwrap();
        store.create(r).await.unwrap();
        store.save_job(&r.update()).await.unwrap();
    }
    let task = |job: &JobId, t: &FileTask| JobWrite::Task {
        job: job.clone(),
        task: Box::new(t.clone()),
        fence: None,
    };
    let event = |job: &JobId, index: usize| {
        JobWrite::Event(JobEvent {
            job_id: job.clone(),
            seq: 0,
            at_ms: 41_000,
            kind: JobEventKind::FileStarted { index, attempt: 1 },
        })
    };
    let (a_id, b_id) = (a.job.id.clone(), b.job.id.clone());
    let mut writes = Vec::new();
    // Every task of `a` starts; the even ones also end in the batch.
    for i in 0..40 {
        let t = a.job.task_mut(i).unwrap();
        t.start().unwrap();
        let started = t.clone();
        writes.push(task(&a_id, &started));
        writes.push(event(&a_id, i));
        if i % 2 == 0 {
            t.succeed(
                10 + i as u64,
                Checksum::sha256(&"f".repeat(64)).unwrap(),
                Some(Checksum::md5(&"0".repeat(32)).unwrap()),
            )
            .unwrap();
            let ended = t.clone();
            writes.push(task(&a_id, &ended));
        }
    }
    // Another job's task and event in the same batch.
    b.job.task_mut(1).unwrap().start().unwrap();
    writes.push(task(&b_id, &b.job.tasks()[1]));
    writes.push(event(&b_id, 1));
    // A task `b` does not hold yet.
    let mut extra = FileTask::new(2, spec(2));
    extra.start().unwrap();
    writes.push(task(&b_id, &extra));
    let seqs = store.write_batch(&writes).await.unwrap();
    let numbered: Vec<u64> = seqs.iter().flatten().copied().collect();
    let expected: Vec<u64> = (1..=40).chain([1]).collect();
    assert_eq!(numbered, expected, "each job's events numbered in order");

    let got = store.get(&a.job.id).await.unwrap().unwrap();
    assert_eq!(
        got.job.tasks(),
        a.job.tasks(),
        "the last state of each task"
    );
    assert_eq!(got.job.tasks()[4].status(), TaskStatus::Succeeded);
    assert_eq!(got.job.tasks()[5].status(), TaskStatus::Running);
    let events = store.events_after(&a.job.id, 0, 100).await.unwrap();
    assert_eq!(events.len(), 40);
    for (k, e) in events.iter().enumerate() {
        assert_eq!(e.seq, k as u64 + 1);
        assert_eq!(
            e.kind,
            JobEventKind::FileStarted {
                index: k,
                attempt: 1
            }
        );
    }
    let got_b = store.get(&b.job.id).await.unwrap().unwrap();
    assert_eq!(got_b.job.tasks()[1].status(), TaskStatus::Running);
    let stored_extra = store.task(&b.job.id, 2).await.unwrap().unwrap();
    assert_eq!(stored_extra.task, extra);
    assert_eq!(store.events_after(&b.job.id, 0, 10).await.unwrap().len(), 1);
}

/// A job of hundreds of files is stored whole (its tasks go in several
/// multi-row statements: every row lands once, with every field), and so
/// is a replacement of its tasks in mixed states.
async fn many_tasks(store: &dyn JobStorePort, ns: &str) {
    let headers = ferry_domain::RequestedHeaders(vec![("Authorization".into(), "Bearer x".into())])
        .validate()
        .unwrap();
    let mut rec = record(&format!("{ns}-many"), 1, 42_000);
    let files: Vec<FileSpec> = (0..300)
        .map(|i| {
            let mut file = spec(i);
            if i % 7 == 3 {
                file.headers = headers.clone();
            }
            file
        })
        .collect();
    rec.job = Job::new(rec.job.id.clone(), files);
    store.create(&rec).await.unwrap();
    let got = store.get(&rec.job.id).await.unwrap().unwrap();
    assert_eq!(got.job.tasks(), rec.job.tasks(), "300 tasks stored whole");
    assert_eq!(got.job.tasks()[3].spec.headers, headers);

    rec.job.start_downloading().unwrap();
    let replaced: Vec<FileTask> = (0..260)
        .map(|i| {
            let mut t = FileTask::new(i, spec(i + 1000));
            if i % 3 > 0 {
                t.start().unwrap();
            }
            if i % 3 == 2 {
                t.succeed(i as u64, Checksum::sha256(&"e".repeat(64)).unwrap(), None)
                    .unwrap();
            }
            t
        })
        .collect();
    store.replace_tasks(&rec.job.id, &replaced).await.unwrap();
    let got = store.get(&rec.job.id).await.unwrap().unwrap();
    assert_eq!(
        got.job.tasks(),
        replaced.as_slice(),
        "260 tasks replaced whole"
    );
    assert_eq!(got.job.tasks()[5].status(), TaskStatus::Succeeded);
    assert_eq!(got.job.tasks()[4].status(), TaskStatus::Running);

    // A job of more tasks than the store rewrites a page at a time ends
    // from its row alone (no task in the write): every source with a
    // secret keeps its redacted form, one without keeps itself, and the
    // task token is read alone.
    let mut big = record(&format!("{ns}-many-end"), 1, 43_000);
    let files: Vec<FileSpec> = (0..1_300)
        .map(|i| {
            let mut file = spec(i);
            if i % 5 == 0 {
                file.source = SourceUrl::parse(&format!("https://origin.test/plain/{i}")).unwrap();
            }
            file
        })
        .collect();
    big.job = Job::new(big.job.id.clone(), files);
    store.create(&big).await.unwrap();
    assert_eq!(
        store.task_token(&big.job.id).await.unwrap().as_deref(),
        Some("token-1")
    );
    let missing = JobId::parse(&format!("{ns}-no-such-job")).unwrap();
    assert_eq!(store.task_token(&missing).await.unwrap(), None);
    big.job.start_downloading().unwrap();
    store.save_job(&big.update()).await.unwrap();
    let mut head = store.head(&big.job.id).await.unwrap().unwrap();
    head.status = JobStatus::Cancelled;
    store.save_job(&head.update()).await.unwrap();
    let got = store.get(&big.job.id).await.unwrap().unwrap();
    assert_eq!(got.job.status(), JobStatus::Cancelled);
    assert_eq!(got.job.tasks().len(), 1_300);
    for task in got.job.tasks() {
        let kept = task.spec.source.expose();
        if task.index % 5 == 0 {
            assert_eq!(kept, format!("https://origin.test/plain/{}", task.index));
        } else {
            assert_eq!(
                kept,
                format!("https://origin.test/{}.bin?sig=REDACTED", task.index),
                "task {}",
                task.index
            );
        }
    }
}

async fn task_reads(store: &dyn JobStorePort, ns: &str) {
    let mut rec = record(&format!("{ns}-reads"), 5, 30_000);
    rec.owner = Some(format!("{ns}-reads-owner"));
    rec.job.start_downloading().unwrap();
    store.create(&rec).await.unwrap();
    store.save_job(&rec.update()).await.unwrap();
    let id = rec.job.id.clone();
    for i in [0, 2] {
        let t = rec.job.task_mut(i).unwrap();
        t.start().unwrap();
        t.succeed(10, Checksum::sha256(&"e".repeat(64)).unwrap(), None)
            .unwrap();
    }
    rec.job.task_mut(3).unwrap().start().unwrap();
    store.replace_tasks(&id, rec.job.tasks()).await.unwrap();

    let one = store.task(&id, 3).await.unwrap().unwrap();
    assert_eq!(one.status, JobStatus::Downloading);
    assert_eq!(one.job.destination, rec.destination);
    assert_eq!(one.job.options, rec.options);
    assert_eq!(one.job.owner, rec.owner);
    assert_eq!(one.task, rec.job.tasks()[3]);
    assert_eq!(one.task.status(), TaskStatus::Running);
    assert!(store.task(&id, 5).await.unwrap().is_none());
    let missing = JobId::parse(&format!("{ns}-reads-missing")).unwrap();
    assert!(store.task(&missing, 0).await.unwrap().is_none());

    let open = store.open_tasks(&id, 10).await.unwrap().unwrap();
    assert_eq!(open.status, JobStatus::Downloading);
    assert_eq!(open.open, vec![1, 3, 4]);
    assert_eq!(
        store.open_tasks(&id, 2).await.unwrap().unwrap().open,
        vec![1, 3]
    );
    assert!(
        store
            .open_tasks(&id, 0)
            .await
            .unwrap()
            .unwrap()
            .open
            .is_empty()
    );
    assert!(store.open_tasks(&missing, 1).await.unwrap().is_none());

    // The same window, whole, with what the runs need of the job.
    let batch = store.open_task_batch(&id, 10).await.unwrap().unwrap();
    assert_eq!(batch.status, JobStatus::Downloading);
    assert_eq!(batch.job, one.job);
    let tasks = rec.job.tasks();
    assert_eq!(
        batch.tasks,
        vec![tasks[1].clone(), tasks[3].clone(), tasks[4].clone()]
    );
    let two = store.open_task_batch(&id, 2).await.unwrap().unwrap();
    assert_eq!(two.tasks, vec![tasks[1].clone(), tasks[3].clone()]);
    assert!(
        store
            .open_task_batch(&id, 0)
            .await
            .unwrap()
            .unwrap()
            .tasks
            .is_empty()
    );
    assert!(store.open_task_batch(&missing, 1).await.unwrap().is_none());
    rec.job.cancel().unwrap();
    store.save_job(&rec.update()).await.unwrap();
    store.replace_tasks(&id, rec.job.tasks()).await.unwrap();
    let over = store.open_tasks(&id, 10).await.unwrap().unwrap();
    assert_eq!(over.status, JobStatus::Cancelled);
    assert!(over.open.is_empty(), "{:?}", over.open);
    let over = store.open_task_batch(&id, 10).await.unwrap().unwrap();
    assert_eq!(over.status, JobStatus::Cancelled);
    assert!(over.tasks.is_empty(), "{:?}", over.tasks);
}

/// Cluster leases: a claim takes a task under a new epoch (only while it is
/// queued or running); a write fenced with an older epoch fails
/// `LeaseLost` and writes nothing (nor the rest of its batch); a task over
/// cannot be claimed or written; a conditional job write (`JobWrite::Job`
/// with `from`) moves a job once, with its event.
async fn leases(store: &dyn JobStorePort, ns: &str) {
    let mut rec = record(&format!("{ns}-leases"), 2, 20_000);
    rec.job.start_downloading().unwrap();
    store.create(&rec).await.unwrap();
    store.save_job(&rec.update()).await.unwrap();
    let id = rec.job.id.clone();
    let first = store.claim_task(&id, 0, "node-a").await.unwrap().unwrap();
    assert_eq!(store.task_lease(&id, 0).await.unwrap(), Some(first));
    let second = store.claim_task(&id, 0, "node-b").await.unwrap().unwrap();
    assert!(second > first);
    assert_eq!(store.task_lease(&id, 0).await.unwrap(), Some(second));

    let mut started = rec.job.tasks()[0].clone();
    started.start().unwrap();
    let write = |task: &ferry_domain::FileTask, epoch: u64| JobWrite::Task {
        job: id.clone(),
        task: Box::new(task.clone()),
        fence: Some(epoch),
    };
    let event = JobWrite::Event(ferry_domain::ports::JobEvent {
        job_id: id.clone(),
        seq: 0,
        at_ms: 20_001,
        kind: ferry_domain::ports::JobEventKind::FileStarted {
            index: 0,
            attempt: 1,
        },
    });
    let before = store.events_after(&id, 0, 100).await.unwrap().len();
    // The stale holder writes nothing, not even the event beside it.
    assert!(matches!(
        store
            .write_batch(&[write(&started, first), event.clone()])
            .await,
        Err(JobStoreError::LeaseLost { index: 0, .. })
    ));
    assert_eq!(store.events_after(&id, 0, 100).await.unwrap().len(), before);
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().job.tasks()[0].status(),
        TaskStatus::Queued
    );
    // The holder writes.
    store
        .write_batch(&[write(&started, second), event])
        .await
        .unwrap();
    let mut done = started.clone();
    done.succeed(10, Checksum::sha256(&"d".repeat(64)).unwrap(), None)
        .unwrap();
    store.write_batch(&[write(&done, second)]).await.unwrap();
    // Over: no lease, no claim, no fenced write over it.
    assert_eq!(store.task_lease(&id, 0).await.unwrap(), None);
    assert_eq!(store.claim_task(&id, 0, "node-c").await.unwrap(), None);
    assert!(matches!(
        store.write_batch(&[write(&started, second)]).await,
        Err(JobStoreError::LeaseLost { .. })
    ));
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().job.tasks()[0].status(),
        TaskStatus::Succeeded
    );

    // A job ends once, its status and closing event in one commit: the
    // second conditional write fails `StatusChanged` and writes nothing,
    // not even the event beside it.
    let mut ended = store.get(&id).await.unwrap().unwrap();
    ended.job.cancel().unwrap();
    let closing = || {
        [
            JobWrite::Job {
                job: Box::new(ended.update()),
                from: Some(JobStatus::Downloading),
            },
            JobWrite::Event(ferry_domain::ports::JobEvent {
                job_id: id.clone(),
                seq: 0,
                at_ms: 20_002,
                kind: ferry_domain::ports::JobEventKind::JobCancelled,
            }),
        ]
    };
    let seqs = store.write_batch(&closing()).await.unwrap();
    assert_eq!(seqs.len(), 2);
    assert_eq!(seqs[0], None);
    let closed = seqs[1].expect("the closing event's sequence number");
    let events = store.events_after(&id, 0, 100).await.unwrap();
    assert_eq!(events.last().map(|e| e.seq), Some(closed));
    assert!(matches!(
        store.write_batch(&closing()).await,
        Err(JobStoreError::StatusChanged {
            expected: JobStatus::Downloading,
            ..
        })
    ));
    assert_eq!(store.events_after(&id, 0, 100).await.unwrap(), events);
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().job.status(),
        JobStatus::Cancelled
    );
    assert_eq!(
        store.head(&id).await.unwrap().unwrap().last_event_seq,
        closed
    );
    // Ended through the batch, it keeps no full URL either.
    for task in store.get(&id).await.unwrap().unwrap().job.tasks() {
        assert_eq!(task.spec.source.expose(), task.spec.source.redacted());
    }
}

/// Idempotency keys: one job per (owner, key) within the time to live;
/// the fingerprint tells a replay from a reuse; owners do not share keys;
/// an expired key names nothing; concurrent uses store one job.
async fn keyed(store: &dyn JobStorePort, ns: &str) {
    use ferry_domain::ports::{IdempotencyKey, Keyed};
    let key = |owner: Option<&str>, k: &str, fp: &str| {
        IdempotencyKey::new(owner.map(str::to_owned), k, fp.to_owned()).unwrap()
    };
    let k1 = format!("{ns}-key-1");
    let first = record(&format!("{ns}-keyed-1"), 1, 50_000);
    let alice = key(Some("alice"), &k1, "fp-a");
    assert_eq!(
        store.create_keyed(&first, &alice, 1_000).await.unwrap(),
        Keyed::Created
    );
    assert!(store.get(&first.job.id).await.unwrap().is_some());
    let again = record(&format!("{ns}-keyed-2"), 1, 50_500);
    assert_eq!(
        store.create_keyed(&again, &alice, 1_000).await.unwrap(),
        Keyed::Existing {
            job: first.job.id.clone(),
            same_request: true
        }
    );
    assert!(
        store.get(&again.job.id).await.unwrap().is_none(),
        "a replay stores nothing"
    );
    assert_eq!(
        store
            .create_keyed(&again, &key(Some("alice"), &k1, "fp-other"), 1_000)
            .await
            .unwrap(),
        Keyed::Existing {
            job: first.job.id.clone(),
            same_request: false
        }
    );
    // Bob's key of the same name is his own.
    assert_eq!(
        store
            .create_keyed(&again, &key(Some("bob"), &k1, "fp-a"), 1_000)
            .await
            .unwrap(),
        Keyed::Created
    );
    // Past its time to live, the key is free again.
    let later = record(&format!("{ns}-keyed-3"), 1, 52_000);
    assert_eq!(
        store.create_keyed(&later, &alice, 1_000).await.unwrap(),
        Keyed::Created
    );
    assert!(store.get(&later.job.id).await.unwrap().is_some());
    assert!(IdempotencyKey::new(None, "", "fp".into()).is_err());
    assert!(IdempotencyKey::new(None, "has space", "fp".into()).is_err());
    assert!(IdempotencyKey::new(None, &"k".repeat(256), "fp".into()).is_err());
    // Eight concurrent submissions with one new key store one job.
    let k2 = format!("{ns}-key-2");
    let racers: Vec<JobRecord> = (0..8)
        .map(|i| record(&format!("{ns}-race-{i}"), 1, 60_000))
        .collect();
    let shared = key(None, &k2, "fp-race");
    let outcomes =
        futures::future::join_all(racers.iter().map(|r| store.create_keyed(r, &shared, 1_000)))
            .await;
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Keyed::Created)))
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
    let mut stored = 0;
    for r in &racers {
        if store.get(&r.job.id).await.unwrap().is_some() {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
}

/// Retention: `ended_before` lists ended jobs last saved before a time,
/// oldest first; `delete_ended` deletes an ended job with its tasks,
/// events, idempotency keys and its tasks' checkpoint rows (not another
/// job's whose id starts the same), and refuses a running job, which keeps
/// everything.
pub async fn retention<S: JobStorePort + ferry_domain::ports::CheckpointStorePort>(
    store: &S,
    ns: &str,
) {
    use ferry_domain::TransferId;
    use ferry_domain::ports::{IdempotencyKey, Keyed};
    // Later than every other record of the suite.
    let t0 = 9_000_000_000_000;
    let key =
        IdempotencyKey::new(Some("alice".into()), &format!("{ns}-ret-key"), "fp".into()).unwrap();
    let mut ended = record(&format!("{ns}-ret"), 2, t0);
    assert_eq!(
        store
            .create_keyed(&ended, &key, i64::MAX / 4)
            .await
            .unwrap(),
        Keyed::Created
    );
    let mut newer = record(&format!("{ns}-ret2"), 1, t0 + 50);
    // Its id starts like the first one's: `…-ret` is a prefix of `…-ret-1`.
    let mut running = record(&format!("{ns}-ret-1"), 1, t0 + 100);
    for r in [&newer, &running] {
        store.create(r).await.unwrap();
    }
    for (r, at) in [(&mut ended, t0 + 10), (&mut newer, t0 + 20)] {
        r.job.cancel().unwrap();
        r.updated_at_ms = at;
        store.save_job(&r.update()).await.unwrap();
    }
    running.job.start_downloading().unwrap();
    running.updated_at_ms = t0 + 5;
    store.save_job(&running.update()).await.unwrap();
    for r in [&ended, &running] {
        let event = JobEvent {
            job_id: r.job.id.clone(),
            seq: 0,
            at_ms: t0,
            kind: JobEventKind::JobCancelled,
        };
        store.write_batch(&[JobWrite::Event(event)]).await.unwrap();
        for i in 0..r.job.tasks().len() {
            store
                .save(
                    &TransferId::for_task(&r.job.id, i),
                    &crate::checkpoint_conformance::checkpoint(1),
                )
                .await
                .unwrap();
        }
    }

    let listed = store.ended_before(t0 + 15, 1000).await.unwrap();
    assert!(listed.contains(&ended.job.id), "{listed:?}");
    assert!(!listed.contains(&newer.job.id), "saved after the cut-off");
    assert!(!listed.contains(&running.job.id), "not ended");
    let both = store.ended_before(t0 + 1_000, 1000).await.unwrap();
    let at = |id: &JobId| both.iter().position(|x| x == id).unwrap();
    assert!(at(&ended.job.id) < at(&newer.job.id), "oldest first");
    assert_eq!(store.ended_before(t0 + 1_000, 1).await.unwrap().len(), 1);

    assert!(!store.delete_ended(&running.job.id).await.unwrap());
    assert!(store.delete_ended(&ended.job.id).await.unwrap());
    assert!(!store.delete_ended(&ended.job.id).await.unwrap(), "gone");
    assert!(store.get(&ended.job.id).await.unwrap().is_none());
    assert!(store.task(&ended.job.id, 0).await.unwrap().is_none());
    assert!(
        store
            .events_after(&ended.job.id, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    for i in 0..2 {
        let id = TransferId::for_task(&ended.job.id, i);
        assert!(store.load(&id).await.unwrap().is_none(), "{id}");
    }
    // The key is free again: it named a job that is gone.
    let reuse = record(&format!("{ns}-ret3"), 1, t0 + 200);
    assert_eq!(
        store
            .create_keyed(&reuse, &key, i64::MAX / 4)
            .await
            .unwrap(),
        Keyed::Created
    );
    // The running job kept everything.
    assert_eq!(
        store
            .get(&running.job.id)
            .await
            .unwrap()
            .unwrap()
            .job
            .status(),
        JobStatus::Downloading
    );
    assert_eq!(
        store
            .events_after(&running.job.id, 0, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    let kept = TransferId::for_task(&running.job.id, 0);
    assert!(store.load(&kept).await.unwrap().is_some());
}

/// An owner's load: its unfinished jobs, their queued or running files,
/// and its jobs in their export phase; ended jobs and other owners' count
/// for nothing.
pub async fn owner_loads(store: &dyn JobStorePort, ns: &str) {
    use ferry_domain::ports::OwnerLoad;
    let owner = format!("{ns}-quota-owner");
    let mine = |r: &mut JobRecord| r.owner = Some(owner.clone());
    let mut running = record(&format!("{ns}-load-a"), 3, 80_000);
    let mut ended = record(&format!("{ns}-load-b"), 2, 80_001);
    let mut exporting = export_record(&format!("{ns}-load-e"), 80_002);
    let other = record(&format!("{ns}-load-o"), 5, 80_003);
    for r in [&mut running, &mut ended, &mut exporting] {
        mine(r);
        store.create(r).await.unwrap();
    }
    store.create(&other).await.unwrap();
    running.job.start_downloading().unwrap();
    let t = running.job.task_mut(0).unwrap();
    t.start().unwrap();
    t.succeed(10, Checksum::sha256(&"e".repeat(64)).unwrap(), None)
        .unwrap();
    running.job.task_mut(1).unwrap().start().unwrap();
    store.save_job(&running.update()).await.unwrap();
    store
        .replace_tasks(&running.job.id, running.job.tasks())
        .await
        .unwrap();
    ended.job.cancel().unwrap();
    store.save_job(&ended.update()).await.unwrap();
    store
        .replace_tasks(&ended.job.id, ended.job.tasks())
        .await
        .unwrap();

    assert_eq!(
        store.owner_load(Some(owner.clone())).await.unwrap(),
        OwnerLoad {
            active_jobs: 2,
            open_files: 2,
            active_exports: 1,
        }
    );
    assert_eq!(
        store
            .owner_load(Some(format!("{ns}-nobody")))
            .await
            .unwrap(),
        OwnerLoad::default()
    );
    // Jobs without an owner are their own group.
    let mut anonymous = record(&format!("{ns}-load-n"), 4, 80_004);
    anonymous.owner = None;
    let before = store.owner_load(None).await.unwrap();
    store.create(&anonymous).await.unwrap();
    let after = store.owner_load(None).await.unwrap();
    assert_eq!(after.active_jobs, before.active_jobs + 1);
    assert_eq!(after.open_files, before.open_files + 4);
}
