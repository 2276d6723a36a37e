//! The request fields that identity, CORS and the answers read: read once, in one call into
//! the runtime (`runtime::read`), for every path, the admin API and the dashboard too.

use crate::core::decision::prefers_html;
use crate::core::identity::RequestFacts;
use crate::core::lists::Lists;
use crate::core::policy::Policy;
use crate::runtime;

pub struct Fields {
    pub client_ip: Option<String>,
    forwarded_for: Option<String>,
    api_key: Option<String>,
    authorization: Option<String>,
    accept: Option<String>,
    /// `Origin`, for CORS.
    pub origin: Option<String>,
    /// `Access-Control-Request-Method`: with `Origin` and OPTIONS, a preflight.
    pub asks: Option<String>,
    upgrade: Option<String>,
    /// `User-Agent`, read only when the lists (the policy's or the runtime ones) have
    /// user-agent patterns.
    pub user_agent: Option<String>,
}

/// The fields every request is read for; the policy's own (the client address's field, the
/// API key's) follow them.
const READ: [&str; 9] = [
    "x-forwarded-for",
    "authorization",
    "accept",
    "origin",
    "access-control-request-method",
    "upgrade",
    // Placeholders replaced by the policy's names (see `names`).
    "",
    "",
    "",
];

/// `lists`: the lists requests are judged by (the policy's and the runtime ones).
fn names<'a>(policy: Option<&'a Policy>, lists: &Lists) -> [&'a str; 9] {
    let mut names = READ;
    if let Some(p) = policy {
        names[6] = &p.identity.client_ip.header;
        if let Some(k) = &p.identity.api_key {
            names[7] = &k.header;
        }
        if [&lists.block, &lists.allow].iter().any(|l| !l.user_agents.is_empty()) {
            names[8] = "user-agent";
        }
    }
    names
}

impl Fields {
    /// The fields through a lookup by (lowercase or not) name.
    fn from_lookup(policy: Option<&Policy>, lists: &Lists, text: impl Fn(&str) -> Option<String>) -> Fields {
        let [forwarded_for, authorization, accept, origin, asks, upgrade, ip, key, agent] = names(policy, lists);
        let named = |n: &str| if n.is_empty() { None } else { text(n) };
        Fields {
            client_ip: named(ip),
            forwarded_for: text(forwarded_for),
            api_key: named(key),
            authorization: text(authorization),
            accept: text(accept),
            origin: text(origin),
            asks: text(asks),
            upgrade: text(upgrade),
            user_agent: named(agent),
        }
    }

    /// From the runtime's request in one call: its method and URL too.
    pub fn read_request(
        request: &web_sys::Request,
        policy: Option<&Policy>,
        lists: &Lists,
    ) -> (String, String, Fields) {
        let names: Vec<&str> = names(policy, lists).into_iter().filter(|n| !n.is_empty()).collect();
        let read = runtime::read(request, &names);
        let values: Vec<(&str, Option<String>)> = names.into_iter().zip(read.values).collect();
        let fields = Fields::from_lookup(policy, lists, |name| {
            values.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.clone())
        });
        (read.method, read.url, fields)
    }

    pub fn facts(&self, now: u64) -> RequestFacts<'_> {
        RequestFacts {
            client_ip: self.client_ip.as_deref(),
            forwarded_for: self.forwarded_for.as_deref(),
            api_key: self.api_key.as_deref(),
            authorization: self.authorization.as_deref(),
            now_s: now / 1000,
        }
    }

    /// The caller would rather read a page than problem+json (a browser).
    pub fn html(&self) -> bool {
        self.accept.as_deref().is_some_and(prefers_html)
    }

    /// A WebSocket opening handshake (RFC 6455 §4.1): `Upgrade: websocket`.
    pub fn websocket(&self) -> bool {
        self.upgrade.as_deref().is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"))
    }

    /// `X-Forwarded-For` as the client sent it.
    pub fn forwarded_for(&self) -> Option<&str> {
        self.forwarded_for.as_deref()
    }
}
