//! One reader of HTTP/1.1 responses, for every test and tool that talks to a server over raw TCP.
//!
//! [`parse`] takes the first whole response out of a buffer (status line, headers, a
//! `Content-Length` body, or a body to the end of a closed connection); the readers around it
//! keep what follows in the buffer, so pipelined and keep-alive answers read one after another.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// One HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A header as text; `None` when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics naming the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Whether the server will close the connection after this answer.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The first whole response in `buf` and how many bytes it took; `None` while it is not all
/// there. `closed` says the connection has ended, so a response without `Content-Length` runs
/// to the end of `buf`.
pub fn parse(buf: &[u8], closed: bool) -> io::Result<Option<(Reply, usize)>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        let name =
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| bad(e.to_string()))?;
        let value = HeaderValue::from_str(value.trim()).map_err(|e| bad(e.to_string()))?;
        headers.append(name, value);
    }
    let start = head_end + 4;
    let length = match headers.get(http::header::CONTENT_LENGTH) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| bad("bad Content-Length"))?,
        None if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED =>
        {
            0
        }
        None if closed => buf.len() - start,
        None => return Ok(None),
    };
    if buf.len() < start + length {
        return Ok(None);
    }
    let body = Bytes::copy_from_slice(&buf[start..start + length]);
    Ok(Some((
        Reply {
            status,
            headers,
            body,
        },
        start + length,
    )))
}

/// Every response in the bytes a closed connection sent, in order.
pub fn parse_all(mut bytes: &[u8]) -> io::Result<Vec<Reply>> {
    let mut out = Vec::new();
    while let Some((reply, used)) = parse(bytes, true)? {
        out.push(reply);
        bytes = &bytes[used..];
        if bytes.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// The next response, once `buf` holds it whole; an error when the connection `closed` first.
fn next(buf: &mut Vec<u8>, closed: bool) -> io::Result<Option<Reply>> {
    match parse(buf, closed)? {
        Some((reply, used)) => {
            buf.drain(..used);
            Ok(Some(reply))
        }
        None if closed => Err(io::ErrorKind::UnexpectedEof.into()),
        None => Ok(None),
    }
}

/// Reads the next response from `io`; bytes after it stay in `buf` for the next call.
pub async fn read<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> io::Result<Reply> {
    let mut closed = false;
    loop {
        if let Some(reply) = next(buf, closed)? {
            return Ok(reply);
        }
        closed = io.read_buf(buf).await? == 0;
    }
}

/// [`read`] for a blocking reader.
pub fn read_blocking<R: Read>(io: &mut R, buf: &mut Vec<u8>) -> io::Result<Reply> {
    let mut closed = false;
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(reply) = next(buf, closed)? {
            return Ok(reply);
        }
        let n = io.read(&mut chunk)?;
        closed = n == 0;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One `GET path` on a new connection that closes after the answer (blocking, 5 s at most).
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    read_blocking(&mut stream, &mut Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_come_out_one_at_a_time_with_their_bodies() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nokHTTP/1.1 302 Found\r\nlocation: https://x/\r\ncontent-length: 0\r\n\r\n";
        let all = parse_all(two).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].status, all[0].text().as_str()),
            (StatusCode::OK, "ok")
        );
        assert_eq!(all[0].header("x-a"), Some("1"));
        assert_eq!(all[1].header("location"), Some("https://x/"));
        assert!(parse(&two[..20], false).unwrap().is_none());
        let open_ended = b"HTTP/1.0 200 OK\r\n\r\nto the end";
        assert!(parse(open_ended, false).unwrap().is_none());
        assert_eq!(
            parse(open_ended, true).unwrap().unwrap().0.text(),
            "to the end"
        );
        assert!(parse(b"nonsense\r\n\r\n", true).is_err());
    }
}
