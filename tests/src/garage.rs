//! Access to the test Garage: the environment printed by
//! `scripts/garage.sh start` (taken from the process environment when the
//! test command already exported it, otherwise by running the script, which
//! is idempotent).

use std::collections::HashMap;
use std::sync::OnceLock;

use ferry_adapters::s3::{S3Service, S3Settings};

/// Connection facts of the test Garage.
#[derive(Debug, Clone)]
pub struct GarageEnv {
    pub endpoint: String,
    pub bucket: String,
    pub bucket_2: String,
}

fn from_script() -> HashMap<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/garage.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg("start")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/garage.sh start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The test Garage's environment; exported into this process so the AWS
/// credential chain finds the key.
pub fn garage() -> &'static GarageEnv {
    static ENV: OnceLock<GarageEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let vars: HashMap<String, String> = if std::env::var("FERRY_TEST_S3_BUCKET").is_ok() {
            std::env::vars().collect()
        } else {
            let vars = from_script();
            for (k, v) in &vars {
                // SAFETY-free: set once, before any S3 client reads it.
                unsafe_set_env(k, v);
            }
            vars
        };
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{k} missing from the Garage environment"))
        };
        GarageEnv {
            endpoint: get("AWS_ENDPOINT_URL"),
            bucket: get("FERRY_TEST_S3_BUCKET"),
            bucket_2: get("FERRY_TEST_S3_BUCKET_2"),
        }
    })
}

#[allow(unsafe_code)]
fn unsafe_set_env(k: &str, v: &str) {
    // Called once under a OnceLock, before clients are built.
    unsafe { std::env::set_var(k, v) };
}

/// A client for the test Garage through `endpoint` (Garage itself, or a
/// proxy in front of it).
pub async fn service(endpoint: &str) -> S3Service {
    garage();
    S3Service::connect(&S3Settings {
        endpoint_url: Some(endpoint.to_owned()),
        region: Some("garage".into()),
        ..S3Settings::default()
    })
    .await
}

/// A fresh prefix so that test runs never collide in the shared buckets.
pub fn unique_prefix(label: &str) -> String {
    format!("test-{label}-{:016x}", rand::random::<u64>())
}
