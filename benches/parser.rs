//! Benchmark 3 of issue 7: the stream-json parser, per kind of line.
//!
//! `cargo bench --bench parser` (criterion; reports lines/s and bytes/s for
//! each kind of line). What is measured is what the daemon does for every
//! stdout line: `parse_line` and `StreamSummary::record`.
//!
//! The parser is private to the crate, so this bench compiles the very same
//! source file, `src/agent/stream.rs`, as a module of its own (it depends only
//! on serde, serde_json, thiserror and the crate's `text` module, compiled here
//! the same way).
//!
//! Lines: recorded real-CLI lines from `tests/fixtures/stream/`
//! (`system/init`, assistant text, assistant tool_use, user tool_result,
//! result, and the whole recorded session), plus the same recorded shapes
//! with a 64 KiB payload: an assistant text block, a `Write` tool_use whose
//! `input.content` is 64 KiB of code, and a 64 KiB `Read` tool_result.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[allow(dead_code)] // the bench calls the parser, not every accessor
#[path = "../src/agent/stream.rs"]
mod stream;

#[allow(dead_code)] // the parser uses only some of the cutting helpers
#[path = "../src/text.rs"]
mod text;

const SESSION: &str = include_str!("../tests/fixtures/stream/success-complete.jsonl");

/// 64 KiB of JSON-escaped source code (quotes, `\n`, `\t`).
fn code_64k() -> String {
    let line = r#"    let value = parse(\"field\", &input)?;\n\tif value.is_empty() { return Err(Error::Empty); }\n"#;
    let mut text = String::new();
    while text.len() + line.len() <= 64 * 1024 {
        text.push_str(line);
    }
    text
}

/// The recorded session's line whose `type` (and content block type) match.
fn recorded(kind: &str) -> &'static str {
    SESSION
        .lines()
        .find(|line| line.contains(kind))
        .unwrap_or_else(|| panic!("no {kind} line in the fixture"))
}

fn lines() -> Vec<(&'static str, String)> {
    let code = code_64k();
    let text_line = recorded(r#""type":"text","text":"I'll"#);
    let tool_use = recorded(r#""type":"tool_use""#);
    let tool_result = recorded(r#""type":"tool_result""#);
    vec![
        ("init", recorded(r#""subtype":"init""#).to_owned()),
        ("assistant_text", text_line.to_owned()),
        (
            "assistant_text_64k",
            text_line.replace("I'll create the file now.", &code),
        ),
        ("tool_use", tool_use.to_owned()),
        (
            "tool_use_64k_input",
            tool_use.replace("written by the fake model\\n", &code),
        ),
        ("user_tool_result", tool_result.to_owned()),
        (
            "user_tool_result_64k",
            tool_result.replace(
                r#""content":"File created successfully"#,
                &format!(r#""content":"{code}File created successfully"#),
            ),
        ),
        ("result", recorded(r#""type":"result""#).to_owned()),
    ]
}

fn parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_line+record");
    for (name, line) in lines() {
        // Every line must parse, or the bench measures the error path.
        assert!(stream::parse_line(&line).is_ok(), "{name} does not parse");
        group.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: line.len() as u64,
        });
        let mut summary = stream::StreamSummary::default();
        group.bench_function(name, |b| {
            b.iter(|| {
                let event = stream::parse_line(black_box(&line)).expect("parses");
                summary.record(event);
            })
        });
    }
    let session: Vec<&str> = SESSION.lines().collect();
    group.throughput(Throughput::ElementsAndBytes {
        elements: session.len() as u64,
        bytes: SESSION.len() as u64,
    });
    group.bench_function("recorded_session", |b| {
        b.iter(|| {
            let mut summary = stream::StreamSummary::default();
            for line in &session {
                summary.record(stream::parse_line(black_box(line)).expect("parses"));
            }
            summary
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short windows: the machine is shared; criterion reports the spread.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = parser
}
criterion_main!(benches);
