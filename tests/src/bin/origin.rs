//! `ferry-test-origin`: serves a directory over HTTP/1.1 on loopback with
//! Range support, for the README demo and the benchmarks.
//!
//! Usage: ferry-test-origin DIR [ADDR]   (ADDR defaults to 127.0.0.1:0)
//! Prints `listening on http://ADDR` once ready. With
//! `FERRY_ORIGIN_THROTTLE=BYTES_PER_SECOND`, the files directly in DIR are
//! sent at that rate (a slow origin, for the browser tests).

use std::net::SocketAddr;
use std::path::PathBuf;

use ferry_tests::origin::Origin;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: ferry-test-origin DIR [ADDR]");
        return std::process::ExitCode::from(2);
    };
    let addr: SocketAddr = match args.next().unwrap_or_else(|| "127.0.0.1:0".into()).parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ferry-test-origin: bad address: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let origin = match Origin::bind(addr, Some(dir.clone())).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ferry-test-origin: cannot listen on {addr}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    if let Some(rate) = std::env::var("FERRY_ORIGIN_THROTTLE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("ferry-test-origin: cannot read {}", dir.display());
            return std::process::ExitCode::from(1);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Throttled bodies are served from memory.
                let Ok(data) = std::fs::read(&path) else {
                    eprintln!("ferry-test-origin: cannot read {}", path.display());
                    return std::process::ExitCode::from(1);
                };
                origin.serve(
                    &format!("/{name}"),
                    data,
                    ferry_tests::origin::Behavior::Throttled {
                        bytes_per_tick: (rate / 10).max(1),
                        tick: std::time::Duration::from_millis(100),
                    },
                );
            }
        }
    }
    println!("listening on http://{}", origin.addr());
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
