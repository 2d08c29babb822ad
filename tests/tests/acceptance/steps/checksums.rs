//! Checksums: what the caller expects and what ferry reports.

use cucumber::{given, then};

use ferry_domain::Checksum;
use ferry_tests::{md5_hex, sha256_hex};

use crate::world::FerryWorld;

#[given(regex = r#"^the expected SHA-256 of "([^"]+)"$"#)]
fn expect_sha(world: &mut FerryWorld, name: String) {
    let sum = Checksum::sha256(&sha256_hex(world.file(&name))).unwrap();
    world.expected.push(sum);
}

#[given(regex = r#"^the expected MD5 of "([^"]+)"$"#)]
fn expect_md5(world: &mut FerryWorld, name: String) {
    let sum = Checksum::md5(&md5_hex(world.file(&name))).unwrap();
    world.expected.push(sum);
}

#[given("a wrong expected SHA-256")]
fn wrong_sha(world: &mut FerryWorld) {
    world
        .expected
        .push(Checksum::sha256(&"0".repeat(64)).unwrap());
}

fn result(world: &FerryWorld) -> &ferry_domain::ports::ProcessFileResult {
    match &world.outcome {
        Some(Ok(r)) => r,
        other => panic!("expected a successful copy, got {other:?}"),
    }
}

#[then(regex = r#"^the reported SHA-256 is that of "([^"]+)"$"#)]
fn reported_sha(world: &mut FerryWorld, name: String) {
    assert_eq!(result(world).sha256.hex(), sha256_hex(world.file(&name)));
}

#[then(regex = r#"^the reported MD5 is that of "([^"]+)"$"#)]
fn reported_md5(world: &mut FerryWorld, name: String) {
    let md5 = result(world).md5.clone().expect("MD5 computed");
    assert_eq!(md5.hex(), md5_hex(world.file(&name)));
}
