//! Storage: what is (and is not) visible at the destination.

use cucumber::then;

use crate::world::FerryWorld;

#[then(regex = r#"^"([^"]+)" holds exactly the bytes of "([^"]+)"$"#)]
fn holds(world: &mut FerryWorld, key: String, name: String) {
    let stored = std::fs::read(world.dir.path().join(&key)).expect("stored file");
    assert!(stored == world.file(&name), "content differs");
}

#[then(regex = r#"^nothing is visible at "([^"]+)"$"#)]
fn nothing(world: &mut FerryWorld, key: String) {
    assert!(!world.dir.path().join(&key).exists(), "{key} is visible");
}

#[then("no temporary file remains")]
fn no_temp(world: &mut FerryWorld) {
    let mut dirs = vec![world.dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                assert!(
                    !p.to_string_lossy()
                        .contains(ferry_adapters::filesystem::TEMP_MARKER),
                    "temp file left: {}",
                    p.display()
                );
            }
        }
    }
}
