//! Malformed and refused requests, one chosen at random per call: refused
//! before the queue (by the message route or the PDF route), or taken and
//! then refused by the renderer.

use reqwest::{Client, RequestBuilder};
use serde_json::json;

use crate::ctx::Ctx;
use crate::record::{Expect, Kind};
use crate::rng::Rng;
use crate::servers::MAX_UPLOAD_BYTES;

const JSON_TYPE: (&str, &str) = ("content-type", "application/json");
const PDF_TYPE: (&str, &str) = ("content-type", "application/pdf");

/// How many cases there are; each call picks one.
const CASES: u64 = 22;

/// One malformed or refused request, chosen at random.
pub async fn malformed(ctx: &Ctx, rng: &mut Rng) {
    let (case, expect, builder) = match rng.below(CASES) {
        n @ (0 | 2 | 9 | 15 | 16) => {
            let (case, status, builder) = bad_message(ctx, n);
            (case, Expect::Before(status), builder)
        }
        n @ (4 | 6 | 11 | 12 | 21) => {
            let (case, builder) = unreadable_pdf(ctx, rng, n);
            (case, Expect::JobInvalid { pdf: true }, builder)
        }
        n => {
            let (case, status, builder) = bad_pdf(ctx, n);
            (case, Expect::Before(status), builder)
        }
    };
    ctx.exec(Kind::Malformed, case, 0, expect, builder, None)
        .await;
}

fn client(ctx: &Ctx) -> &Client {
    ctx.http(Kind::Malformed)
}

/// Case `n` of those `POST /jobs/message` refuses before the queue, with
/// the status it must get.
fn bad_message(ctx: &Ctx, n: u64) -> (&'static str, u16, RequestBuilder) {
    let c = client(ctx);
    let msg = ctx.url(0, "/jobs/message");
    match n {
        0 => (
            "bad json (message)",
            400,
            c.post(&msg)
                .header(JSON_TYPE.0, JSON_TYPE.1)
                .body("{\"text\": "),
        ),
        2 => (
            "text/plain to message",
            415,
            c.post(&msg)
                .header("content-type", "text/plain")
                .body("hello"),
        ),
        9 => (
            "oversized json",
            413,
            c.post(&msg).json(&json!({"text": "x".repeat(100 * 1024)})),
        ),
        15 => (
            "timeout_ms 0",
            422,
            c.post(&msg).json(&json!({"text": "t", "timeout_ms": 0})),
        ),
        _ => (
            "wrong json shape",
            422,
            c.post(&msg).json(&json!({"text": 42})),
        ),
    }
}

/// Case `n` of those `POST /jobs/pdf` refuses before the queue, with the
/// status it must get.
fn bad_pdf(ctx: &Ctx, n: u64) -> (&'static str, u16, RequestBuilder) {
    let c = client(ctx);
    let pdf = ctx.url(0, "/jobs/pdf");
    match n {
        1 => (
            "bad json (pdf)",
            400,
            c.post(&pdf)
                .header(JSON_TYPE.0, JSON_TYPE.1)
                .body("{\"path\": \"sample.pdf\","),
        ),
        3 => (
            "image/png to pdf",
            415,
            c.post(&pdf)
                .header("content-type", "image/png")
                .body(ctx.fx.not_a_pdf.clone()),
        ),
        5 => (
            "pages 3-1",
            400,
            c.post(format!("{pdf}?pages=3-1"))
                .json(&json!({"path": "sample.pdf"})),
        ),
        7 => (
            "dpi 0",
            400,
            c.post(&pdf).json(&json!({"path": "sample.pdf", "dpi": 0})),
        ),
        8 => (
            "dpi 100000",
            400,
            c.post(format!("{pdf}?dpi=100000"))
                .header(PDF_TYPE.0, PDF_TYPE.1)
                .body(ctx.fx.docs[0].1.clone()),
        ),
        10 => (
            "oversized upload",
            413,
            c.post(&pdf).header(PDF_TYPE.0, PDF_TYPE.1).body(vec![
                b'%';
                MAX_UPLOAD_BYTES
                    + MAX_UPLOAD_BYTES / 2
            ]),
        ),
        13 => (
            "path out of data dir",
            400,
            c.post(&pdf).json(&json!({"path": "../Cargo.toml"})),
        ),
        14 => (
            "missing file",
            422,
            c.post(&pdf).json(&json!({"path": "no-such.pdf"})),
        ),
        17 => (
            "unknown field",
            422,
            c.post(&pdf)
                .json(&json!({"path": "sample.pdf", "bogus": true})),
        ),
        18 => (
            "empty upload",
            422,
            c.post(&pdf).header(PDF_TYPE.0, PDF_TYPE.1).body(""),
        ),
        19 => (
            "multipart without file",
            400,
            c.post(&pdf)
                .multipart(reqwest::multipart::Form::new().text("dpi", "72")),
        ),
        _ => (
            "bad query",
            400,
            c.post(format!("{pdf}?dpi=abc"))
                .json(&json!({"path": "sample.pdf"})),
        ),
    }
}

/// Case `n` of the PDF jobs the server takes and its renderer refuses
/// (422 in place of 200).
fn unreadable_pdf(ctx: &Ctx, rng: &mut Rng, n: u64) -> (&'static str, RequestBuilder) {
    let c = client(ctx);
    let pdf = ctx.url(0, "/jobs/pdf");
    match n {
        4 => {
            let mut bytes: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
            bytes[0] = b'X';
            (
                "random bytes as pdf",
                c.post(&pdf).header(PDF_TYPE.0, PDF_TYPE.1).body(bytes),
            )
        }
        6 => (
            "pages the document lacks",
            c.post(&pdf)
                .json(&json!({"path": "sample.pdf", "pages": "7-9", "dpi": 36})),
        ),
        11 => (
            "encrypted, no password",
            c.post(&pdf).json(&json!({"path": "encrypted.pdf"})),
        ),
        12 => (
            "huge page",
            c.post(&pdf).json(&json!({"path": "huge-page.pdf"})),
        ),
        _ => (
            "truncated pdf",
            c.post(format!("{pdf}?dpi=36"))
                .header(PDF_TYPE.0, PDF_TYPE.1)
                .body(ctx.fx.truncated.clone()),
        ),
    }
}
