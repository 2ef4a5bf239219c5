//! `probe`: a keep-alive HTTP/1.1 client that records, for every response, when it arrived
//! (wall clock, nanoseconds since the epoch) and which version served it.
//!
//! bench/ uses it to time weight changes and rollbacks: the driver notes when it issued a
//! change, and reads from the probe's log when the last response of the old version arrived.
//! It is not a load generator for throughput (wrk is): it can pace itself (`--rate`) so that
//! it leaves the machine to the proxy and the API server.
//!
//! ```text
//! probe --out FILE --duration SECS [--rate REQ_PER_S_PER_CONN] [--header NAME]
//!       [--path PATH] [--host HOST] [--stop-file PATH] ADDR=CONNS...
//! ```
//!
//! The version is the value of response header `--header` when given, else the body (trimmed).
//! One line per response: `<t_ns> <target index> <version> <status>`; a failed exchange
//! (refused connection, reset, EOF before a full response) is logged with status `ERR`, the
//! connection is reopened, and counts as a failed request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Opts {
    out: String,
    duration: Duration,
    rate: f64,
    header: Option<String>,
    path: String,
    host: String,
    stop_file: Option<String>,
    targets: Vec<(SocketAddr, usize)>,
}

fn usage() -> ! {
    eprintln!(
        "usage: probe --out FILE --duration SECS [--rate N] [--header NAME] [--path P] [--host H] [--stop-file F] ADDR=CONNS..."
    );
    std::process::exit(2)
}

fn parse() -> Opts {
    let mut o = Opts {
        out: String::new(),
        duration: Duration::from_secs(10),
        rate: 0.0,
        header: None,
        path: "/".into(),
        host: "localhost".into(),
        stop_file: None,
        targets: vec![],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--out" => o.out = val(),
            "--duration" => {
                o.duration = Duration::from_secs_f64(val().parse().unwrap_or_else(|_| usage()))
            }
            "--rate" => o.rate = val().parse().unwrap_or_else(|_| usage()),
            "--header" => o.header = Some(val().to_ascii_lowercase()),
            "--path" => o.path = val(),
            "--host" => o.host = val(),
            "--stop-file" => o.stop_file = Some(val()),
            t if !t.starts_with('-') => {
                let (addr, n) = t.split_once('=').unwrap_or((t, "1"));
                let addr: SocketAddr = addr.parse().unwrap_or_else(|_| usage());
                if !addr.ip().is_loopback() {
                    eprintln!("probe: only loopback targets are allowed, not {addr}");
                    std::process::exit(2);
                }
                o.targets.push((addr, n.parse().unwrap_or_else(|_| usage())));
            }
            _ => usage(),
        }
    }
    if o.out.is_empty() || o.targets.is_empty() {
        usage()
    }
    o
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Event {
    t_ns: u64,
    target: u16,
    version: u16,
    status: u16, // 0 = failed exchange
}

/// One response: status, the version it names, whether the server closes the connection.
fn exchange(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    request: &[u8],
    header: Option<&str>,
    line: &mut String,
    body: &mut Vec<u8>,
) -> std::io::Result<(u16, String, bool)> {
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
    stream.write_all(request)?;
    line.clear();
    if reader.read_line(line)? == 0 {
        return Err(eof());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(eof)?;
    let (mut len, mut chunked, mut close, mut version) = (0usize, false, false, String::new());
    loop {
        line.clear();
        if reader.read_line(line)? == 0 {
            return Err(eof());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => len = v.parse().unwrap_or(0),
            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
            "connection" => close = v.eq_ignore_ascii_case("close"),
            _ => {}
        }
        if Some(k.as_str()) == header {
            version = v.to_string();
        }
    }
    body.clear();
    if chunked {
        loop {
            line.clear();
            reader.read_line(line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| eof())?;
            let start = body.len();
            body.resize(start + n + 2, 0);
            reader.read_exact(&mut body[start..])?;
            body.truncate(start + n);
            if n == 0 {
                // trailers end with an empty line; the 0-chunk's CRLF was consumed above
                break;
            }
        }
    } else {
        body.resize(len, 0);
        reader.read_exact(body)?;
    }
    if header.is_none() {
        version = String::from_utf8_lossy(body).trim().to_string();
    }
    // One token per log field: an error page's body is not a version.
    if !(200..300).contains(&status) || version.is_empty() || version.len() > 64 || version.contains(char::is_whitespace) {
        version = "-".into();
    }
    Ok((status, version, close))
}

fn main() {
    let o = parse();
    let stop = Arc::new(AtomicBool::new(false));
    let request = Arc::new(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: switchyard-bench-probe\r\n\r\n",
            o.path, o.host
        )
        .into_bytes(),
    );
    let interval = (o.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / o.rate));
    let mut threads = vec![];
    for (ti, &(addr, conns)) in o.targets.iter().enumerate() {
        for _ in 0..conns {
            let (stop, request, header) = (stop.clone(), request.clone(), o.header.clone());
            threads.push(std::thread::spawn(move || {
                let mut versions: Vec<String> = vec![];
                let mut events: Vec<Event> = Vec::with_capacity(1 << 16);
                let (mut line, mut body) = (String::new(), Vec::new());
                let mut next = Instant::now();
                'conn: while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = TcpStream::connect(addr) else {
                        events.push(Event { t_ns: now_ns(), target: ti as u16, version: 0, status: 0 });
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let Ok(clone) = stream.try_clone() else { continue };
                    let mut reader = BufReader::with_capacity(16 * 1024, clone);
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(iv) = interval {
                            let now = Instant::now();
                            if next > now {
                                std::thread::sleep(next - now);
                            }
                            next = (next + iv).max(now);
                        }
                        match exchange(&mut stream, &mut reader, &request, header.as_deref(), &mut line, &mut body) {
                            Ok((status, version, close)) => {
                                let t_ns = now_ns();
                                let v = match versions.iter().position(|x| *x == version) {
                                    Some(i) => i,
                                    None => {
                                        versions.push(version);
                                        versions.len() - 1
                                    }
                                };
                                events.push(Event { t_ns, target: ti as u16, version: v as u16, status });
                                if close {
                                    continue 'conn;
                                }
                            }
                            Err(_) => {
                                events.push(Event { t_ns: now_ns(), target: ti as u16, version: 0, status: 0 });
                                continue 'conn;
                            }
                        }
                    }
                }
                (versions, events)
            }));
        }
    }
    let deadline = Instant::now() + o.duration;
    while Instant::now() < deadline {
        if let Some(f) = &o.stop_file {
            if std::path::Path::new(f).exists() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&o.out).unwrap_or_else(|e| {
        eprintln!("probe: {}: {e}", o.out);
        std::process::exit(1)
    }));
    let (mut ok, mut failed) = (0u64, 0u64);
    for t in threads {
        let Ok((versions, events)) = t.join() else { continue };
        for e in events {
            if e.status == 0 {
                failed += 1;
                let _ = writeln!(out, "{} {} - ERR", e.t_ns, e.target);
            } else {
                ok += 1;
                let v = versions.get(e.version as usize).map_or("-", |s| if s.is_empty() { "-" } else { s.as_str() });
                let _ = writeln!(out, "{} {} {} {}", e.t_ns, e.target, v, e.status);
            }
        }
    }
    let _ = out.flush();
    eprintln!("probe: {ok} responses, {failed} failed exchanges");
}
