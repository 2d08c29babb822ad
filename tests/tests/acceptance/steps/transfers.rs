//! Transfers: running ProcessFile and its outcome.

use cucumber::{given, then, when};

use ferry_domain::ports::{ProcessFileCommand, ProcessFilePort};
use ferry_domain::{ByteSize, ObjectKey, SourceUrl};

use crate::world::FerryWorld;

#[given(regex = r"^a size limit of (\d+ ?(?:B|KiB|MiB|GiB))$")]
fn size_limit(world: &mut FerryWorld, limit: String) {
    world.max_size = ByteSize::parse(&limit).unwrap();
}

#[when(regex = r#"^I copy "([^"]+)" to "([^"]+)"$"#)]
async fn copy(world: &mut FerryWorld, name: String, key: String) {
    let source = SourceUrl::parse(&world.origin.url(&format!("/{name}"))).unwrap();
    let mut command = ProcessFileCommand::new(source, ObjectKey::parse(&key).unwrap());
    command.expected = world.expected.clone();
    command.max_size = world.max_size;
    let outcome = world.process_file().process(command).await;
    world.outcome = Some(outcome);
}

#[then("the copy succeeds")]
fn succeeds(world: &mut FerryWorld) {
    match &world.outcome {
        Some(Ok(_)) => {}
        other => panic!("expected success, got {other:?}"),
    }
}

#[then(regex = r#"^the copy fails with "([a-z_]+)"$"#)]
fn fails_with(world: &mut FerryWorld, code: String) {
    match &world.outcome {
        Some(Err(e)) => assert_eq!(e.code(), code, "{e}"),
        other => panic!("expected failure {code}, got {other:?}"),
    }
}
