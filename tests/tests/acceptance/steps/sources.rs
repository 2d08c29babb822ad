//! Sources: what the origin serves and what it saw.

use cucumber::{given, then};

use ferry_domain::ByteSize;
use ferry_tests::generate;
use ferry_tests::origin::Behavior;

use crate::world::FerryWorld;

fn size(n: u64, unit: &str) -> usize {
    let s = ByteSize::parse(&format!("{n}{unit}")).expect("size in the step");
    usize::try_from(s.as_u64()).expect("fits")
}

fn add(world: &mut FerryWorld, name: &str, len: usize, behavior: Behavior) {
    let data = generate(len, name.len() as u64 + len as u64);
    world
        .origin
        .serve(&format!("/{name}"), data.clone(), behavior);
    world.files.insert(name.to_owned(), data);
}

#[given(regex = r#"^an origin serving "([^"]+)" of (\d+) (B|KiB|MiB)$"#)]
fn serving(world: &mut FerryWorld, name: String, n: u64, unit: String) {
    add(world, &name, size(n, &unit), Behavior::Normal);
}

#[given(regex = r#"^an origin serving "([^"]+)" of (\d+) (B|KiB|MiB) without a length$"#)]
fn serving_chunked(world: &mut FerryWorld, name: String, n: u64, unit: String) {
    add(world, &name, size(n, &unit), Behavior::Chunked);
}

#[given(
    regex = r#"^an origin serving "([^"]+)" of (\d+) (B|KiB|MiB) that resets once after (\d+) (B|KiB|MiB)$"#
)]
fn serving_flaky(
    world: &mut FerryWorld,
    name: String,
    n: u64,
    unit: String,
    at: u64,
    at_unit: String,
) {
    let after = size(at, &at_unit);
    world.broke_at = Some(after as u64);
    add(
        world,
        &name,
        size(n, &unit),
        Behavior::ResetAfter { after, times: 1 },
    );
}

#[then(regex = r#"^the origin received a range request for "([^"]+)"$"#)]
fn saw_range(world: &mut FerryWorld, name: String) {
    let path = format!("/{name}");
    let ranged = world
        .origin
        .requests()
        .into_iter()
        .filter(|r| r.path == path && r.range.is_some())
        .count();
    assert_eq!(ranged, 1, "{:?}", world.origin.requests());
}

#[then(regex = r#"^the origin sent no body bytes for "([^"]+)" beyond the headers$"#)]
fn no_body(world: &mut FerryWorld, name: String) {
    // One request, and the copy failed before reading: the outcome is an
    // error raised from the declared length alone.
    let path = format!("/{name}");
    let hits = world
        .origin
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .count();
    assert_eq!(hits, 1);
    match &world.outcome {
        Some(Err(ferry_domain::ports::ProcessFileError::TooLarge { .. })) => {}
        other => panic!("expected a TooLarge error from the header, got {other:?}"),
    }
}
