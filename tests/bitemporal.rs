//! Valid time (design §6): `valid_at` and `current=true` in `/v1/query`, alone and with `as_of`
//! (bitemporal: what the log knew at a tree size about what held at a time), through every lens;
//! and `/v1/history`, each assertion of a group in log order with what became of it.

mod common;

use common::{BIN, Server, start};
use serde_json::{Value, json};
use stemedb_core::{SigningKey, sign, signing_key_from_seed};

const SUBJECT: &str = "org/acme";

fn key(n: u8) -> SigningKey {
    signing_key_from_seed(&[n; 32])
}

fn agent_hex(n: u8) -> String {
    hex::encode(key(n).verifying_key().as_bytes())
}

fn envelope(agent: u8, extra: Value) -> Vec<u8> {
    let k = key(agent);
    let mut st = json!({
        "v": 1, "subject": SUBJECT, "predicate": "ceo",
        "agent": agent_hex(agent),
    });
    for (name, v) in extra.as_object().expect("object").clone() {
        st[name] = v;
    }
    match sign(&k, st.to_string().into_bytes()) {
        Ok(v) => v.envelope().encode(),
        Err(e) => panic!("test statement must be valid: {e}"),
    }
}

fn post(url: &str, env: Vec<u8>) -> String {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{url}/v1/assert"))
        .header("content-type", "application/json")
        .body(env)
        .send()
        .expect("post");
    let status = resp.status().as_u16();
    let body: Value = resp.json().expect("json");
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_string()
}

fn get(url: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::blocking::get(format!("{url}{path}")).expect("get");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// The winners' objects of a query, in result order.
fn objects(url: &str, params: &str) -> Vec<String> {
    let (status, body) = get(url, &format!("/v1/query?subject={SUBJECT}&{params}"));
    assert_eq!(status, 200, "{params}: {body}");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["winner"]["object"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn serve(dir: &tempfile::TempDir) -> Server {
    let d = dir.path().to_str().expect("utf-8 path");
    start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", d],
        &[],
    )
}

#[test]
fn valid_at_and_as_of_answer_bitemporal_questions_through_every_lens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&dir);
    let url = server.url();
    // Agent 1: alice held [1000, 2000), bob [2000, 3000); agent 2: carol from 2500 on.
    let alice = post(
        &url,
        envelope(
            1,
            json!({"object": "alice", "ts": 10, "confidence": 0.9, "valid_from": 1000, "valid_until": 2000}),
        ),
    );
    let bob = post(
        &url,
        envelope(
            1,
            json!({"object": "bob", "ts": 20, "confidence": 0.8, "valid_from": 2000, "valid_until": 3000}),
        ),
    );
    let carol = post(
        &url,
        envelope(
            2,
            json!({"object": "carol", "ts": 30, "confidence": 0.6, "valid_from": 2500}),
        ),
    );
    // Tree size 3. Agent 1 corrects bob (same interval): "bobby".
    let bobby = post(
        &url,
        envelope(
            1,
            json!({"object": "bobby", "ts": 40, "confidence": 0.8, "valid_from": 2000,
                   "valid_until": 3000, "supersedes": [bob]}),
        ),
    );

    let resolving = ["latest", "trusted", "consensus", "confidence"];
    for lens in resolving {
        let q = |extra: &str| objects(&url, &format!("lens={lens}&{extra}"));
        // Without valid time each agent's newest assertion is its belief.
        let now = q("");
        assert!(now == ["bobby"] || now == ["carol"], "{lens}: {now:?}");
        // Inside alice's interval: agent 1's newest assertion *that held then* is alice,
        // though it is not agent 1's newest assertion.
        assert_eq!(q("valid_at=1500"), ["alice"], "{lens}");
        // The end of an interval is exclusive; its start inclusive.
        assert_eq!(q("valid_at=1999"), ["alice"], "{lens}");
        assert_eq!(q("valid_at=2000"), ["bobby"], "{lens}");
        // Between carol's start and bob's end: the correction, before carol begins.
        assert_eq!(q("valid_at=2200"), ["bobby"], "{lens}");
        // Outside every interval of agent 1: carol alone.
        assert_eq!(q("valid_at=3500"), ["carol"], "{lens}");
        // Before every interval: nothing held.
        assert_eq!(q("valid_at=500"), Vec::<String>::new(), "{lens}");
        // Bitemporal: as the log stood before the correction, bob held at 2200.
        assert_eq!(q("valid_at=2200&as_of=3"), ["bob"], "{lens}");
        assert_eq!(q("valid_at=1500&as_of=1"), ["alice"], "{lens}");
        assert_eq!(q("valid_at=2200&as_of=1"), Vec::<String>::new(), "{lens}");
        assert_eq!(q("valid_at=3500&as_of=2"), Vec::<String>::new(), "{lens}");
        // At 2700 both agents' beliefs hold and disagree.
        let (_, body) = get(
            &url,
            &format!("/v1/query?subject={SUBJECT}&lens={lens}&valid_at=2700"),
        );
        let r = &body["results"][0];
        assert_eq!(r["conflict"], true, "{lens}: {body}");
        assert_eq!(r["alternatives_total"], 1, "{lens}: {body}");
        // `current` is valid_at = now: only carol's open interval holds.
        assert_eq!(q("current=true"), ["carol"], "{lens}");
    }
    // Results carry their validity interval.
    let (_, body) = get(&url, &format!("/v1/query?subject={SUBJECT}&valid_at=1500"));
    assert_eq!(body["results"][0]["winner"]["valid_from"], 1000, "{body}");
    assert_eq!(body["results"][0]["winner"]["valid_until"], 2000, "{body}");
    let (_, body) = get(&url, &format!("/v1/query?subject={SUBJECT}&valid_at=3500"));
    assert_eq!(body["results"][0]["winner"]["valid_from"], 2500, "{body}");
    assert!(
        body["results"][0]["winner"].get("valid_until").is_none(),
        "{body}"
    );

    // raw: every assertion that held, one result each.
    let ids = |params: &str| -> Vec<String> {
        let (status, body) = get(
            &url,
            &format!("/v1/query?subject={SUBJECT}&lens=raw&{params}"),
        );
        assert_eq!(status, 200, "{body}");
        let mut v: Vec<String> = body["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["winner"]["id"].as_str().expect("id").to_string())
            .collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        ids("valid_at=2700"),
        sorted(vec![bobby.clone(), carol.clone()])
    );
    assert_eq!(
        ids("valid_at=2700&include_superseded=true"),
        sorted(vec![bob.clone(), bobby.clone(), carol.clone()])
    );
    assert_eq!(
        ids("valid_at=2700&as_of=3"),
        sorted(vec![bob.clone(), carol.clone()])
    );
    assert_eq!(ids("valid_at=1500"), vec![alice.clone()]);
    assert_eq!(ids("valid_at=1500&as_of=0"), Vec::<String>::new());
    assert_eq!(ids("valid_at=500"), Vec::<String>::new());

    // The CLI asks the same questions.
    let cli = |args: &[&str]| -> Value {
        let out = std::process::Command::new(BIN)
            .args([
                "query",
                "--server",
                &url,
                "--subject",
                SUBJECT,
                "--format",
                "json",
            ])
            .args(args)
            .output()
            .expect("stemedb query");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    assert_eq!(
        cli(&["--valid-at", "1500"])["results"][0]["winner"]["object"],
        "alice"
    );
    assert_eq!(
        cli(&["--valid-at", "2200", "--as-of", "3"])["results"][0]["winner"]["object"],
        "bob"
    );
    assert_eq!(
        cli(&["--current"])["results"][0]["winner"]["object"],
        "carol"
    );

    // The same through POST, and bad combinations are refused.
    let resp = reqwest::blocking::Client::new()
        .post(format!("{url}/v1/query"))
        .json(&json!({"subject": SUBJECT, "valid_at": 2200, "as_of": 3}))
        .send()
        .expect("post query");
    let body: Value = resp.json().expect("json");
    assert_eq!(body["results"][0]["winner"]["object"], "bob", "{body}");
    for bad in ["valid_at=5&current=true", "valid_at=soon", "current=yes"] {
        let (status, body) = get(&url, &format!("/v1/query?subject={SUBJECT}&{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["code"], "bad_query", "{bad}: {body}");
    }

    // History: log order, what became of each, as of any tree size.
    let retraction = post(
        &url,
        envelope(
            2,
            json!({"object": null, "ts": 50, "retract": true, "supersedes": [carol]}),
        ),
    );
    let history = |params: &str| -> Vec<(String, String)> {
        let (status, body) = get(
            &url,
            &format!("/v1/history?subject={SUBJECT}&predicate=ceo{params}"),
        );
        assert_eq!(status, 200, "{body}");
        body["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().expect("id").to_string(),
                    e["status"].as_str().expect("status").to_string(),
                )
            })
            .collect()
    };
    let s = |id: &String, st: &str| (id.clone(), st.to_string());
    assert_eq!(
        history(""),
        vec![
            s(&alice, "live"),
            s(&bob, "superseded"),
            s(&carol, "retracted"),
            s(&bobby, "live"),
            s(&retraction, "retraction"),
        ]
    );
    assert_eq!(
        history("&as_of=3"),
        vec![s(&alice, "live"), s(&bob, "live"), s(&carol, "live")]
    );
    // Pages by log index.
    let (_, page) = get(
        &url,
        &format!("/v1/history?subject={SUBJECT}&predicate=ceo&limit=2"),
    );
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(2), "{page}");
    assert_eq!(page["next_after"], 1, "{page}");
    assert_eq!(
        history("&after=1"),
        vec![
            s(&carol, "retracted"),
            s(&bobby, "live"),
            s(&retraction, "retraction")
        ]
    );
    let (_, full) = get(
        &url,
        &format!("/v1/history?subject={SUBJECT}&predicate=ceo"),
    );
    let e = &full["entries"][1];
    assert_eq!(e["superseded_by"], bobby.as_str(), "{full}");
    assert_eq!(e["valid_from"], 2000, "{full}");
    assert_eq!(e["agent"], agent_hex(1).as_str(), "{full}");
    assert_eq!(
        full["entries"][4]["supersedes"][0],
        carol.as_str(),
        "{full}"
    );
    assert!(full["next_after"].is_null(), "{full}");
    // After the retraction, current=true holds nothing; as of before it, carol.
    assert_eq!(objects(&url, "current=true"), Vec::<String>::new());
    assert_eq!(objects(&url, "current=true&as_of=4"), ["carol"]);
    // A retraction its agent corrects names the correction; what it retracted stays retracted.
    let undo = post(
        &url,
        envelope(
            2,
            json!({"object": "carol again", "ts": 60, "supersedes": [retraction]}),
        ),
    );
    let (_, full) = get(
        &url,
        &format!("/v1/history?subject={SUBJECT}&predicate=ceo"),
    );
    assert_eq!(full["entries"][4]["status"], "retraction", "{full}");
    assert_eq!(full["entries"][4]["superseded_by"], undo.as_str(), "{full}");
    assert_eq!(full["entries"][2]["status"], "retracted", "{full}");
    assert_eq!(
        full["entries"][2]["superseded_by"],
        retraction.as_str(),
        "{full}"
    );
    assert_eq!(full["entries"][5]["status"], "live", "{full}");
    let (_, before) = get(
        &url,
        &format!("/v1/history?subject={SUBJECT}&predicate=ceo&as_of=5"),
    );
    assert!(before["entries"][4]["superseded_by"].is_null(), "{before}");
    for bad in [
        "",
        "&predicate=ceo&as_of=99",
        "&predicate=ceo&limit=0",
        "&predicate=a b",
    ] {
        let (status, body) = get(&url, &format!("/v1/history?subject={SUBJECT}{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
