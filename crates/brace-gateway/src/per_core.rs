//! Serving with one single-threaded runtime per core: fewer cross-thread wake-ups.
//!
//! tokio's multi-threaded runtime lets any worker run any task: a request read by one worker
//! may be answered on another, and a worker with nothing to do parks and must be woken by
//! another (a system call and, on a virtual machine, often waking a halted virtual CPU). With
//! [`PerCore`], each of N threads runs its own current-thread runtime with its own listening
//! socket on the same address (`SO_REUSEPORT`: the kernel spreads new connections across
//! them), so a connection, its requests, and their upstream calls (each runtime has its own
//! upstream connection pool with brace's lean HTTP client) stay on one thread from accept
//! to answer.
//!
//! The [`Gateway`] is shared: one stack, one set of circuit breakers, provider health,
//! degradation state and metrics for every thread, exactly as with one runtime. What is per
//! thread is only I/O: listening sockets, client connections, upstream connections.
//!
//! The price: a thread with more connections than another cannot hand work over, so with
//! few long-lived client connections the load may be uneven (each connection's requests stay
//! where the kernel put it).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::stack::Gateway;

/// A gateway served by one current-thread runtime per thread, each with its own
/// `SO_REUSEPORT` listener on one address (see the [module docs](self)).
///
/// Made with [`start`](Self::start); [`stop`](Self::stop) begins a graceful shutdown on
/// every thread (in-flight requests finish within `server.shutdown_grace`), and
/// [`join`](Self::join) waits for the threads.
#[derive(Debug)]
pub struct PerCore {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl PerCore {
    /// Binds `threads` listening sockets to `addr` with `SO_REUSEPORT` (port 0: the first
    /// picks a free port and the others share it) and starts a thread per socket, each
    /// running a current-thread runtime that [`serve`](crate::serve)s `gateway` on it.
    ///
    /// Call it from outside the threads' runtimes (from a thread with a runtime of its own,
    /// such as `main`'s, or none); the gateway's background tasks (active health probes)
    /// stay on the runtime that built it, which must keep running.
    ///
    /// # Errors
    ///
    /// A socket cannot be made, bound or listened on, or a thread cannot be started.
    pub fn start(gateway: &Arc<Gateway>, addr: SocketAddr, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        // The first socket fixes the port (when `addr` has port 0) and is handed over as a
        // std socket: a tokio socket belongs to the runtime whose reactor registered it.
        let first = std::thread::scope(|scope| {
            scope
                .spawn(|| -> io::Result<std::net::TcpListener> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .build()?;
                    let _entered = rt.enter();
                    crate::server::listen(addr, true)?.into_std()
                })
                .join()
                .map_err(|_| io::Error::other("the socket thread panicked"))?
        })?;
        let addr = first.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::with_capacity(threads);
        let mut first = Some(first);
        for index in 0..threads {
            let gateway = gateway.clone();
            let mut stopped = stopped.clone();
            let first = first.take();
            let handle = std::thread::Builder::new()
                .name(format!("brace-core-{index}"))
                .spawn(move || -> io::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let socket = match first {
                            Some(first) => TcpListener::from_std(first)?,
                            None => crate::server::listen(addr, true)?,
                        };
                        let shutdown = async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        };
                        crate::serve(gateway, socket, shutdown).await
                    })
                });
            match handle {
                Ok(handle) => handles.push(handle),
                Err(err) => {
                    let _ = stop.send(true);
                    return Err(err);
                }
            }
        }
        Ok(Self {
            addr,
            stop,
            threads: handles,
        })
    }

    /// The address every thread listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The number of threads (runtimes) serving.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Begins a graceful shutdown on every thread: each stops accepting and lets its
    /// in-flight requests finish (see [`serve`](crate::serve)).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for every thread to end (blocking the calling thread) and returns the first
    /// error one of them ended with.
    ///
    /// # Errors
    ///
    /// A thread's runtime could not start or its listener failed.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for handle in self.threads {
            let ended = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a serving thread panicked")));
            if result.is_ok() {
                result = ended;
            }
        }
        result
    }
}
