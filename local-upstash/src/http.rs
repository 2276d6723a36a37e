//! A small HTTP/1.1 request parser (Content-Length and chunked bodies, keep-alive) and
//! response writer. Parsing is incremental: `parse_request` is fed the bytes received so far
//! and answers "need more", a complete request plus the bytes it used, or an error.

use std::io::{self, Write};

pub const MAX_HEAD: usize = 64 * 1024;
pub const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path plus optional `?query`.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        match self.target.find('?') {
            Some(i) => &self.target[..i],
            None => &self.target,
        }
    }

    pub fn query(&self) -> &str {
        match self.target.find('?') {
            Some(i) => &self.target[i + 1..],
            None => "",
        }
    }

    /// The first value of a query parameter, percent-decoded (`+` as space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        for pair in self.query().split('&') {
            let (k, v) = match pair.find('=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, ""),
            };
            if percent_decode(k, true) == name.as_bytes() {
                return Some(String::from_utf8_lossy(&percent_decode(v, true)).into_owned());
            }
        }
        None
    }

    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(|v| v.to_ascii_lowercase());
        let has = |t: &str| conn.as_deref().map(|c| c.split(',').any(|x| x.trim() == t)).unwrap_or(false);
        if self.minor >= 1 {
            !has("close")
        } else {
            has("keep-alive")
        }
    }

    pub fn expects_continue(&self) -> bool {
        self.minor >= 1 && self.header("expect").map(|v| v.eq_ignore_ascii_case("100-continue")).unwrap_or(false)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// Malformed request: answer 400 and close.
    Bad(&'static str),
    /// Head or body over the limits: answer 413 (or 431) and close.
    TooLarge,
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// Not enough bytes yet. `head` is set once the head is complete (for 100-continue).
    Partial {
        head: Option<Box<Request>>,
    },
    Complete(Request, usize),
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// Parse one request from the start of `buf`.
pub fn parse_request(buf: &[u8]) -> Result<Parsed, ParseError> {
    // Tolerate stray CRLFs between pipelined requests (RFC 9112 2.2).
    let mut start = 0;
    while buf.len() >= start + 2 && &buf[start..start + 2] == b"\r\n" {
        start += 2;
    }
    let head_end = match find(buf, b"\r\n\r\n", start) {
        Some(i) => i,
        None => {
            if buf.len() - start > MAX_HEAD {
                return Err(ParseError::TooLarge);
            }
            return Ok(Parsed::Partial { head: None });
        }
    };
    if head_end - start > MAX_HEAD {
        return Err(ParseError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[start..head_end]).map_err(|_| ParseError::Bad("request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().ok_or(ParseError::Bad("empty request"))?;
    let mut parts = request_line.split(' ');
    let method = parts.next().filter(|m| !m.is_empty()).ok_or(ParseError::Bad("no method"))?;
    let target = parts.next().filter(|t| !t.is_empty()).ok_or(ParseError::Bad("no request target"))?;
    let version = parts.next().ok_or(ParseError::Bad("no HTTP version"))?;
    if parts.next().is_some() {
        return Err(ParseError::Bad("malformed request line"));
    }
    if !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_') {
        return Err(ParseError::Bad("bad method"));
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(ParseError::Bad("unsupported HTTP version")),
    };
    let mut headers = Vec::new();
    for line in lines {
        let colon = line.find(':').ok_or(ParseError::Bad("header without colon"))?;
        let name = &line[..colon];
        if name.is_empty() || name.bytes().any(|b| b == b' ' || b == b'\t') {
            return Err(ParseError::Bad("bad header name"));
        }
        headers.push((name.to_ascii_lowercase(), line[colon + 1..].trim().to_string()));
    }
    let mut req = Request { method: method.to_string(), target: target.to_string(), minor, headers, body: Vec::new() };
    let body_start = head_end + 4;
    let chunked = req
        .header("transfer-encoding")
        .map(|v| v.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked"))
        .unwrap_or(false);
    if chunked {
        match decode_chunked(&buf[body_start..])? {
            Some((body, used)) => {
                req.body = body;
                Ok(Parsed::Complete(req, body_start + used))
            }
            None => Ok(Parsed::Partial { head: Some(Box::new(req)) }),
        }
    } else {
        let mut len: Option<usize> = None;
        for (n, v) in &req.headers {
            if n == "content-length" {
                let l: usize = v.parse().map_err(|_| ParseError::Bad("bad Content-Length"))?;
                if len.is_some_and(|p| p != l) {
                    return Err(ParseError::Bad("conflicting Content-Length"));
                }
                len = Some(l);
            }
        }
        let len = len.unwrap_or(0);
        if len > MAX_BODY {
            return Err(ParseError::TooLarge);
        }
        if buf.len() - body_start < len {
            return Ok(Parsed::Partial { head: Some(Box::new(req)) });
        }
        req.body = buf[body_start..body_start + len].to_vec();
        Ok(Parsed::Complete(req, body_start + len))
    }
}

/// Decode a chunked body; `Ok(None)` if incomplete.
fn decode_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ParseError> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let line_end = match find(buf, b"\r\n", pos) {
            Some(i) => i,
            None => {
                if buf.len() - pos > 1024 {
                    return Err(ParseError::Bad("chunk size line too long"));
                }
                return Ok(None);
            }
        };
        let line = std::str::from_utf8(&buf[pos..line_end]).map_err(|_| ParseError::Bad("bad chunk size"))?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16).map_err(|_| ParseError::Bad("bad chunk size"))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let e = match find(buf, b"\r\n", pos) {
                    Some(i) => i,
                    None => return Ok(None),
                };
                let empty = e == pos;
                pos = e + 2;
                if empty {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(ParseError::TooLarge);
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(ParseError::Bad("chunk not terminated by CRLF"));
        }
        pos += size + 2;
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode; invalid escapes are kept literally. `plus_as_space` for query strings.
pub fn percent_decode(s: &str, plus_as_space: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        if plus_as_space && b[i] == b'+' {
            out.push(b' ');
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
    out
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

pub fn write_response<W: Write>(
    w: &mut W,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    extra_headers: &[(&str, &str)],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", status, reason(status)).as_bytes());
    if !content_type.is_empty() {
        out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    out.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n".as_slice()
    } else {
        b"Connection: close\r\n".as_slice()
    });
    for (n, v) in extra_headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse_request(buf).unwrap() {
            Parsed::Complete(r, n) => (r, n),
            other => panic!("expected complete, got {other:?}"),
        }
    }

    #[test]
    fn parses_post_with_content_length() {
        let raw =
            b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 13\r\n\r\n[\"GET\",\"k\"]xx";
        let (r, n) = complete(raw);
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/");
        assert_eq!(r.minor, 1);
        assert_eq!(r.header("AUTHORIZATION"), Some("Bearer t"));
        assert_eq!(r.body, b"[\"GET\",\"k\"]xx");
        assert_eq!(n, raw.len());
        assert!(r.keep_alive());
    }

    #[test]
    fn partial_until_body_arrives() {
        let raw = b"POST /pipeline HTTP/1.1\r\nContent-Length: 5\r\n\r\nab";
        match parse_request(raw).unwrap() {
            Parsed::Partial { head: Some(h) } => assert_eq!(h.target, "/pipeline"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost").unwrap(), Parsed::Partial { head: None });
    }

    #[test]
    fn two_pipelined_requests() {
        let raw = b"GET /get/a HTTP/1.1\r\n\r\nGET /get/b?_token=x%20y HTTP/1.1\r\nConnection: close\r\n\r\n";
        let (r1, n1) = complete(raw);
        assert_eq!(r1.path(), "/get/a");
        assert!(r1.body.is_empty());
        let (r2, n2) = complete(&raw[n1..]);
        assert_eq!(r2.path(), "/get/b");
        assert_eq!(r2.query_param("_token").as_deref(), Some("x y"));
        assert_eq!(r2.query_param("nope"), None);
        assert!(!r2.keep_alive());
        assert_eq!(n1 + n2, raw.len());
    }

    #[test]
    fn http10_keep_alive_rules() {
        let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive());
        let (r, _) = complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive());
    }

    #[test]
    fn chunked_body() {
        let raw =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[\"PI\r\n4;ext=1\r\nNG\"]\r\n0\r\n\r\nNEXT";
        let (r, n) = complete(raw);
        assert_eq!(r.body, b"[\"PING\"]");
        assert_eq!(&raw[n..], b"NEXT");
        let partial = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[\"PI\r\n";
        assert!(matches!(parse_request(partial).unwrap(), Parsed::Partial { head: Some(_) }));
    }

    #[test]
    fn rejects_bad_requests() {
        assert!(matches!(parse_request(b"GARBAGE\r\n\r\n"), Err(ParseError::Bad(_))));
        assert!(matches!(parse_request(b"GET / HTTP/2.0\r\n\r\n"), Err(ParseError::Bad(_))));
        assert!(matches!(parse_request(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"), Err(ParseError::Bad(_))));
        assert!(matches!(parse_request(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Err(ParseError::Bad(_))));
        assert!(matches!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(ParseError::Bad(_))
        ));
        let big = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert_eq!(parse_request(big.as_bytes()), Err(ParseError::TooLarge));
        let huge_head = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(parse_request(&huge_head), Err(ParseError::TooLarge));
    }

    #[test]
    fn expect_continue() {
        let (r, _) = complete(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n");
        assert!(r.expects_continue());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc", false), b"a b/c");
        assert_eq!(percent_decode("a+b", false), b"a+b");
        assert_eq!(percent_decode("a+b", true), b"a b");
        assert_eq!(percent_decode("100%", false), b"100%");
        assert_eq!(percent_decode("%zz%4", false), b"%zz%4");
        assert_eq!(percent_decode("%e2%82%ac", false), "€".as_bytes());
    }

    #[test]
    fn writes_response() {
        let mut out = Vec::new();
        write_response(&mut out, 401, "application/json", b"{\"error\":\"Unauthorized\"}", true, &[]).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(s.contains("Content-Length: 24\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"error\":\"Unauthorized\"}"));
    }
}
