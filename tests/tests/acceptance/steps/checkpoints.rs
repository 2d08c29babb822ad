//! Checkpoints: copies that resume from where they stopped, restart when the
//! source changed, and clean up when given up. Real adapters: the test
//! origin, a directory, `ferry copy`'s state files.

use std::sync::Arc;
use std::time::Duration;

use cucumber::{given, then, when};

use ferry_adapters::checkpoint::CheckpointFiles;
use ferry_adapters::{FilesystemStorage, SourceRouter};
use ferry_application::{ProcessFile, ProcessFileConfig};
use ferry_domain::ports::{CheckpointStorePort, ProcessFileCommand, ProcessFilePort};
use ferry_domain::{ObjectKey, SourceUrl, TransferId};
use ferry_tests::generate;
use ferry_tests::told::Told;

use crate::world::FerryWorld;

/// The checkpoint store and what the last copy said.
#[derive(Debug)]
pub struct CheckpointWorld {
    state: tempfile::TempDir,
    store: Arc<CheckpointFiles>,
    told: Arc<Told>,
    source: Option<String>,
}

const ID: &str = "copy-scenario";

fn checkpoints(world: &mut FerryWorld) -> &mut CheckpointWorld {
    world.checkpoints.get_or_insert_with(|| {
        let state = tempfile::tempdir().unwrap();
        let store = Arc::new(CheckpointFiles::open(state.path()).unwrap());
        CheckpointWorld {
            state,
            store,
            told: Arc::new(Told::default()),
            source: None,
        }
    })
}

fn use_case(world: &mut FerryWorld) -> ProcessFile {
    let store = checkpoints(world).store.clone();
    let http = ferry_tests::test_http_client(Duration::from_secs(2));
    ProcessFile::new(
        Arc::new(SourceRouter::new(Arc::new(http), None)),
        Arc::new(FilesystemStorage::new(world.dir.path()).unwrap()),
        ProcessFileConfig {
            // A break ends the attempt, as a crash would.
            resume_attempts: 0,
            checkpoints: Some(store),
            ..ProcessFileConfig::default()
        },
    )
}

#[when(regex = r#"^I copy "([^"]+)" to "([^"]+)" with checkpoints$"#)]
async fn copy_with_checkpoints(world: &mut FerryWorld, name: String, key: String) {
    let process = use_case(world);
    let told = Arc::new(Told::default());
    checkpoints(world).told = told.clone();
    checkpoints(world).source = Some(name.clone());
    let source = SourceUrl::parse(&world.origin.url(&format!("/{name}"))).unwrap();
    let mut command = ProcessFileCommand::new(source, ObjectKey::parse(&key).unwrap());
    command.transfer_id = Some(TransferId::parse(ID).unwrap());
    command.progress = told;
    world.outcome = Some(process.process(command).await);
}

#[when("I give the copy up")]
async fn give_up(world: &mut FerryWorld) {
    let process = use_case(world);
    process
        .abandon(&TransferId::parse(ID).unwrap())
        .await
        .unwrap();
}

#[given(regex = r#"^"([^"]+)" changes at the origin$"#)]
fn changes(world: &mut FerryWorld, name: String) {
    let len = world.file(&name).len();
    let new = generate(len, 999);
    world.origin.change(&format!("/{name}"), new.clone());
    world.files.insert(name, new);
}

#[then("a checkpoint of the copy is saved")]
async fn saved(world: &mut FerryWorld) {
    let store = checkpoints(world).store.clone();
    let saved = store.load(&TransferId::parse(ID).unwrap()).await.unwrap();
    assert!(saved.is_some_and(|c| c.committed() > 0));
}

#[then("no checkpoint remains")]
async fn none_left(world: &mut FerryWorld) {
    let cw = checkpoints(world);
    assert!(cw.store.list().await.unwrap().is_empty());
    assert!(cw.state.path().exists());
}

#[then(regex = r"^it resumed from the checkpoint, fetching at most (\d+) MiB again$")]
fn resumed(world: &mut FerryWorld, mib: u64) {
    let offset = match &world.outcome {
        Some(Ok(result)) => result.resumed_from.expect("resumed"),
        other => panic!("no successful copy: {other:?}"),
    };
    let name = checkpoints(world).source.clone().unwrap();
    let len = world.file(&name).len() as u64;
    assert_eq!(*checkpoints(world).told.resumed(), vec![offset]);
    // The first request broke; the second continued from `offset`.
    let cut = world
        .origin
        .requests()
        .iter()
        .filter(|r| r.path == format!("/{name}"))
        .count();
    assert_eq!(cut, 2, "one broken request, one resumed request");
    let broke_at = world
        .broke_at
        .expect("the scenario says where the source broke");
    assert!(offset > 0 && offset <= broke_at && offset < len);
    assert!(
        broke_at - offset <= mib << 20,
        "resumed from {offset}, broke at {broke_at}"
    );
}

#[then(regex = r#"^it restarted from zero because "([^"]+)"$"#)]
fn restarted(world: &mut FerryWorld, why: String) {
    match &world.outcome {
        Some(Ok(result)) => assert_eq!(result.resumed_from, None),
        other => panic!("no successful copy: {other:?}"),
    }
    let reasons = checkpoints(world).told.restarted();
    assert!(reasons.iter().any(|r| r.contains(&why)), "{reasons:?}");
}
