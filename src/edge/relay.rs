//! A WebSocket relay for the routes that limit messages per connection
//! (`websocket_messages`). Only there: everywhere else the origin's socket is handed to the
//! client untouched. Here the Worker holds both ends (a `WebSocketPair` towards the client,
//! the origin's socket behind it) and passes every frame on, counting what the client sends
//! against a bucket of its own per connection; past it the client is closed with 1008 and a
//! reason, and the origin told why. The bucket is the core's, on the Worker's clock, which
//! advances with each message (each is I/O).

use futures_util::StreamExt;
use worker::{Headers, MessageEvent, Response, Result, WebSocket, WebSocketPair, WebsocketEvent};

use crate::core::algorithm::{check, Algorithm, State};

/// Answers the handshake with one end of a new pair and relays between the other end and
/// `origin` until either side closes.
pub(super) fn relay(origin: WebSocket, limit: Algorithm, headers: Headers) -> Result<Response> {
    let pair = WebSocketPair::new()?;
    let (client, ours) = (pair.client, pair.server);
    for socket in [&ours, &origin] {
        socket.accept()?;
        // Binary frames as ArrayBuffers, which the events read as bytes (not Blobs).
        js_sys::Reflect::set(socket.as_ref(), &"binaryType".into(), &"arraybuffer".into())?;
    }
    let (from_client, to_origin) = (ours.clone(), origin.clone());
    crate::runtime::task::spawn(async move { client_to_origin(from_client, to_origin, limit).await });
    crate::runtime::task::spawn(async move { origin_to_client(origin, ours).await });
    Ok(Response::builder().with_status(101).with_headers(headers).with_websocket(client).empty())
}

async fn client_to_origin(client: WebSocket, origin: WebSocket, limit: Algorithm) {
    let Ok(mut events) = client.events() else { return };
    let limits = [limit];
    let mut state = [State::Empty];
    while let Some(event) = events.next().await {
        match event {
            Ok(WebsocketEvent::Message(m)) => {
                let now = js_sys::Date::now() as u64;
                if !check(&limits, &mut state, now, 1).allowed() {
                    let _ = client.close(Some(1008), Some("message rate limit exceeded"));
                    let _ = origin.close(Some(1000), Some("the client exceeded its message rate limit"));
                    return;
                }
                if pass_message(&origin, &m).is_err() {
                    let _ = client.close(Some(1011), Some("the origin's socket is gone"));
                    return;
                }
            }
            Ok(WebsocketEvent::Close(c)) => return pass_close(&origin, c.code(), &c.reason()),
            Err(_) => return pass_close(&origin, 1011, "relay error"),
        }
    }
}

async fn origin_to_client(origin: WebSocket, client: WebSocket) {
    let Ok(mut events) = origin.events() else { return };
    while let Some(event) = events.next().await {
        match event {
            Ok(WebsocketEvent::Message(m)) => {
                if pass_message(&client, &m).is_err() {
                    return pass_close(&origin, 1001, "the client is gone");
                }
            }
            Ok(WebsocketEvent::Close(c)) => return pass_close(&client, c.code(), &c.reason()),
            Err(_) => return pass_close(&client, 1011, "relay error"),
        }
    }
}

/// Sends a message on as it came: text as text, binary as binary.
fn pass_message(to: &WebSocket, m: &MessageEvent) -> Result<()> {
    match (m.text(), m.bytes()) {
        (Some(text), _) => to.send_with_str(text),
        (None, Some(bytes)) => to.send_with_bytes(bytes),
        (None, None) => Ok(()),
    }
}

/// Closes `socket` with the code the other side closed with. 1005 and 1006 say no code was
/// sent and cannot be sent themselves: they become 1000.
fn pass_close(socket: &WebSocket, code: u16, reason: &str) {
    let sendable = code == 1000 || (3000..=4999).contains(&code);
    let code = if sendable { code } else { 1000 };
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let _ = socket.close(Some(code), Some(&reason[..end]));
}
