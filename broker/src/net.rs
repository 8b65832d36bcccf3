//! What both cores' own listeners share: binding a TCP listener, with errors that name the
//! setting it comes from.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

use crate::BrokerError;

/// Listen backlog; the kernel caps it at `net.core.somaxconn`.
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (`what` and `key` name the listener and its setting in errors); returns the
/// listener and the address it is bound to (port 0 picks one).
pub(crate) fn bind_tcp(
    addr: SocketAddr,
    what: &'static str,
    key: &'static str,
) -> Result<(TcpListener, SocketAddr), BrokerError> {
    let err = |source| BrokerError::Bind {
        what,
        key,
        addr: addr.to_string(),
        source,
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    Ok((listener, bound))
}
