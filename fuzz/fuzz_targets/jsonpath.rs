//! A JSONPath ignore rule evaluated on two JSON bodies by the differ.
//! Input: the query, a NUL, legacy's body, a NUL, new's body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tandem::capture::{Body, Header, Response};
use tandem::diff::rules::RuleSet;
use tandem::diff::Differ;
use tandem::route::Route;

fn answer(body: &[u8]) -> Response {
    Response {
        status: 200,
        headers: vec![Header("content-type".into(), "application/json".into())],
        body: Body(bytes::Bytes::copy_from_slice(body)),
        latency_us: 0,
        truncated: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let (Some(query), Some(legacy), Some(new)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let text = format!("[[route]]\nmatch = \"GET /x\"\nignore_paths = [{:?}]\n", query);
    let Ok(rules) = RuleSet::parse(&text) else {
        return;
    };
    let mut differ = Differ::new(rules);
    let _ = differ.compare(&Route::of("GET", "/x"), &answer(legacy), &answer(new));
});
