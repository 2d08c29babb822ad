use ferry_adapters::FilesystemStorage;
use ferry_tests::conformance;

/// Files whose names carry the temp marker, anywhere under `dir`.
pub fn temp_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .to_string_lossy()
                .contains(ferry_adapters::filesystem::TEMP_MARKER)
            {
                found.push(p);
            }
        }
    }
    found
}

#[tokio::test]
async fn filesystem_storage_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FilesystemStorage::new(dir.path()).unwrap();
    conformance::run(&storage, "conformance").await;
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}
