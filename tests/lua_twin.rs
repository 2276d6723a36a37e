#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failure should stop it loudly
//! One algorithm, two executions: the Rust engine and its Lua twin (`src/store/check.lua`)
//! running in a real `redis-server` must decide every request identically. This test runs
//! the hand-written cases of `tests/vectors.json` through both, then thousands of random
//! requests through both side by side, comparing every limit's status; then random batches
//! of checks, leases and refunds over several subjects, each batch in one script call, which
//! must answer as the engine does and as the same operations sent one call each.
//!
//! It starts its own `redis-server` on a free loopback port (scripts/test installs it) and
//! stops it when done.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_limiter::core::algorithm::{
    check, lease, refund, Algorithm, Decision, Millis, Outcome, State, MAX_LIMITS, NO_END,
};
use edge_limiter::core::policy::Policy;
use edge_limiter::store::keys::state_key;
use edge_limiter::store::script::{
    batch_args, decode_batch, decode_reply, script_args, Answer, Op, CHECK_LUA, CHECK_SHA1,
};
use serde_json::Value;

/// A base instant aligned to a whole day, so window arithmetic in the vectors is readable.
const BASE: u64 = 1_699_920_000_000;

struct Redis {
    child: Child,
    conn: BufReader<TcpStream>,
    /// One redis-server at a time: tests run in parallel, and two could otherwise be given the
    /// same free port, the second then talking to the first's server until it stops.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_REDIS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn start() -> Redis {
        let guard = ONE_REDIS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
        Redis { child, conn: BufReader::new(stream), _one_at_a_time: guard }
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

fn numbers(reply: Reply) -> Vec<i64> {
    match reply {
        Reply::Array(items) => items
            .iter()
            .map(|i| match i {
                Reply::Int(v) => *v,
                other => panic!("non-integer in reply: {other:?}"),
            })
            .collect(),
        other => panic!("script failed: {other:?}"),
    }
}

fn decode(reply: Reply, limits: &[Algorithm], cost: u64) -> Decision {
    decode_reply(&numbers(reply), limits.len(), cost).unwrap()
}

/// Runs a batch through the Lua twin in one call, pinned as [`lua_check_pinned`] is: returns
/// the answers and the TTL of each distinct key just after the call (-1: not written by it).
fn lua_batch_pinned(
    redis: &mut Redis,
    keys: &[String],
    now: Millis,
    ops: &[Op<'_, Algorithm>],
) -> (Vec<Answer>, Vec<(String, i64)>) {
    let (argv, n) = (batch_args(now, ops), keys.len().to_string());
    let mut distinct: Vec<String> = keys.to_vec();
    distinct.sort();
    distinct.dedup();
    redis.command(&["MULTI"]);
    redis.command(&eval_args(keys, &argv, &n));
    for k in &distinct {
        redis.command(&["PTTL", k]);
    }
    for k in &distinct {
        redis.command(&["PERSIST", k]);
    }
    let Reply::Array(mut results) = redis.command(&["EXEC"]) else { panic!("EXEC failed") };
    let ttls = results[1..=distinct.len()]
        .iter()
        .zip(&distinct)
        .map(|(r, k)| match r {
            Reply::Int(t) => (k.clone(), *t),
            other => panic!("{other:?}"),
        })
        .collect();
    let answers = decode_batch(&numbers(results.swap_remove(0)), ops).unwrap();
    (answers, ttls)
}

/// The engine's answer to one operation.
fn native(limits: &[Algorithm], states: &mut [State], now: Millis, op: &Op<'_, Algorithm>) -> Answer {
    match *op {
        Op::Check { cost, want, .. } => Answer::Lease(lease(limits, states, now, cost, want)),
        Op::Refund { units, granted_at, .. } => Answer::Refund(refund(limits, states, now, units, granted_at)),
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
                if step.get("want").is_some() || step.get("refund").is_some() {
                    lease_or_refund_step(&mut redis, &keys, &limits, &mut states, now, step, name);
                    checked += 1;
                    continue;
                }
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

/// A vector step that leases (`want`) or refunds (`refund`), through both engines, the Lua
/// twin as a batch of one.
fn lease_or_refund_step(
    redis: &mut Redis,
    keys: &[String],
    limits: &[Algorithm],
    states: &mut [State],
    now: Millis,
    step: &Value,
    name: &str,
) {
    let op = match step.get("want") {
        Some(want) => Op::Check { limits, cost: step["cost"].as_u64().unwrap(), want: want.as_u64().unwrap() },
        None => Op::Refund {
            limits,
            units: step["refund"].as_u64().unwrap(),
            granted_at: BASE + step["granted_at"].as_u64().unwrap(),
        },
    };
    let ours = native(limits, states, now, &op);
    let (theirs, _) = lua_batch_pinned(redis, keys, now, std::slice::from_ref(&op));
    assert_eq!(theirs, [ours], "case `{name}` at {}: the engines differ", now - BASE);
    match ours {
        Answer::Lease(l) => {
            assert_eq!(&summary(&l.decision), &step["expect"], "case `{name}` at {}", now - BASE);
            let until = if l.until == NO_END { Value::from("none") } else { Value::from(l.until - BASE) };
            assert_eq!(
                (Value::from(l.granted), until),
                (step["granted"].clone(), step["until"].clone()),
                "case `{name}`"
            );
        }
        Answer::Refund(r) => assert_eq!(Value::from(r.limits()), step["returned"], "case `{name}` at {}", now - BASE),
    }
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

/// One subject of the batch test: its own tier of limits, its keys under two prefixes (one
/// for the batches, one for the same operations sent one call each), its engine state.
struct Subject {
    specs: Vec<Value>,
    limits: Vec<Algorithm>,
    batch_keys: Vec<String>,
    single_keys: Vec<String>,
    states: Vec<State>,
}

/// What a batch operation does, before its limits are lent to an [`Op`].
#[derive(Clone, Copy, Debug)]
enum Kind {
    Check { cost: u64, want: u64 },
    Refund { units: u64, granted_at: Millis },
}

fn make_op(limits: &[Algorithm], kind: Kind) -> Op<'_, Algorithm> {
    match kind {
        Kind::Check { cost, want } => Op::Check { limits, cost, want },
        Kind::Refund { units, granted_at } => Op::Refund { limits, units, granted_at },
    }
}

#[test]
fn random_batches_of_leases_and_refunds_agree_with_calls_in_sequence() {
    let mut redis = Redis::start();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut ops_run, mut batches, mut multi, mut spare, mut given_back) = (0, 0, 0, 0u64, 0u64);
    for case in 0..120 {
        let mut subjects: Vec<Subject> = (0..1 + rng.below(3))
            .map(|s| {
                let specs: Vec<Value> = (0..1 + rng.below(3)).map(|_| random_limit(&mut rng)).collect();
                let limits = parse_limits(&specs);
                let key = |prefix: &str, i: usize, l: &Algorithm| {
                    state_key(prefix, &format!("c{case}"), &format!("l{i}"), l, &format!("s{s}"))
                };
                let batch_keys = limits.iter().enumerate().map(|(i, l)| key("bat", i, l)).collect();
                let single_keys = limits.iter().enumerate().map(|(i, l)| key("one", i, l)).collect();
                let states = vec![State::Empty; limits.len()];
                Subject { specs, limits, batch_keys, single_keys, states }
            })
            .collect();
        // Leases not yet handed back: (subject, granted at, spare units).
        let mut open: Vec<(usize, Millis, u64)> = Vec::new();
        let mut now = BASE + rng.below(86_400_000);
        for step in 0..30 {
            // Now and then a subject's policy changes under the same keys.
            if rng.below(20) == 0 {
                let pick = rng.below(subjects.len() as u64) as usize;
                let s = &mut subjects[pick];
                s.specs = (0..s.limits.len()).map(|_| random_limit(&mut rng)).collect();
                s.limits = parse_limits(&s.specs);
            }
            now = match rng.below(10) {
                0 => now + rng.below(10_000_000),
                1 => now.saturating_sub(rng.below(5_000)),
                _ => now + rng.below(1_500),
            };
            let mut planned: Vec<(usize, Kind)> = Vec::new();
            for _ in 0..1 + rng.below(5) {
                let subject = rng.below(subjects.len() as u64) as usize;
                let cost = match rng.below(8) {
                    0 => 0,
                    1 => 1 + rng.below(25),
                    _ => 1,
                };
                let kind = match rng.below(10) {
                    0..=2 => Kind::Check { cost, want: cost },
                    3..=7 => Kind::Check { cost, want: cost + rng.below(20) },
                    _ if !open.is_empty() => {
                        let (subject, granted_at, units) = open.swap_remove(rng.below(open.len() as u64) as usize);
                        let units = if rng.below(4) == 0 { rng.below(units + 1) } else { units };
                        planned.push((subject, Kind::Refund { units, granted_at }));
                        continue;
                    }
                    _ => Kind::Check { cost, want: cost + 1 + rng.below(8) },
                };
                planned.push((subject, kind));
            }

            // The engine, one operation after the other.
            let mut ours = Vec::new();
            for &(s, kind) in &planned {
                let subject = &mut subjects[s];
                let limits = subject.limits.clone();
                let answer = native(&limits, &mut subject.states, now, &make_op(&limits, kind));
                if let Answer::Lease(l) = answer {
                    if l.spare() > 0 {
                        open.push((s, now, l.spare()));
                        spare += l.spare();
                    }
                }
                if let Answer::Refund(r) = answer {
                    given_back += r.limits().iter().sum::<u64>();
                }
                ours.push(answer);
            }

            // The twin: the whole batch in one call.
            let ops: Vec<Op<'_, Algorithm>> =
                planned.iter().map(|&(s, kind)| make_op(&subjects[s].limits, kind)).collect();
            let keys: Vec<String> = planned.iter().flat_map(|(s, _)| subjects[*s].batch_keys.clone()).collect();
            let (batched, ttls) = lua_batch_pinned(&mut redis, &keys, now, &ops);
            let context = || format!("case {case} step {step}: now {now}, ops {planned:?}");
            assert_eq!(batched, ours, "{}", context());
            // And the same operations one call each, on keys of their own.
            let singles: Vec<Answer> = planned
                .iter()
                .zip(&ops)
                .flat_map(|(p, op)| {
                    lua_batch_pinned(&mut redis, &subjects[p.0].single_keys, now, std::slice::from_ref(op)).0
                })
                .collect();
            assert_eq!(singles, batched, "{}: one call each differs from the batch", context());
            // A key written in this batch expires no later than its limit is whole again,
            // and never later than two of its spans.
            for subject in &subjects {
                for ((key, limit), state) in subject.batch_keys.iter().zip(&subject.limits).zip(&subject.states) {
                    let Some(&(_, ttl)) = ttls.iter().find(|(k, _)| k == key) else { continue };
                    let whole = limit.evaluate(state, now, 0).status.reset_ms;
                    assert!(ttl < 0 || ttl as u64 <= whole.max(1), "{}: {key} ttl {ttl}, whole in {whole}", context());
                    assert!(ttl < 0 || ttl as u64 <= 2 * limit.window_ms(), "{key}: ttl {ttl}");
                }
            }
            ops_run += ops.len();
            batches += 1;
            multi += usize::from(ops.len() > 1);
        }
    }
    println!(
        "{ops_run} operations in {batches} batches ({multi} of several), {spare} units leased, {given_back} given back"
    );
    assert!(ops_run > 8_000 && multi > 2_000, "{ops_run} operations, {multi} batches of several");
    assert!(spare > 2_000 && given_back > 1_000, "{spare} leased, {given_back} given back");
}

#[test]
fn a_malformed_batch_is_refused_before_anything_is_written() {
    let mut redis = Redis::start();
    let limits = parse_limits(&[serde_json::json!("2/s")]);
    let keys = ["bad:k".to_string()];
    let mut argv = batch_args(BASE, &[Op::check(&limits[..], 1)]);
    argv.push("7".into());
    let n = "1".to_string();
    assert!(matches!(redis.command(&eval_args(&keys, &argv, &n)), Reply::Error(_)), "one number too many");
    argv.truncate(argv.len() - 2);
    assert!(matches!(redis.command(&eval_args(&keys, &argv, &n)), Reply::Error(_)), "one number short");
    let mut argv = batch_args(BASE, &[Op::check(&limits[..], 1)]);
    argv[2] = "3".into();
    assert!(matches!(redis.command(&eval_args(&keys, &argv, &n)), Reply::Error(_)), "unknown operation");
    assert!(matches!(redis.command(&["EXISTS", "bad:k"]), Reply::Int(0)));
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

/// The fleet view's script (`fleet.lua`) in a real `redis-server`: two isolates flush their
/// tallies, and the read, as the dashboard renders it, adds up to what they recorded; the
/// per-minute keys expire, the totals do not.
#[test]
fn the_fleet_script_adds_up_what_isolates_flush() {
    use edge_limiter::core::fleet::{isolate_line, read_call, view, Event, Tally};
    use edge_limiter::store::script::FLEET_LUA;
    let mut redis = Redis::start();
    let now = BASE + 30 * 60_000 + 5_000;
    let mut flush = |t: &mut Tally, id: &str| {
        let (keys, args) = t.take_flush("fl", id, &isolate_line(now, "v1", "closed", 0));
        let n = keys.len().to_string();
        let mut cmd = vec!["EVAL", FLEET_LUA, n.as_str()];
        cmd.extend(keys.iter().map(String::as_str));
        cmd.extend(args.iter().map(String::as_str));
        match redis.command(&cmd) {
            Reply::Int(1) => {}
            other => panic!("flush answered {other:?}"),
        }
    };
    let (mut a, mut b) = (Tally::default(), Tally::default());
    for i in 0..7 {
        a.record(now - 60_000, Event::Allowed, "anonymous", "-", "upstash", Some(&format!("{:032x}", i % 2)));
    }
    for _ in 0..3 {
        b.record(now, Event::Denied, "anonymous", "-", "deny-cache", Some(&format!("{:032x}", 1)));
    }
    b.record(now, Event::Allowed, "premium", "/api/", "lease", None);
    flush(&mut a, "isolate-a");
    flush(&mut b, "isolate-b");
    b.record(now, Event::Allowed, "premium", "/api/", "lease", None);
    flush(&mut b, "isolate-b");

    let (keys, args) = read_call("fl", now);
    let n = keys.len().to_string();
    let mut cmd = vec!["EVAL", FLEET_LUA, n.as_str()];
    cmd.extend(keys.iter().map(String::as_str));
    cmd.extend(args.iter().map(String::as_str));
    let Reply::Text(json) = redis.command(&cmd) else { panic!("read answered no text") };
    let v = view(&serde_json::from_str(&json).unwrap(), now);
    let minutes = v["minutes"].as_array().unwrap();
    assert_eq!(minutes[58]["events"]["allowed"], 7, "isolate a's minute");
    assert_eq!(minutes[59]["events"]["denied"], 3);
    assert_eq!(minutes[59]["by_tier"]["allowed"]["premium"], 2, "two flushes of b add up");
    assert_eq!(v["totals"]["allowed"], 9);
    assert_eq!(v["totals"]["denied"], 3);
    assert_eq!(v["heaviest"][0]["subject_hash"], format!("{:032x}", 1), "3 + 3 requests, against 4");
    assert_eq!(v["heaviest"][0]["requests"], 6);
    assert_eq!(v["isolates"].as_array().unwrap().len(), 2);
    let mut ttl = |key: &str| match redis.command(&["PTTL", key]) {
        Reply::Int(ms) => ms,
        other => panic!("{other:?}"),
    };
    assert!(ttl(&format!("fl:fleet:m:{}", now / 60_000)) > 7_000_000, "a minute lives two hours");
    assert_eq!(ttl("fl:fleet:total"), -1, "the totals are counters");
}
