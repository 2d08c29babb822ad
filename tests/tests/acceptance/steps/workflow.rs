//! Workflow callbacks: jobs that carry an AWS Step Functions task token are
//! answered through the real aws-sdk-sfn client, against a test endpoint
//! that records the calls and checks their shape.

use cucumber::{given, then};
use serde_json::Value;

use ferry_tests::sfn_endpoint::{SfnCall, SfnEndpoint};

use super::jobs::{current, jw};
use crate::world::FerryWorld;

#[given("a Step Functions endpoint that records calls")]
async fn endpoint(world: &mut FerryWorld) {
    jw(world).sfn = Some(SfnEndpoint::start().await.unwrap());
}

#[given("a Step Functions endpoint that fails every call")]
async fn failing_endpoint(world: &mut FerryWorld) {
    let e = SfnEndpoint::start().await.unwrap();
    e.fail_next(usize::MAX);
    jw(world).sfn = Some(e);
}

#[given(regex = r#"^the job carries the task token "([^"]+)"$"#)]
fn carries_token(world: &mut FerryWorld, token: String) {
    jw(world).task_token = Some(token);
}

fn calls(world: &mut FerryWorld) -> Vec<SfnCall> {
    jw(world)
        .sfn
        .as_ref()
        .expect("a Step Functions endpoint was set up")
        .calls()
}

/// The one call the job made (several only if the endpoint failed).
fn the_call(world: &mut FerryWorld, operation: &str, token: &str) -> SfnCall {
    let calls = calls(world);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = calls[0].clone();
    assert_eq!(call.operation, operation);
    assert!(call.signed, "the real SDK signs its calls");
    assert_eq!(call.body["taskToken"], token);
    call
}

#[then(
    regex = r#"^Step Functions received SendTaskSuccess for "([^"]+)" with status "([a-z_]+)", (\d+) succeeded and (\d+) failed$"#
)]
async fn success(world: &mut FerryWorld, token: String, status: String, ok: u64, failed: u64) {
    let call = the_call(world, "SendTaskSuccess", &token);
    let output: Value = serde_json::from_str(call.body["output"].as_str().unwrap()).unwrap();
    let record = current(world).await;
    assert_eq!(output["job_id"], record.job.id.as_str());
    assert_eq!(output["status"], status.as_str());
    assert_eq!(output["files"]["succeeded"], ok);
    assert_eq!(output["files"]["failed"], failed);
    assert_eq!(output["bytes"], record.job.summary().bytes_done);
}

#[then(
    regex = r#"^Step Functions received SendTaskFailure for "([^"]+)" with error "([^"]+)" and a cause mentioning "([^"]+)"$"#
)]
fn failure(world: &mut FerryWorld, token: String, error: String, cause: String) {
    let call = the_call(world, "SendTaskFailure", &token);
    assert_eq!(call.body["error"], error.as_str());
    let got = call.body["cause"].as_str().unwrap();
    assert!(got.contains(&cause), "{got}");
}

#[then(regex = r#"^the job records the callback as "([^"]+)"$"#)]
async fn recorded(world: &mut FerryWorld, outcome: String) {
    assert_eq!(
        current(world)
            .await
            .callback
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some(outcome.as_str())
    );
}

#[then("the job records that the callback failed, after retries")]
async fn recorded_failure(world: &mut FerryWorld) {
    let callback = current(world)
        .await
        .callback
        .map(|c| c.to_string())
        .unwrap_or_default();
    assert!(callback.starts_with("failed:"), "{callback}");
    assert!(calls(world).len() > 1, "the SDK retried");
}

#[then("Step Functions received no call")]
fn no_call(world: &mut FerryWorld) {
    assert!(calls(world).is_empty());
}
