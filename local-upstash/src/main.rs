//! local-upstash: a server speaking the Upstash Redis REST protocol in front of a real
//! redis-server, for local development and tests of code written against Upstash.

mod app;
mod b64;
mod http;
mod redis;
mod resp;
mod script;

use app::{Fault, Outcome, State};
use http::{parse_request, write_response, ParseError, Parsed};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "usage: local-upstash --listen 127.0.0.1:PORT --redis 127.0.0.1:RPORT --token TOKEN [--fault MODE]
  env fallbacks: LOCAL_UPSTASH_LISTEN, LOCAL_UPSTASH_REDIS, LOCAL_UPSTASH_TOKEN, LOCAL_UPSTASH_FAULT
  fault modes: none | delay:MS | error500 | garbage | unauthorized | drop
  runtime switch: POST /__fault {\"mode\":\"...\"} (same token); health: GET /__health;
  per-route request counts: GET /__stats (same token)";

struct Config {
    listen: String,
    redis: String,
    token: String,
    fault: Fault,
}

fn die(msg: &str) -> ! {
    eprintln!("local-upstash: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn parse_args() -> Config {
    let mut listen = std::env::var("LOCAL_UPSTASH_LISTEN").ok();
    let mut redis = std::env::var("LOCAL_UPSTASH_REDIS").ok();
    let mut token = std::env::var("LOCAL_UPSTASH_TOKEN").ok();
    let mut fault = std::env::var("LOCAL_UPSTASH_FAULT").ok();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if key == "-h" || key == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let slot = match key.as_str() {
            "--listen" => &mut listen,
            "--redis" => &mut redis,
            "--token" => &mut token,
            "--fault" => &mut fault,
            _ => die(&format!("unknown argument {a:?}")),
        };
        let v = inline.or_else(|| args.next()).unwrap_or_else(|| die(&format!("{key} needs a value")));
        *slot = Some(v);
    }
    let listen = listen.unwrap_or_else(|| "127.0.0.1:8079".into());
    let redis = redis.unwrap_or_else(|| "127.0.0.1:6379".into());
    let token =
        token.filter(|t| !t.is_empty()).unwrap_or_else(|| die("a token is required (--token or LOCAL_UPSTASH_TOKEN)"));
    let fault = match fault {
        Some(f) => Fault::parse(&f).unwrap_or_else(|| die(&format!("unknown fault mode {f:?}"))),
        None => Fault::None,
    };
    Config { listen, redis, token, fault }
}

fn serve_conn(state: &State, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // Idle keep-alive connections are closed after this long.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let cors: [(&str, &str); 1] = [("Access-Control-Allow-Origin", "*")];
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sent_continue = false;
    loop {
        match parse_request(&buf) {
            Ok(Parsed::Complete(req, used)) => {
                buf.drain(..used);
                sent_continue = false;
                let keep_alive = req.keep_alive();
                match state.handle(&req) {
                    Outcome::Drop => return,
                    Outcome::Respond { status, content_type, body } => {
                        let mut headers: Vec<(&str, &str)> = cors.to_vec();
                        if req.method == "OPTIONS" {
                            headers.push(("Access-Control-Allow-Methods", "GET, POST, OPTIONS"));
                            headers.push(("Access-Control-Allow-Headers", "*"));
                        }
                        let body: &[u8] = if req.method == "HEAD" { &[] } else { &body };
                        if write_response(&mut stream, status, content_type, body, keep_alive, &headers).is_err() {
                            return;
                        }
                    }
                }
                if !keep_alive {
                    return;
                }
                continue;
            }
            Ok(Parsed::Partial { head }) => {
                if let Some(h) = head {
                    if h.expects_continue() && !sent_continue {
                        sent_continue = true;
                        if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                let (status, msg) = match e {
                    ParseError::Bad(m) => (400, format!("ERR bad HTTP request: {m}")),
                    ParseError::TooLarge => (413, "ERR request too large".to_string()),
                };
                let body = serde_json::json!({ "error": msg }).to_string();
                let _ = write_response(&mut stream, status, "application/json", body.as_bytes(), false, &cors);
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn main() {
    let cfg = parse_args();
    let addr: SocketAddr =
        cfg.listen.parse().unwrap_or_else(|_| die(&format!("--listen must be IP:PORT, got {:?}", cfg.listen)));
    let loopback = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if !loopback {
        die(&format!("refusing to listen on non-loopback address {addr}"));
    }
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("local-upstash: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    let bound = listener.local_addr().expect("local addr");
    let state = Arc::new(State::new(cfg.token, cfg.redis, cfg.fault));
    println!("local-upstash listening on http://{bound}");
    let _ = std::io::stdout().flush();
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let st = Arc::clone(&state);
                let spawned = std::thread::Builder::new().stack_size(256 * 1024).spawn(move || serve_conn(&st, stream));
                if let Err(e) = spawned {
                    eprintln!("local-upstash: cannot spawn connection thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("local-upstash: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
