//! A fault-injecting TCP proxy on 127.0.0.1: forwards every connection to one upstream
//! (LocalStack) and, on command, cuts all current connections mid-stream (RST), refuses
//! new ones (the listening socket is closed: `connection refused`) or blackholes them
//! (accepted, never answered) for a while.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What happens to new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// The listener is closed: connects fail with ECONNREFUSED.
    Refuse,
    /// Connections are accepted and then neither forwarded nor answered; they are reset
    /// when the outage ends.
    Blackhole,
}

struct Inner {
    upstream: SocketAddr,
    /// Downstream bytes per second per connection (a slow link), if limited.
    rate: Option<u64>,
    /// Bumped by [`Proxy::cut_all`]: every connection task watching it resets its sockets.
    cut: watch::Sender<u64>,
    open: AtomicUsize,
    /// Connections whose answer is in mid-flight: the upstream has sent bytes the slow
    /// link has not forwarded yet.
    in_flight: AtomicUsize,
    accepted: AtomicU64,
    blackholing: Mutex<Option<Vec<TcpStream>>>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

/// A running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Proxy {
    /// Listens on 127.0.0.1:<free port>, forwarding to `upstream`; with `rate`, each
    /// connection's answers flow at most that many bytes per second (a slow link, so
    /// that bodies are still in transit, not sitting in socket buffers, when cut).
    pub async fn start(upstream: SocketAddr, rate: Option<u64>) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            upstream,
            rate,
            cut: watch::channel(0).0,
            open: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            blackholing: Mutex::new(None),
            accept_task: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(listener, inner.clone()));
        *inner.accept_task.lock().unwrap() = Some(task);
        Ok(Proxy { addr, inner })
    }

    /// `http://127.0.0.1:<port>`, for `AWS_ENDPOINT_URL_<SERVICE>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Resets every open connection (both sides, SO_LINGER 0: data not yet sent is
    /// dropped). Returns how many were open.
    pub fn cut_all(&self) -> usize {
        let open = self.inner.open.load(Ordering::SeqCst);
        self.inner.cut.send_modify(|g| *g += 1);
        open
    }

    /// Waits up to `within` until some answer is in mid-flight behind the slow link (only
    /// with a `rate`), then cuts every connection, so the cut truncates at least one body
    /// rather than landing between requests. Returns how many connections were open and
    /// how many of them were mid-answer, or `None` when no answer was in flight in time.
    pub async fn cut_mid_answer(&self, within: Duration) -> Option<(usize, usize)> {
        let start = std::time::Instant::now();
        loop {
            let mid = self.inner.in_flight.load(Ordering::SeqCst);
            if mid > 0 {
                return Some((self.cut_all(), mid));
            }
            if start.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// An outage of `period`: open connections are cut, new ones refused or blackholed;
    /// then the proxy forwards again. Returns how many connections were cut.
    pub async fn outage(&self, kind: Outage, period: Duration) -> std::io::Result<usize> {
        match kind {
            Outage::Refuse => {
                if let Some(task) = self.inner.accept_task.lock().unwrap().take() {
                    task.abort(); // drops the listener
                }
                let cut = self.cut_all();
                tokio::time::sleep(period).await;
                let listener = rebind(self.addr).await?;
                let task = tokio::spawn(accept_loop(listener, self.inner.clone()));
                *self.inner.accept_task.lock().unwrap() = Some(task);
                Ok(cut)
            }
            Outage::Blackhole => {
                *self.inner.blackholing.lock().unwrap() = Some(Vec::new());
                let cut = self.cut_all();
                tokio::time::sleep(period).await;
                let held = self.inner.blackholing.lock().unwrap().take();
                for s in held.unwrap_or_default() {
                    let _ = s.set_zero_linger();
                }
                Ok(cut)
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.inner.accept_task.lock().unwrap().take() {
            task.abort();
        }
        self.cut_all();
    }
}

/// Listens on `addr` again (SO_REUSEADDR), retrying for a few seconds.
async fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(1024)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap())
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        {
            let mut hole = inner.blackholing.lock().unwrap();
            if let Some(held) = hole.as_mut() {
                held.push(client);
                continue;
            }
        }
        inner.accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(forward(client, inner.clone()));
    }
}

async fn forward(client: TcpStream, inner: Arc<Inner>) {
    let mut cut = inner.cut.subscribe();
    let Ok(upstream) = TcpStream::connect(inner.upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    inner.open.fetch_add(1, Ordering::SeqCst);
    let (mut cr, mut cw) = client.into_split();
    let (ur, mut uw) = upstream.into_split();
    let rate = inner.rate;
    let was_cut = {
        let up = async {
            let _ = tokio::io::copy(&mut cr, &mut uw).await;
            let _ = uw.shutdown().await;
        };
        let down = async {
            let mut buf = vec![0u8; 16 * 1024];
            let mut mid = MidAnswer::new(&inner.in_flight);
            let mut waited = true;
            loop {
                let n = match ur.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        mid.set(false);
                        if ur.readable().await.is_err() {
                            break;
                        }
                        waited = true;
                        continue;
                    }
                    Err(_) => break,
                };
                // A full buffer that was already waiting while the link was busy: the
                // upstream is ahead of the link, so the rest of this answer is still to come.
                mid.set(rate.is_some() && !waited && n == buf.len());
                waited = false;
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                if let Some(rate) = rate {
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                }
            }
            mid.set(false);
            let _ = cw.shutdown().await;
        };
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            _ = cut.changed() => true,
        }
    };
    inner.open.fetch_sub(1, Ordering::SeqCst);
    if was_cut {
        let _ = cw.as_ref().set_zero_linger();
        let _ = uw.as_ref().set_zero_linger();
    }
}

/// This connection's share of [`Inner::in_flight`], given back however its task ends
/// (a cut drops the forwarding future mid-loop).
struct MidAnswer<'a> {
    count: &'a AtomicUsize,
    on: bool,
}

impl<'a> MidAnswer<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        MidAnswer { count, on: false }
    }

    fn set(&mut self, on: bool) {
        if on != self.on {
            if on {
                self.count.fetch_add(1, Ordering::SeqCst);
            } else {
                self.count.fetch_sub(1, Ordering::SeqCst);
            }
            self.on = on;
        }
    }
}

impl Drop for MidAnswer<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}
