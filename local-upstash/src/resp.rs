//! A small RESP2 client codec: command encoding and reply parsing.

use std::io::{self, BufRead, Write};

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(Vec<u8>),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Encode one command as a RESP array of bulk strings.
pub fn encode_command(out: &mut Vec<u8>, args: &[Vec<u8>]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

pub fn write_commands<W: Write>(w: &mut W, cmds: &[&[Vec<u8>]]) -> io::Result<()> {
    let mut buf = Vec::new();
    for c in cmds {
        encode_command(&mut buf, c);
    }
    w.write_all(&buf)?;
    w.flush()
}

fn proto_err(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("RESP protocol error: {msg}"))
}

fn read_line<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "redis closed the connection"));
    }
    if line.len() < 2 || line[line.len() - 2] != b'\r' || line[line.len() - 1] != b'\n' {
        return Err(proto_err("line not terminated by CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(s: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(s).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| proto_err("bad integer"))
}

const MAX_DEPTH: usize = 64;

/// Read one complete reply.
pub fn read_reply<R: BufRead>(r: &mut R) -> io::Result<Reply> {
    read_reply_depth(r, 0)
}

fn read_reply_depth<R: BufRead>(r: &mut R, depth: usize) -> io::Result<Reply> {
    if depth > MAX_DEPTH {
        return Err(proto_err("nesting too deep"));
    }
    let line = read_line(r)?;
    if line.is_empty() {
        return Err(proto_err("empty line"));
    }
    let body = &line[1..];
    match line[0] {
        b'+' => Ok(Reply::Status(body.to_vec())),
        b'-' => Ok(Reply::Error(String::from_utf8_lossy(body).into_owned())),
        b':' => Ok(Reply::Int(parse_int(body)?)),
        b'$' => {
            let len = parse_int(body)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = len as usize;
            let mut data = vec![0u8; len + 2];
            r.read_exact(&mut data)?;
            if &data[len..] != b"\r\n" {
                return Err(proto_err("bulk string not terminated by CRLF"));
            }
            data.truncate(len);
            Ok(Reply::Bulk(Some(data)))
        }
        b'*' => {
            let n = parse_int(body)?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            for _ in 0..n {
                items.push(read_reply_depth(r, depth + 1)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        other => Err(proto_err(&format!("unexpected type byte {:?}", other as char))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(s: &[u8]) -> io::Result<Reply> {
        read_reply(&mut Cursor::new(s.to_vec()))
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET".to_vec(), b"k".to_vec(), b"".to_vec()]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_scalars() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Status(b"OK".to_vec()));
        assert_eq!(parse(b"-ERR wrong\r\n").unwrap(), Reply::Error("ERR wrong".into()));
        assert_eq!(parse(b":-42\r\n").unwrap(), Reply::Int(-42));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), Reply::Bulk(Some(vec![])));
        assert_eq!(parse(b"$4\r\na\r\nb\r\n").unwrap(), Reply::Bulk(Some(b"a\r\nb".to_vec())));
    }

    #[test]
    fn parses_nested_arrays() {
        let r = parse(b"*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n*-1\r\n").unwrap();
        assert_eq!(
            r,
            Reply::Array(Some(vec![
                Reply::Int(1),
                Reply::Array(Some(vec![Reply::Bulk(Some(b"x".to_vec())), Reply::Bulk(None)])),
                Reply::Array(None),
            ]))
        );
    }

    #[test]
    fn reads_consecutive_replies() {
        let mut c = Cursor::new(b"+OK\r\n+QUEUED\r\n*1\r\n:5\r\n".to_vec());
        assert_eq!(read_reply(&mut c).unwrap(), Reply::Status(b"OK".to_vec()));
        assert_eq!(read_reply(&mut c).unwrap(), Reply::Status(b"QUEUED".to_vec()));
        assert_eq!(read_reply(&mut c).unwrap(), Reply::Array(Some(vec![Reply::Int(5)])));
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse(b"").is_err());
        assert!(parse(b"+OK\n").is_err());
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b":abc\r\n").is_err());
        assert!(parse(b"$5\r\nab\r\n").is_err());
        assert!(parse(b"$2\r\nabXY").is_err());
        assert!(parse(b"*2\r\n:1\r\n").is_err());
    }
}
