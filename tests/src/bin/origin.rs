//! `ferry-test-origin`: serves a directory over HTTP/1.1 on loopback with
//! Range support, for the README demo and the benchmarks.
//!
//! Usage: ferry-test-origin DIR [ADDR]   (ADDR defaults to 127.0.0.1:0)
//! Prints `listening on http://ADDR` once ready.

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
    let origin = match Origin::bind(addr, Some(dir)).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ferry-test-origin: cannot listen on {addr}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    println!("listening on http://{}", origin.addr());
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
