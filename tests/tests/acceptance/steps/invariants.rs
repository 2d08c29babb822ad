//! Domain invariants of jobs and file tasks, checked on the entities
//! themselves: illegal transitions are errors (never panics), terminal states
//! are final, a job completes only when every task is terminal, and the
//! summary's counts and bytes add up.

use cucumber::{given, then, when};

use ferry_domain::{
    Checksum, ErrorClass, FileSpec, Job, JobId, JobStatus, ObjectKey, SourceUrl, TaskFailure,
    TransitionError,
};

use crate::world::FerryWorld;

fn spec(i: usize) -> FileSpec {
    FileSpec {
        source: SourceUrl::parse(&format!("https://origin.example/{i}.bin")).unwrap(),
        key: ObjectKey::parse(&format!("k/{i}.bin")).unwrap(),
        expected_size: None,
        expected: Vec::new(),
        headers: Default::default(),
        attributes: Default::default(),
    }
}

fn job(world: &mut FerryWorld) -> &mut Job {
    world.job.as_mut().expect("a job entity was set up")
}

#[given(regex = r"^a downloading job of (\d+) files$")]
fn downloading(world: &mut FerryWorld, n: usize) {
    let mut j = Job::new(JobId::parse("inv-1").unwrap(), (0..n).map(spec).collect());
    j.start_downloading().unwrap();
    world.job = Some(j);
}

#[when(regex = r"^file (\d+) succeeds with (\d+) bytes$")]
fn succeeds(world: &mut FerryWorld, i: usize, bytes: u64) {
    let t = job(world).task_mut(i).unwrap();
    t.start().unwrap();
    t.progress(bytes / 2).unwrap();
    t.succeed(bytes, Checksum::sha256(&"a".repeat(64)).unwrap(), None)
        .unwrap();
}

#[when(regex = r"^file (\d+) fails$")]
fn fails(world: &mut FerryWorld, i: usize) {
    let t = job(world).task_mut(i).unwrap();
    t.start().unwrap();
    t.fail(TaskFailure {
        class: ErrorClass::Client,
        code: ferry_domain::ErrorCode::ChecksumMismatch,
        message: "differs".into(),
    })
    .unwrap();
}

#[then(
    regex = r"^completing the job is refused because (\d+) file tasks? (?:is|are) not finished$"
)]
fn refused(world: &mut FerryWorld, n: usize) {
    let before = job(world).clone();
    assert_eq!(
        job(world).complete(),
        Err(TransitionError::TasksNotTerminal { pending: n })
    );
    assert_eq!(*job(world), before, "a refused transition changes nothing");
}

#[when("the job completes")]
fn completes(world: &mut FerryWorld) {
    job(world).complete().unwrap();
}

#[then(regex = r#"^the job entity is "([a-z_]+)"$"#)]
fn entity_is(world: &mut FerryWorld, status: String) {
    assert_eq!(job(world).status().as_str(), status);
}

#[then("every further transition of the job or its tasks is refused")]
fn terminal_is_final(world: &mut FerryWorld) {
    let before = job(world).clone();
    let j = job(world);
    assert!(j.complete().is_err());
    assert!(j.cancel().is_err());
    assert!(j.fail("late".into()).is_err());
    assert!(j.start_downloading().is_err());
    assert!(j.start_export().is_err());
    assert!(j.task_mut(0).is_err());
    assert_eq!(*j, before);
}

#[then(
    regex = r"^the summary counts (\d+) files?, (\d+) succeeded, (\d+) failed, (\d+) unfinished and (\d+) bytes$"
)]
fn summary(
    world: &mut FerryWorld,
    total: usize,
    ok: usize,
    failed: usize,
    open: usize,
    bytes: u64,
) {
    let s = job(world).summary();
    assert_eq!(s.total, total);
    assert_eq!(s.succeeded, ok);
    assert_eq!(s.failed, failed);
    assert_eq!(s.queued + s.running, open);
    assert_eq!(
        s.succeeded + s.failed + s.cancelled + s.queued + s.running,
        s.total
    );
    assert_eq!(s.bytes_done, bytes);
}

#[then(regex = r"^a finished file task cannot be started, failed or re-queued again$")]
fn task_terminal(world: &mut FerryWorld) {
    let j = job(world);
    let t = j.task_mut(0).unwrap();
    assert!(t.start().is_err());
    assert!(t.requeue().is_err());
    assert!(
        t.fail(TaskFailure {
            class: ErrorClass::Internal,
            code: ferry_domain::ErrorCode::Internal,
            message: "x".into(),
        })
        .is_err()
    );
    assert!(t.cancel().is_err());
}

#[when("the job is cancelled")]
fn cancelled(world: &mut FerryWorld) {
    job(world).cancel().unwrap();
}

#[then("its unfinished file tasks are cancelled and the finished ones keep their result")]
fn cancel_keeps(world: &mut FerryWorld) {
    let j = job(world);
    assert_eq!(j.status(), JobStatus::Cancelled);
    let s = j.summary();
    assert_eq!(s.succeeded, 1);
    assert_eq!(s.cancelled, s.total - 1);
}

#[then(regex = r"^an export cannot start for a job that lists its files$")]
fn no_export_with_files(_world: &mut FerryWorld) {
    let mut j = Job::new(JobId::parse("inv-2").unwrap(), vec![spec(0)]);
    assert!(j.start_export().is_err());
    assert!(j.export_ready(vec![spec(1)]).is_err());
    let mut e = Job::new(JobId::parse("inv-3").unwrap(), Vec::new());
    e.start_export().unwrap();
    assert_eq!(e.status(), JobStatus::Exporting);
    assert!(
        e.start_downloading().is_err(),
        "only the manifest moves it on"
    );
    e.export_ready(vec![spec(0), spec(1)]).unwrap();
    assert_eq!(e.status(), JobStatus::Downloading);
    assert_eq!(e.summary().queued, 2);
}
