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

const FIELDS: usize = 9;

/// The fields every request is read for; the policy's own (the client address's field, the
/// API key's) follow them.
const READ: [&str; FIELDS] = [
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

/// `lists`: the lists requests are judged by (the policy's and the runtime ones). An empty
/// name is a field not read (its value is `None`).
fn names<'a>(policy: Option<&'a Policy>, lists: &Lists) -> [&'a str; FIELDS] {
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
    /// From the runtime's request in one call: its method and URL too. Each value is read
    /// into its own `String` once, where it is kept.
    pub fn read_request(
        request: &web_sys::Request,
        policy: Option<&Policy>,
        lists: &Lists,
    ) -> (String, String, Fields) {
        let read = runtime::read(request, &names(policy, lists));
        let [forwarded_for, authorization, accept, origin, asks, upgrade, client_ip, api_key, user_agent] = read.values;
        let fields =
            Fields { client_ip, forwarded_for, api_key, authorization, accept, origin, asks, upgrade, user_agent };
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
