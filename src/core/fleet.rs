//! The fleet view: what the whole deployment decided, not what one isolate saw. Each isolate
//! tallies its decisions per minute in memory ([`Tally`]) and flushes them at most every
//! [`FLUSH_EVERY_MS`] into the shared store in one script call (`store/fleet.lua`): per
//! minute a hash of counts and a sorted set of the heaviest subjects (by digest, with their
//! tier), both expiring after [`KEEP_MS`], totals that are counters for scrapers, and a line
//! per isolate (policy version, store and breaker state). The dashboard and the metrics read
//! them back in one call. With no shared store, none of it is written: the dashboard says the
//! counts are this isolate's.
//!
//! Keys: `<prefix>:fleet:total`, `<prefix>:fleet:isolates`, `<prefix>:fleet:m:<minute>` and
//! `<prefix>:fleet:top:<minute>` (`minute`: minutes since the epoch). A count's field is
//! `<event>|<tier>|<route>|<backend>`; a subject's member is `<digest>|<tier>`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use super::algorithm::Millis;
use super::order;

/// At most one flush per isolate in this long.
pub const FLUSH_EVERY_MS: Millis = 5_000;
/// How long the per-minute keys (and the isolates' lines) live: the last hour, and a margin.
pub const KEEP_MS: Millis = 2 * 3_600_000;
/// An isolate that has not flushed for this long is no longer shown.
pub const ISOLATE_FRESH_MS: Millis = 120_000;
/// The minutes the dashboard shows.
pub const MINUTES: u64 = 60;
/// Distinct subjects tallied per minute in an isolate between flushes; past it, only the
/// subjects already in are counted (the heavy ones are in early).
const MAX_SUBJECTS: usize = 1_000;
/// Heaviest subjects flushed per minute from an isolate, and read back per minute.
const TOP_FLUSHED: usize = 20;
const TOP_READ: usize = 10;

/// What happened to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    Allowed,
    Denied,
    ShadowDenied,
    Blocked,
    AllowListed,
    Delayed,
}

impl Event {
    pub fn as_str(&self) -> &'static str {
        match self {
            Event::Allowed => "allowed",
            Event::Denied => "denied",
            Event::ShadowDenied => "shadow_denied",
            Event::Blocked => "blocked",
            Event::AllowListed => "allow_listed",
            Event::Delayed => "delayed",
        }
    }
}

#[derive(Debug)]
struct Minute {
    minute: u64,
    counts: HashMap<String, u64>,
    subjects: HashMap<String, u64>,
}

/// One isolate's decisions since its last flush, per minute (one or two minutes between
/// flushes, so a short list). A request's field and member are written into `scratch` and
/// looked up from there: a key is allocated only the first time it is seen in a minute.
#[derive(Default, Debug)]
pub struct Tally {
    minutes: Vec<Minute>,
    scratch: String,
}

/// Appends a field part with `|` (the separator) written as `%7C`.
fn push_part(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '|' => out.push_str("%7C"),
            c => out.push(c),
        }
    }
}

/// One more under `key`; a key not yet counted is added only when `room`.
fn bump(map: &mut HashMap<String, u64>, key: &str, room: bool) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None if room => {
            map.insert(key.to_owned(), 1);
        }
        None => {}
    }
}

impl Tally {
    /// `route`: the matching rule's path prefix, or `-`; `subject`: its digest, when known.
    pub fn record(&mut self, now: Millis, event: Event, tier: &str, route: &str, backend: &str, subject: Option<&str>) {
        let at = now / 60_000;
        let i = match self.minutes.iter().position(|m| m.minute == at) {
            Some(i) => i,
            None => {
                self.minutes.push(Minute { minute: at, counts: HashMap::new(), subjects: HashMap::new() });
                self.minutes.len() - 1
            }
        };
        let Some(minute) = self.minutes.get_mut(i) else { return };
        let key = &mut self.scratch;
        key.clear();
        key.push_str(event.as_str());
        key.push('|');
        push_part(key, tier);
        key.push('|');
        push_part(key, route);
        key.push('|');
        push_part(key, backend);
        bump(&mut minute.counts, key, true);
        if let Some(digest) = subject {
            key.clear();
            key.push_str(digest);
            key.push('|');
            push_part(key, tier);
            let room = minute.subjects.len() < MAX_SUBJECTS;
            bump(&mut minute.subjects, key, room);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty()
    }

    /// Everything tallied, which is then forgotten (a failed flush loses it: counts are a
    /// view, not a ledger), oldest minute first.
    pub fn take(&mut self) -> Taken {
        let mut minutes = std::mem::take(&mut self.minutes);
        order::sort_by(&mut minutes, |a, b| a.minute.cmp(&b.minute));
        Taken(minutes)
    }

    /// The keys and arguments of one `fleet.lua` flush of everything tallied.
    pub fn take_flush(&mut self, prefix: &str, isolate: &str, line: &Value) -> (Vec<String>, Vec<String>) {
        self.take().script_call(prefix, isolate, line)
    }
}

/// What a flush carries, to the shared store ([`Taken::script_call`]) and to Workers
/// Analytics Engine ([`Taken::data_points`]), whichever the deployment has.
#[derive(Debug)]
pub struct Taken(Vec<Minute>);

/// Data points one flush writes to Analytics Engine, within the runtime's limit per
/// invocation (25 on older accounts, 250 now): the [`POINTS_DETAILED`] largest counts as
/// they are, the rest summed per event, so no request goes uncounted.
const MAX_POINTS: usize = 25;
const POINTS_DETAILED: usize = MAX_POINTS - 6;

impl Taken {
    /// The keys and arguments of one `fleet.lua` flush.
    pub fn script_call(&self, prefix: &str, isolate: &str, line: &Value) -> (Vec<String>, Vec<String>) {
        let mut keys = vec![format!("{prefix}:fleet:total"), format!("{prefix}:fleet:isolates")];
        let mut args = vec!["flush".to_string(), KEEP_MS.to_string(), isolate.to_string(), line.to_string()];
        args.push(self.0.len().to_string());
        for m in &self.0 {
            keys.push(format!("{prefix}:fleet:m:{}", m.minute));
            keys.push(format!("{prefix}:fleet:top:{}", m.minute));
            let mut top: Vec<(&String, u64)> = m.subjects.iter().map(|(k, n)| (k, *n)).collect();
            order::sort_by(&mut top, |a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            top.truncate(TOP_FLUSHED);
            args.push(m.counts.len().to_string());
            args.push(top.len().to_string());
            for (field, n) in &m.counts {
                args.push(field.clone());
                args.push(n.to_string());
            }
            for (member, n) in top {
                args.push(member.clone());
                args.push(n.to_string());
            }
        }
        (keys, args)
    }

    /// The counts as Analytics Engine data points (`writeDataPoint`'s argument), one per
    /// minute and field: `blobs` are the event, tier, route rule, backend, the isolate and its
    /// policy version (`blob1`..`blob6` in SQL), `doubles` the requests and the minute's start
    /// in ms (`double1`, `double2`), the index the tier (the sampling key). The heaviest
    /// subjects stay in the shared store: a digest per point would make every point unique.
    pub fn data_points(&self, isolate: &str, policy_version: &str) -> Vec<Value> {
        let mut rows: Vec<(u64, [String; 4], u64)> = (self.0.iter())
            .flat_map(|m| m.counts.iter().filter_map(|(field, n)| Some((m.minute, fields(field)?, *n))))
            .collect();
        order::sort_by(&mut rows, |a, b| b.2.cmp(&a.2).then_with(|| (a.0, &a.1).cmp(&(b.0, &b.1))));
        let point = |minute: u64, [event, tier, route, backend]: [String; 4], n: u64| {
            json!({
                "indexes": [tier.clone()],
                "blobs": [event, tier, route, backend, isolate, policy_version],
                "doubles": [n as f64, (minute * 60_000) as f64],
            })
        };
        let kept = if rows.len() > MAX_POINTS { POINTS_DETAILED } else { rows.len() };
        let rest = rows.split_off(kept);
        let mut points: Vec<Value> = rows.into_iter().map(|(minute, f, n)| point(minute, f, n)).collect();
        // The rest, per event, under the latest minute they span: tier, route and backend `*`.
        let mut folded: Vec<(String, u64, u64)> = Vec::new();
        for (minute, [event, ..], n) in rest {
            match folded.iter_mut().find(|(e, ..)| *e == event) {
                Some((_, last, sum)) => {
                    *last = (*last).max(minute);
                    *sum += n;
                }
                None => folded.push((event, minute, n)),
            }
        }
        for (event, minute, n) in folded {
            points.push(point(minute, [event, "*".into(), "*".into(), "*".into()], n));
        }
        points
    }
}

/// The keys and arguments of the read: the last [`MINUTES`] minutes up to `now`'s.
pub fn read_call(prefix: &str, now: Millis) -> (Vec<String>, Vec<String>) {
    let last = now / 60_000;
    let mut keys = vec![format!("{prefix}:fleet:total"), format!("{prefix}:fleet:isolates")];
    for minute in (last + 1).saturating_sub(MINUTES)..=last {
        keys.push(format!("{prefix}:fleet:m:{minute}"));
        keys.push(format!("{prefix}:fleet:top:{minute}"));
    }
    (keys, vec!["read".to_string(), TOP_READ.to_string()])
}

/// A count field read back: event, tier, route, backend.
fn fields(field: &str) -> Option<[String; 4]> {
    let mut it = field.split('|').map(|p| p.replace("%7C", "|"));
    let out = [it.next()?, it.next()?, it.next()?, it.next()?];
    it.next().is_none().then_some(out)
}

fn number(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse::<f64>().map_or(0, |f| f.max(0.0) as u64),
        _ => 0,
    }
}

/// The fleet as the dashboard shows it, from the read's JSON: per minute (oldest first) the
/// counts per event and per tier, the heaviest subjects of the hour, the isolates that
/// reported within [`ISOLATE_FRESH_MS`], and the totals by event.
pub fn view(read: &Value, now: Millis) -> Value {
    let last = now / 60_000;
    let first = (last + 1).saturating_sub(MINUTES);
    let minutes = read.get("minutes").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut series = Vec::new();
    let mut heaviest: HashMap<String, u64> = HashMap::new();
    for (i, m) in minutes.iter().enumerate() {
        let mut by_event: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_tier: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        if let Some(counts) = m.get("counts").and_then(Value::as_object) {
            for (field, n) in counts {
                let Some([event, tier, _, _]) = fields(field) else { continue };
                let n = number(n);
                *by_event.entry(event.clone()).or_insert(0) += n;
                *by_tier.entry(event).or_default().entry(tier).or_insert(0) += n;
            }
        }
        // A sorted set's WITHSCORES reply: member, score, member, score...
        if let Some(top) = m.get("top").and_then(Value::as_array) {
            for pair in top.chunks(2) {
                if let [Value::String(member), score] = pair {
                    *heaviest.entry(member.clone()).or_insert(0) += number(score);
                }
            }
        }
        series.push(json!({ "minute_ms": (first + i as u64) * 60_000, "events": by_event, "by_tier": by_tier }));
    }
    let mut top: Vec<(String, u64)> = heaviest.into_iter().collect();
    order::sort_by(&mut top, |a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let heaviest: Vec<Value> = (top.into_iter().take(TOP_READ))
        .filter_map(|(member, n)| {
            let (digest, tier) = member.split_once('|')?;
            Some(json!({ "subject_hash": digest, "tier": tier.replace("%7C", "|"), "requests": n }))
        })
        .collect();
    let mut isolates: Vec<Value> = (read.get("isolates").and_then(Value::as_object).into_iter().flatten())
        .filter_map(|(id, line)| {
            let mut v: Value = serde_json::from_str(line.as_str()?).ok()?;
            let seen = v.get("seen_ms").map(number)?;
            if now.saturating_sub(seen) > ISOLATE_FRESH_MS {
                return None;
            }
            let fields = v.as_object_mut()?;
            fields.insert("id".into(), json!(id));
            fields.insert("seen_ago_ms".into(), json!(now.saturating_sub(seen)));
            Some(v)
        })
        .collect();
    order::sort_by(&mut isolates, |a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for (field, n) in read.get("total").and_then(Value::as_object).into_iter().flatten() {
        if let Some([event, ..]) = fields(field) {
            *totals.entry(event).or_insert(0) += number(n);
        }
    }
    json!({ "scope": "fleet", "minutes": series, "heaviest": heaviest, "isolates": isolates, "totals": totals })
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics in the Prometheus text format (version 0.0.4): the fleet's request counters
/// by event, tier, route rule and backend, and per reporting isolate its store and breaker.
pub fn metrics(read: &Value, now: Millis) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP edge_limiter_requests_total Requests decided by the limiter, summed over every isolate of the fleet.\n",
    );
    out.push_str("# TYPE edge_limiter_requests_total counter\n");
    let mut rows: Vec<([String; 4], u64)> = (read.get("total").and_then(Value::as_object).into_iter().flatten())
        .filter_map(|(field, n)| Some((fields(field)?, number(n))))
        .collect();
    order::sort(&mut rows);
    for ([event, tier, route, backend], n) in rows {
        let _ = writeln!(
            out,
            "edge_limiter_requests_total{{outcome=\"{}\",tier=\"{}\",route=\"{}\",backend=\"{}\"}} {n}",
            label(&event),
            label(&tier),
            label(&route),
            label(&backend)
        );
    }
    let v = view(read, now);
    let isolates = v["isolates"].as_array().cloned().unwrap_or_default();
    out.push_str("# HELP edge_limiter_isolates Isolates that reported in the last two minutes.\n");
    out.push_str("# TYPE edge_limiter_isolates gauge\n");
    let _ = writeln!(out, "edge_limiter_isolates {}", isolates.len());
    out.push_str(
        "# HELP edge_limiter_breaker_open Whether an isolate's circuit to the store is open (1) or not (0).\n",
    );
    out.push_str("# TYPE edge_limiter_breaker_open gauge\n");
    for i in &isolates {
        let open = u8::from(i["breaker"].as_str() == Some("open"));
        let _ =
            writeln!(out, "edge_limiter_breaker_open{{isolate=\"{}\"}} {open}", label(i["id"].as_str().unwrap_or("?")));
    }
    out.push_str("# HELP edge_limiter_store_failures Store failures an isolate has seen since it started.\n");
    out.push_str("# TYPE edge_limiter_store_failures gauge\n");
    for i in &isolates {
        let _ = writeln!(
            out,
            "edge_limiter_store_failures{{isolate=\"{}\"}} {}",
            label(i["id"].as_str().unwrap_or("?")),
            i["store_failures"].as_u64().unwrap_or(0)
        );
    }
    out
}

/// An isolate's line in the isolates hash.
pub fn isolate_line(now: Millis, policy_version: &str, breaker: &str, store_failures: u64) -> Value {
    let mut m = Map::new();
    m.insert("seen_ms".into(), json!(now));
    m.insert("policy_version".into(), json!(policy_version));
    m.insert("breaker".into(), json!(breaker));
    m.insert("store_failures".into(), json!(store_failures));
    m.insert("limiter".into(), json!(env!("CARGO_PKG_VERSION")));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_800_000_000_000;

    #[test]
    fn a_flush_carries_every_minute_and_then_forgets() {
        let mut t = Tally::default();
        t.record(NOW, Event::Allowed, "anonymous", "-", "upstash", Some("aa"));
        t.record(NOW + 1, Event::Allowed, "anonymous", "-", "upstash", Some("aa"));
        t.record(NOW + 60_000, Event::Denied, "premium", "/api|x/", "deny-cache", Some("bb"));
        let line = isolate_line(NOW, "v1", "closed", 0);
        let (keys, args) = t.take_flush("rl", "iso1", &line);
        let m = NOW / 60_000;
        assert_eq!(
            keys,
            [
                "rl:fleet:total".to_string(),
                "rl:fleet:isolates".into(),
                format!("rl:fleet:m:{m}"),
                format!("rl:fleet:top:{m}"),
                format!("rl:fleet:m:{}", m + 1),
                format!("rl:fleet:top:{}", m + 1)
            ]
        );
        assert_eq!(args[..5], ["flush", "7200000", "iso1", &line.to_string(), "2"]);
        assert_eq!(args[5..11], ["1", "1", "allowed|anonymous|-|upstash", "2", "aa|anonymous", "2"]);
        assert_eq!(args[11..], ["1", "1", "denied|premium|/api%7Cx/|deny-cache", "1", "bb|premium", "1"]);
        assert!(t.is_empty());
    }

    #[test]
    fn subjects_tallied_are_bounded() {
        let mut t = Tally::default();
        for i in 0..(MAX_SUBJECTS + 50) {
            t.record(NOW, Event::Allowed, "a", "-", "memory", Some(&format!("{i:032x}")));
        }
        t.record(NOW, Event::Allowed, "a", "-", "memory", Some(&format!("{:032x}", 3)));
        let (_, args) = t.take_flush("rl", "i", &json!({}));
        assert_eq!(args[5..7], ["1", &TOP_FLUSHED.to_string()], "one count field, the heaviest 20 subjects");
        assert_eq!(args[9], format!("{:032x}|a", 3), "the heaviest first");
    }

    #[test]
    fn data_points_name_every_count_within_the_limit_per_invocation() {
        let mut t = Tally::default();
        t.record(NOW, Event::Allowed, "anonymous", "/api|x/", "upstash", Some("aa"));
        t.record(NOW, Event::Allowed, "anonymous", "/api|x/", "upstash", Some("aa"));
        t.record(NOW + 60_000, Event::Denied, "premium", "-", "deny-cache", Some("bb"));
        let points = t.take().data_points("iso1", "v1");
        assert_eq!(
            points,
            [
                json!({"indexes": ["anonymous"], "blobs": ["allowed", "anonymous", "/api|x/", "upstash", "iso1", "v1"], "doubles": [2.0, ((NOW / 60_000) * 60_000) as f64]}),
                json!({"indexes": ["premium"], "blobs": ["denied", "premium", "-", "deny-cache", "iso1", "v1"], "doubles": [1.0, ((NOW / 60_000 + 1) * 60_000) as f64]}),
            ]
        );
        // More fields than one invocation may write: the largest as they are, the rest summed
        // per event, and the sums add up to what was recorded.
        let mut t = Tally::default();
        let mut sent = 0.0;
        for route in 0..40u64 {
            for _ in 0..=route {
                t.record(NOW, Event::Allowed, "a", &format!("/r{route}/"), "memory", None);
                sent += 1.0;
            }
            t.record(NOW, Event::Denied, "a", &format!("/r{route}/"), "memory", None);
            sent += 1.0;
        }
        let points = t.take().data_points("i", "v");
        assert!(points.len() <= MAX_POINTS, "{}", points.len());
        let total: f64 = points.iter().map(|p| p["doubles"][0].as_f64().unwrap()).sum();
        assert_eq!(total, sent);
        assert_eq!(points[0]["blobs"][2], "/r39/", "the largest first");
        let folded: Vec<&Value> = points.iter().filter(|p| p["blobs"][1] == "*").collect();
        assert_eq!(folded.len(), 2, "one per event: allowed and denied");
        assert_eq!(Tally::default().take().data_points("i", "v"), Vec::<Value>::new());
    }

    fn read_reply() -> Value {
        let m = NOW / 60_000;
        let _ = m;
        json!({
            "total": {"allowed|anonymous|-|upstash": "10", "denied|anonymous|-|upstash": "4", "denied|premium|/api/|lease": "1"},
            "isolates": {
                "a1": isolate_line(NOW - 1_000, "v1", "closed", 0).to_string(),
                "b2": isolate_line(NOW - 3_000, "v2", "open", 7).to_string(),
                "old": isolate_line(NOW - 600_000, "v0", "closed", 0).to_string()
            },
            "minutes": (0..MINUTES).map(|i| if i == MINUTES - 1 {
                json!({"counts": {"allowed|anonymous|-|upstash": "6", "denied|premium|/api/|lease": "1"}, "top": ["aa|anonymous", "5", "bb|premium", "1"]})
            } else {
                json!({"counts": {}, "top": {}})
            }).collect::<Vec<_>>()
        })
    }

    #[test]
    fn the_view_adds_up_and_shows_recent_isolates_only() {
        let v = view(&read_reply(), NOW);
        let minutes = v["minutes"].as_array().unwrap();
        assert_eq!(minutes.len(), MINUTES as usize);
        assert_eq!(minutes[59]["events"]["allowed"], 6);
        assert_eq!(minutes[59]["by_tier"]["denied"]["premium"], 1);
        assert_eq!(minutes[59]["minute_ms"], (NOW / 60_000) * 60_000);
        assert_eq!(v["heaviest"][0], json!({"subject_hash": "aa", "tier": "anonymous", "requests": 5}));
        let ids: Vec<&str> = v["isolates"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a1", "b2"]);
        assert_eq!(v["totals"]["denied"], 5);
    }

    #[test]
    fn metrics_follow_the_text_format() {
        let text = metrics(&read_reply(), NOW);
        assert!(text.contains("# TYPE edge_limiter_requests_total counter\n"));
        assert!(text.contains(
            "edge_limiter_requests_total{outcome=\"allowed\",tier=\"anonymous\",route=\"-\",backend=\"upstash\"} 10\n"
        ));
        assert!(text.contains("edge_limiter_isolates 2\n"));
        assert!(text.contains("edge_limiter_breaker_open{isolate=\"b2\"} 1\n"));
        assert!(text.contains("edge_limiter_store_failures{isolate=\"b2\"} 7\n"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        for line in text.lines() {
            assert!(line.starts_with('#') || line.starts_with("edge_limiter_"), "{line}");
        }
    }

    #[test]
    fn the_read_covers_the_last_hour() {
        let (keys, args) = read_call("rl", NOW);
        assert_eq!(keys.len(), 2 + 2 * MINUTES as usize);
        assert_eq!(keys.last().unwrap(), &format!("rl:fleet:top:{}", NOW / 60_000));
        assert_eq!(args, ["read", "10"]);
    }
}
