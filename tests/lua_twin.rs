#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failure should stop it loudly
//! One algorithm, two executions: the Rust engine and its Lua twin (`src/store/check.lua`)
//! running in a real `redis-server` must decide every request identically. This test runs
//! the hand-written cases of `tests/vectors.json` through both, then thousands of random
//! requests through both side by side, comparing every limit's status.
//!
//! It starts its own `redis-server` on a free loopback port (scripts/test installs it) and
//! stops it when done.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_limiter::core::algorithm::{check, Algorithm, Decision, Outcome, State, MAX_LIMITS};
use edge_limiter::core::policy::Policy;
use edge_limiter::store::keys::state_key;
use edge_limiter::store::script::{decode_reply, script_args, CHECK_LUA, CHECK_SHA1};
use serde_json::Value;

/// A base instant aligned to a whole day, so window arithmetic in the vectors is readable.
const BASE: u64 = 1_699_920_000_000;

struct Redis {
    child: Child,
    conn: BufReader<TcpStream>,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("redis-server did not come up: {e}"),
            }
        };
        Redis { child, conn: BufReader::new(stream) }
    }

    fn command(&mut self, args: &[&str]) -> Reply {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.conn.get_mut().write_all(out.as_bytes()).unwrap();
        read_reply(&mut self.conn)
    }
}

#[derive(Debug)]
enum Reply {
    Int(i64),
    Text(String),
    Nil,
    Array(Vec<Reply>),
    Error(String),
}

fn read_reply(r: &mut BufReader<TcpStream>) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let (kind, rest) = line.trim_end().split_at(1);
    match kind {
        ":" => Reply::Int(rest.parse().unwrap()),
        "+" => Reply::Text(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        "$" if rest == "-1" => Reply::Nil,
        "$" => {
            let mut buf = vec![0u8; rest.parse::<usize>().unwrap() + 2];
            std::io::Read::read_exact(r, &mut buf).unwrap();
            Reply::Text(String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned())
        }
        "*" => Reply::Array((0..rest.parse::<usize>().unwrap()).map(|_| read_reply(r)).collect()),
        other => panic!("unexpected RESP type {other}"),
    }
}

fn eval_args<'a>(keys: &'a [String], argv: &'a [String], n: &'a str) -> Vec<&'a str> {
    let mut args: Vec<&str> = vec!["EVAL", CHECK_LUA, n];
    args.extend(keys.iter().map(String::as_str));
    args.extend(argv.iter().map(String::as_str));
    args
}

fn decode(reply: Reply, limits: &[Algorithm], cost: u64) -> Decision {
    match reply {
        Reply::Array(items) => {
            let nums: Vec<i64> = items
                .iter()
                .map(|i| match i {
                    Reply::Int(v) => *v,
                    other => panic!("non-integer in reply: {other:?}"),
                })
                .collect();
            decode_reply(&nums, limits.len(), cost).unwrap()
        }
        other => panic!("script failed: {other:?}"),
    }
}

/// Runs one check through the Lua twin and decodes its reply as the Upstash store will.
fn lua_check(redis: &mut Redis, keys: &[String], limits: &[Algorithm], now: u64, cost: u64) -> Decision {
    let (argv, n) = (script_args(limits, now, cost), keys.len().to_string());
    decode(redis.command(&eval_args(keys, &argv, &n)), limits, cost)
}

/// The same, and in the same transaction (one instant for Redis) the keys' TTLs are read
/// and then removed: the tests' clock is simulated, so Redis's real-time expiry must not
/// drop state under it. Returns the decision and each key's TTL before removal.
fn lua_check_pinned(
    redis: &mut Redis,
    keys: &[String],
    limits: &[Algorithm],
    now: u64,
    cost: u64,
) -> (Decision, Vec<i64>) {
    let (argv, n) = (script_args(limits, now, cost), keys.len().to_string());
    redis.command(&["MULTI"]);
    redis.command(&eval_args(keys, &argv, &n));
    for k in keys {
        redis.command(&["PTTL", k]);
    }
    for k in keys {
        redis.command(&["PERSIST", k]);
    }
    let Reply::Array(mut results) = redis.command(&["EXEC"]) else { panic!("EXEC failed") };
    let ttls = results[1..=keys.len()]
        .iter()
        .map(|r| match r {
            Reply::Int(t) => *t,
            other => panic!("{other:?}"),
        })
        .collect();
    (decode(results.swap_remove(0), limits, cost), ttls)
}

/// Limits written as in a policy (`{"token_bucket": ...}`), parsed by the real policy parser.
fn parse_limits(specs: &[Value]) -> Vec<Algorithm> {
    let named: serde_json::Map<String, Value> =
        specs.iter().enumerate().map(|(i, s)| (format!("l{i}"), s.clone())).collect();
    let doc = serde_json::json!({ "tiers": { "anonymous": { "limits": named } } });
    let policy = Policy::parse(&doc.to_string()).unwrap();
    policy.tiers[0].limits.iter().map(|l| l.algorithm).collect()
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Allowed => "allowed",
        Outcome::Denied => "denied",
        Outcome::Never => "never",
    }
}

fn summary(d: &Decision) -> Value {
    let b = d.binding_status();
    serde_json::json!([outcome_name(d.outcome), d.binding, b.remaining, b.reset_ms, b.retry_after_ms])
}

#[test]
fn vectors_pass_in_both_executions() {
    let doc: Value = serde_json::from_str(include_str!("vectors.json")).unwrap();
    let mut redis = Redis::start();
    let mut checked = 0;
    for (c, case) in doc["cases"].as_array().unwrap().iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        // `written_by`: earlier phases under other limits on the same state (a policy change
        // under one key, a rollback, two policy versions on one store), then the case's own.
        let mut phases: Vec<&Value> =
            case.get("written_by").and_then(Value::as_array).map_or(Vec::new(), |p| p.iter().collect());
        phases.push(case);
        let first = parse_limits(phases[0]["limits"].as_array().unwrap());
        // One key per position for every phase, as a store whose keys ignored the limits'
        // parameters would have: what these cases are about.
        let keys: Vec<String> = first
            .iter()
            .enumerate()
            .map(|(i, l)| state_key("vec", &format!("c{c}"), &format!("l{i}"), l, "s"))
            .collect();
        let mut states = vec![State::Empty; first.len()];
        for (p, phase) in phases.iter().enumerate() {
            let limits = parse_limits(phase["limits"].as_array().unwrap());
            assert_eq!(limits.len(), keys.len(), "case `{name}`: every phase has as many limits");
            for (s, step) in phase["steps"].as_array().unwrap().iter().enumerate() {
                let now = BASE + step["at"].as_u64().unwrap();
                let cost = step["cost"].as_u64().unwrap();
                let native = check(&limits, &mut states, now, cost);
                let lua = lua_check(&mut redis, &keys, &limits, now, cost);
                if let Some(expect) = step.get("expect") {
                    assert_eq!(&summary(&native), expect, "Rust engine, case `{name}`, phase {p}, step {s}");
                    assert_eq!(&summary(&lua), expect, "Lua twin, case `{name}`, phase {p}, step {s}");
                }
                assert_eq!(native, lua, "full decisions differ, case `{name}`, phase {p}, step {s}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "only {checked} steps ran");
}

/// xorshift: random enough for test inputs, and the same sequence on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_limit(rng: &mut Rng) -> Value {
    let periods = ["ms", "s", "7s", "min", "h", "day"];
    let period = periods[rng.below(periods.len() as u64) as usize];
    let n = 1 + rng.below(20);
    match rng.below(3) {
        0 => {
            let refill = match rng.below(3) {
                0 => format!("{n}/{period}"),
                1 => format!("0.{}/s", 1 + rng.below(9)),
                _ => format!("{}/s", 1 + rng.below(7)),
            };
            serde_json::json!({ "token_bucket": { "capacity": 1 + rng.below(12), "refill": refill } })
        }
        1 => serde_json::json!({ "fixed_window": format!("{n}/{period}") }),
        _ => serde_json::json!({ "sliding_window": format!("{n}/{period}") }),
    }
}

#[test]
fn random_traffic_gets_identical_decisions() {
    let mut redis = Redis::start();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut steps = 0;
    for case in 0..150 {
        let mut specs: Vec<Value> = (0..1 + rng.below(4)).map(|_| random_limit(&mut rng)).collect();
        let mut limits = parse_limits(&specs);
        assert!(limits.len() <= MAX_LIMITS);
        let keys: Vec<String> = limits
            .iter()
            .enumerate()
            .map(|(i, l)| state_key("rnd", &format!("c{case}"), &format!("l{i}"), l, "s"))
            .collect();
        let mut states = vec![State::Empty; limits.len()];
        let mut now = BASE + rng.below(86_400_000);
        for step in 0..40 {
            // Now and then the policy changes under the same keys (as if keys ignored the
            // limits' parameters): both engines must still agree on what they make of it.
            if rng.below(12) == 0 {
                specs = (0..limits.len()).map(|_| random_limit(&mut rng)).collect();
                limits = parse_limits(&specs);
            }
            // Mostly forward in small steps, sometimes a long idle, sometimes a step back.
            now = match rng.below(10) {
                0 => now + rng.below(10_000_000),
                1 => now.saturating_sub(rng.below(5_000)),
                _ => now + rng.below(1_500),
            };
            let cost = match rng.below(8) {
                0 => 0,
                1 => 1 + rng.below(25),
                _ => 1,
            };
            let native = check(&limits, &mut states, now, cost);
            let (lua, ttls) = lua_check_pinned(&mut redis, &keys, &limits, now, cost);
            assert_eq!(native, lua, "case {case} step {step}: limits {specs:?}, now {now}, cost {cost}");
            steps += 1;
            // A key just written expires no later than its limit is whole again, and never
            // later than two of its spans, whatever it held before.
            if lua.allowed() && cost > 0 {
                for ((key, status), ttl) in keys.iter().zip(lua.limits()).zip(&ttls) {
                    assert!(
                        *ttl >= 0 && *ttl as u64 <= status.reset_ms.max(1),
                        "{key}: ttl {ttl}, reset {}",
                        status.reset_ms
                    );
                }
            }
            for ((key, limit), ttl) in keys.iter().zip(&limits).zip(&ttls) {
                assert!(*ttl < 0 || *ttl as u64 <= 2 * limit.window_ms(), "{key}: ttl {ttl}, {limit:?}");
            }
            for (limit, status) in limits.iter().zip(lua.limits()) {
                let span = limit.window_ms();
                assert!(status.retry_after_ms <= 2 * span && status.reset_ms <= 2 * span, "{limit:?}: {status:?}");
            }
        }
    }
    assert_eq!(steps, 150 * 40);
}

#[test]
fn evalsha_serves_the_loaded_script() {
    let mut redis = Redis::start();
    let Reply::Text(sha) = redis.command(&["SCRIPT", "LOAD", CHECK_LUA]) else { panic!("load failed") };
    assert_eq!(sha, CHECK_SHA1, "the compile-time name of the script is the one Redis gives it");
    let limits = parse_limits(&[serde_json::json!("2/s")]);
    let argv = script_args(&limits, BASE, 1);
    let mut args: Vec<&str> = vec!["EVALSHA", &sha, "1", "sha:k"];
    args.extend(argv.iter().map(String::as_str));
    assert!(matches!(redis.command(&args), Reply::Array(_)));
    match redis.command(&["EVALSHA", "0000000000000000000000000000000000000000", "0"]) {
        Reply::Error(e) => assert!(e.starts_with("NOSCRIPT"), "{e}"),
        other => panic!("{other:?}"),
    }
    let _ = Reply::Nil;
}
