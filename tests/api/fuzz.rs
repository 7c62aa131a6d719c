//! Property test of the multipart upload path through the real server:
//! malformed multipart bodies (bad boundaries, truncated parts, unknown or
//! repeated fields, junk option values) get a 4xx in the error shape, never
//! a 5xx or a dropped connection, and the server stays up.

use proptest::prelude::*;
use serde_json::Value;

use crate::helpers::{spawn_app, test_config};

fn part(name: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
    out
}

fn field() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("file".to_string()),
        Just("dpi".to_string()),
        Just("pages".to_string()),
        Just("password".to_string()),
        Just("timeout_ms".to_string()),
        "[a-z]{1,8}",
    ];
    (name, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(n, b)| part(&n, &b))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(field(), 0..4),
        any::<bool>(),
        0usize..400,
    )
        .prop_map(|(fields, close, cut)| {
            let mut out: Vec<u8> = fields.concat();
            if close {
                out.extend_from_slice(b"--B--\r\n");
            }
            let cut = cut.min(out.len());
            if cut % 3 == 0 {
                out.truncate(out.len() - cut / 2);
            }
            out
        })
}

#[test]
fn malformed_multipart_bodies_get_4xx_in_the_error_shape() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(spawn_app(test_config()));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    runner
        .run(&body(), |bytes| {
            let response = runtime.block_on(
                app.client
                    .post(app.url("/jobs/pdf?dpi=36"))
                    .header("content-type", "multipart/form-data; boundary=B")
                    .body(bytes)
                    .send(),
            );
            let response = response.map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
            let status = response.status();
            let body: Value = runtime
                .block_on(response.json())
                .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
            prop_assert!(
                status.is_client_error() || status == 200,
                "status {status}: {body}"
            );
            if status != 200 {
                prop_assert!(
                    body["error"].is_string() && body["message"].is_string(),
                    "{body}"
                );
            }
            Ok(())
        })
        .unwrap();
    let live = runtime.block_on(app.get("/livez"));
    assert_eq!(live.status(), 200, "the server is still up");
}
