//! The metrics endpoint: a minimal HTTP/1.x server, std only, on a thread
//! of its own. `GET /metrics` gets the last text the run loop published,
//! anything else 404. One client at a time, each given [`CLIENT_TIME`] to
//! send its request and as long to take the answer, so a slow or silent
//! client delays the next scrape at most that long and never hangs it.

use std::{
    io::{self, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::views::metrics::CONTENT_TYPE;

/// The text being served, replaced whole by the run loop.
pub type Page = Arc<Mutex<String>>;

/// How long a client has to send its request, and again to read the answer.
const CLIENT_TIME: Duration = Duration::from_secs(2);
/// The longest request head read: a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8192;
/// The pause after a failed `accept` (out of file descriptors, say), so
/// the thread does not spin on it.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Listens on `addr` (`HOST:PORT`); a bad or busy address is one line.
pub fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("cannot serve metrics on {addr:?}"))
}

/// Answers scrapes from `listener` with `page` until the process ends.
pub fn spawn(listener: TcpListener, page: Page) -> io::Result<()> {
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        // A client that went away or took too long is its own loss.
                        let _ = answer(stream, &page);
                    }
                    Err(_) => thread::sleep(ACCEPT_PAUSE),
                }
            }
        })
        .map(drop)
}

/// Reads one request and answers it, then closes the connection.
fn answer(mut stream: TcpStream, page: &Page) -> io::Result<()> {
    let head = read_head(&mut stream)?;
    let response = match route(&head) {
        Route::Metrics => {
            let body = page.lock().unwrap_or_else(PoisonError::into_inner).clone();
            respond("200 OK", CONTENT_TYPE, &body)
        }
        Route::NotFound => respond("404 Not Found", "text/plain", "not found: try /metrics\n"),
    };
    stream.set_write_timeout(Some(CLIENT_TIME))?;
    stream.write_all(&response)?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// The request line and headers, up to the empty line that ends them, all
/// within [`CLIENT_TIME`].
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + CLIENT_TIME;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") && head.len() < MAX_HEAD {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    Ok(head)
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
}

/// `GET /metrics` (with or without a query) is the metrics; the rest is not.
fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next(), words.next());
    let path = target.and_then(|t| t.split(|&b| b == b'?').next());
    if method == Some(b"GET") && path == Some(b"/metrics") {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

fn respond(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_get_of_metrics_is_the_metrics() {
        for (head, want) in [
            (
                &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Route::Metrics,
            ),
            (b"GET /metrics?name[]=up HTTP/1.0\r\n\r\n", Route::Metrics),
            (b"GET / HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"", Route::NotFound),
            (b"\x00\xff garbage", Route::NotFound),
        ] {
            assert_eq!(route(head), want, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn a_response_says_how_long_it_is_and_closes() {
        let r = respond("200 OK", CONTENT_TYPE, "a 1\n");
        assert_eq!(
            String::from_utf8(r).expect("text"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
    }
}
