//! The request fields that identity and the answers read, read once.

use worker::Headers;

use crate::core::decision::prefers_html;
use crate::core::identity::RequestFacts;
use crate::core::policy::Policy;

pub struct Fields {
    pub client_ip: Option<String>,
    forwarded_for: Option<String>,
    api_key: Option<String>,
    authorization: Option<String>,
    accept: Option<String>,
}

impl Fields {
    pub fn read(headers: &Headers, policy: &Policy) -> Fields {
        let text = |name: &str| headers.get(name).ok().flatten();
        Fields {
            client_ip: text(&policy.identity.client_ip.header),
            forwarded_for: text("x-forwarded-for"),
            api_key: policy.identity.api_key.as_ref().and_then(|k| text(&k.header)),
            authorization: text("authorization"),
            accept: text("accept"),
        }
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
}
