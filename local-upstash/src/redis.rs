//! A small pool of RESP2 connections to redis-server. Connections are reused across requests;
//! a broken one is dropped, and the next request connects afresh.

use crate::resp::{self, Reply};
use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

pub struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn connect(addrs: &[SocketAddr], timeout: Duration) -> io::Result<Conn> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for redis");
        for a in addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    // Long enough for slow scripts; short enough that a hung redis frees the thread.
                    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
                    let reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
                    return Ok(Conn { stream, reader });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// True if the peer has not closed the connection and no stray bytes are waiting.
    fn is_alive(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let alive = matches!(self.stream.peek(&mut b), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock);
        alive && self.stream.set_nonblocking(false).is_ok()
    }

    /// Send all commands in one write, then read one reply per command.
    pub fn exec(&mut self, cmds: &[&[Vec<u8>]]) -> io::Result<Vec<Reply>> {
        resp::write_commands(&mut self.stream, cmds)?;
        let mut out = Vec::with_capacity(cmds.len());
        for _ in 0..cmds.len() {
            out.push(resp::read_reply(&mut self.reader)?);
        }
        Ok(out)
    }
}

pub struct Pool {
    addr: String,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

impl Pool {
    pub fn new(addr: String, max_idle: usize) -> Pool {
        Pool { addr, idle: Mutex::new(Vec::new()), max_idle }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn get(&self) -> io::Result<Conn> {
        loop {
            let c = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match c {
                Some(mut c) => {
                    if c.is_alive() {
                        return Ok(c);
                    }
                }
                None => break,
            }
        }
        let addrs: Vec<SocketAddr> = self.addr.to_socket_addrs()?.collect();
        Conn::connect(&addrs, Duration::from_secs(2))
    }

    /// Return a healthy connection to the pool (call only after a fully read exchange).
    pub fn put(&self, c: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(c);
        }
    }

    /// Run a batch on a pooled connection; the connection is dropped on any I/O error.
    pub fn exec(&self, cmds: &[&[Vec<u8>]]) -> io::Result<Vec<Reply>> {
        let mut c = self.get()?;
        let out = c.exec(cmds)?;
        self.put(c);
        Ok(out)
    }
}
