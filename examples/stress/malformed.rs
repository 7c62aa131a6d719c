//! Malformed and refused requests, one chosen at random per call: refused
//! before the queue (by the message route or the PDF route), or taken and
//! then refused by the renderer.

use reqwest::RequestBuilder;
use serde_json::json;

use crate::ctx::Ctx;
use crate::record::Expect::{self, Before};
use crate::record::Kind;
use crate::rng::Rng;
use crate::servers::MAX_UPLOAD_BYTES;

const JSON_TYPE: (&str, &str) = ("content-type", "application/json");
const PDF_TYPE: (&str, &str) = ("content-type", "application/pdf");

/// How many cases there are; each call picks one.
const CASES: u64 = 22;

/// One malformed or refused request, chosen at random.
pub async fn malformed(ctx: &Ctx, rng: &mut Rng) {
    let n = rng.below(CASES);
    let (case, expect, builder) = case(ctx, rng, n);
    ctx.exec(Kind::Malformed, case, 0, expect, builder, None)
        .await;
}

/// Case `n`: its name, the answer it must get, and the request.
fn case(ctx: &Ctx, rng: &mut Rng, n: u64) -> (&'static str, Expect, RequestBuilder) {
    let c = ctx.http(Kind::Malformed);
    let msg = ctx.url(0, "/jobs/message");
    let pdf = ctx.url(0, "/jobs/pdf");
    let unreadable = Expect::JobInvalid { pdf: true };
    match n {
        // Refused by `POST /jobs/message` before the queue.
        0 => (
            "bad json (message)",
            Before(400),
            c.post(&msg)
                .header(JSON_TYPE.0, JSON_TYPE.1)
                .body("{\"text\": "),
        ),
        2 => (
            "text/plain to message",
            Before(415),
            c.post(&msg)
                .header("content-type", "text/plain")
                .body("hello"),
        ),
        9 => (
            "oversized json",
            Before(413),
            c.post(&msg).json(&json!({"text": "x".repeat(100 * 1024)})),
        ),
        15 => (
            "timeout_ms 0",
            Before(422),
            c.post(&msg).json(&json!({"text": "t", "timeout_ms": 0})),
        ),
        16 => (
            "wrong json shape",
            Before(422),
            c.post(&msg).json(&json!({"text": 42})),
        ),
        // Refused by `POST /jobs/pdf` before the queue.
        1 => (
            "bad json (pdf)",
            Before(400),
            c.post(&pdf)
                .header(JSON_TYPE.0, JSON_TYPE.1)
                .body("{\"path\": \"sample.pdf\","),
        ),
        3 => (
            "image/png to pdf",
            Before(415),
            c.post(&pdf)
                .header("content-type", "image/png")
                .body(ctx.fx.not_a_pdf.clone()),
        ),
        5 => (
            "pages 3-1",
            Before(400),
            c.post(format!("{pdf}?pages=3-1"))
                .json(&json!({"path": "sample.pdf"})),
        ),
        7 => (
            "dpi 0",
            Before(400),
            c.post(&pdf).json(&json!({"path": "sample.pdf", "dpi": 0})),
        ),
        8 => (
            "dpi 100000",
            Before(400),
            c.post(format!("{pdf}?dpi=100000"))
                .header(PDF_TYPE.0, PDF_TYPE.1)
                .body(ctx.fx.docs[0].1.clone()),
        ),
        10 => (
            "oversized upload",
            Before(413),
            c.post(&pdf).header(PDF_TYPE.0, PDF_TYPE.1).body(vec![
                b'%';
                MAX_UPLOAD_BYTES
                    + MAX_UPLOAD_BYTES / 2
            ]),
        ),
        13 => (
            "path out of data dir",
            Before(400),
            c.post(&pdf).json(&json!({"path": "../Cargo.toml"})),
        ),
        14 => (
            "missing file",
            Before(422),
            c.post(&pdf).json(&json!({"path": "no-such.pdf"})),
        ),
        17 => (
            "unknown field",
            Before(422),
            c.post(&pdf)
                .json(&json!({"path": "sample.pdf", "bogus": true})),
        ),
        18 => (
            "empty upload",
            Before(422),
            c.post(&pdf).header(PDF_TYPE.0, PDF_TYPE.1).body(""),
        ),
        19 => (
            "multipart without file",
            Before(400),
            c.post(&pdf)
                .multipart(reqwest::multipart::Form::new().text("dpi", "72")),
        ),
        20 => (
            "bad query",
            Before(400),
            c.post(format!("{pdf}?dpi=abc"))
                .json(&json!({"path": "sample.pdf"})),
        ),
        // PDF jobs the server takes and its renderer refuses (422 in place
        // of 200).
        4 => {
            let mut bytes: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
            bytes[0] = b'X';
            (
                "random bytes as pdf",
                unreadable,
                c.post(&pdf).header(PDF_TYPE.0, PDF_TYPE.1).body(bytes),
            )
        }
        6 => (
            "pages the document lacks",
            unreadable,
            c.post(&pdf)
                .json(&json!({"path": "sample.pdf", "pages": "7-9", "dpi": 36})),
        ),
        11 => (
            "encrypted, no password",
            unreadable,
            c.post(&pdf).json(&json!({"path": "encrypted.pdf"})),
        ),
        12 => (
            "huge page",
            unreadable,
            c.post(&pdf).json(&json!({"path": "huge-page.pdf"})),
        ),
        _ => (
            "truncated pdf",
            unreadable,
            c.post(format!("{pdf}?dpi=36"))
                .header(PDF_TYPE.0, PDF_TYPE.1)
                .body(ctx.fx.truncated.clone()),
        ),
    }
}
