//! The edge's sockets, bound before the runtime serves them.
//!
//! The public address is bound once per accept loop, each socket with `SO_REUSEPORT` so the
//! kernel spreads connections over the loops; the admin address once. Binding first means a
//! busy port fails the start, before anything else is opened.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ServerConfig;

/// The bound sockets, before the runtime serves them.
#[derive(Debug)]
pub struct Listeners {
    /// One or more sockets on the same public address (`SO_REUSEPORT`).
    pub public: Vec<std::net::TcpListener>,
    pub admin: std::net::TcpListener,
}

impl Listeners {
    /// Binds `server.listen` (once per accept loop) and `server.admin_listen`.
    pub fn bind(config: &ServerConfig) -> io::Result<Self> {
        let loops = match config.accept_loops {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let first = bind(config.listen, loops > 1)?;
        // With port 0 the first socket picks the port; the others join it.
        let addr = first.local_addr()?;
        let mut public = vec![first];
        for _ in 1..loops {
            public.push(bind(addr, true)?);
        }
        let admin = bind(config.admin_listen, false)?;
        Ok(Self { public, admin })
    }

    pub fn public_addr(&self) -> io::Result<SocketAddr> {
        self.public[0].local_addr()
    }

    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
