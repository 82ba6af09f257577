//! Who is calling an instance's Runtime API. Instances share the host's network namespace, so
//! any local process could connect to any instance's loopback port and take its events. Each
//! sandboxed instance runs under a uid of its own, and the kernel records the uid that created
//! every TCP socket (`/proc/net/tcp{,6}`): the listener accepts only connections whose socket
//! belongs to the instance's uid. The kernel is asked for exactly that socket over netlink
//! (sock_diag, ~tens of µs); reading /proc/net/tcp, which walks every socket (milliseconds), is
//! the fallback where netlink is unavailable.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};

/// Parses one `ADDR:PORT` column of /proc/net/tcp or tcp6 (addresses in the kernel's
/// in-memory byte order: 32-bit words in host order).
fn parse_endpoint(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => {
            let v = u32::from_str_radix(addr, 16).ok()?;
            IpAddr::from(v.to_ne_bytes())
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::from(bytes)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Finds, in /proc/net/tcp-format `table`, the uid of the socket whose local end is `peer` and
/// whose remote end is `ours`.
fn uid_in_table(table: &str, peer: SocketAddr, ours: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let local = parse_endpoint(cols.get(1)?)?;
        let remote = parse_endpoint(cols.get(2)?)?;
        if local == peer && remote == ours {
            cols.get(7)?.parse().ok()
        } else {
            None
        }
    })
}

/// `a` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) written as plain IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The uid owning the client socket of the connection `peer` → `ours`, if the kernel lists it.
pub fn peer_uid(peer: SocketAddr, ours: SocketAddr) -> Option<u32> {
    // A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d, while the kernel lists that
    // client's socket in the IPv4 table: look there with plain IPv4 addresses.
    let (peer_c, ours_c) = (canonical(peer), canonical(ours));
    let tables: &[(&str, SocketAddr, SocketAddr)] = if peer_c.is_ipv4() {
        &[
            ("/proc/net/tcp", peer_c, ours_c),
            ("/proc/net/tcp6", peer, ours),
        ]
    } else {
        &[("/proc/net/tcp6", peer_c, ours_c)]
    };
    if let Some(uid) = diag_uid(peer_c, ours_c) {
        return Some(uid);
    }
    tables.iter().find_map(|(file, p, o)| {
        let table = std::fs::read_to_string(file).ok()?;
        uid_in_table(&table, *p, *o)
    })
}

/// Asks the kernel (NETLINK_SOCK_DIAG, inet_diag) for the one TCP socket whose local end is
/// `peer` and remote end is `ours`, and returns its owner's uid.
fn diag_uid(peer: SocketAddr, ours: SocketAddr) -> Option<u32> {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

    let family = if peer.is_ipv4() { AF_INET } else { AF_INET6 };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: peer.port(),
                destination_port: ours.port(),
                source_address: peer.ip(),
                destination_address: ours.ip(),
                interface_id: 0,
                // All 0xff: "no cookie", look the socket up by its addresses.
                cookie: [0xff; 8],
            },
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf[..]);

    let socket = Socket::new(NETLINK_SOCK_DIAG).ok()?;
    socket
        .send_to(&buf, &netlink_sys::SocketAddr::new(0, 0), 0)
        .ok()?;
    let mut reply = Vec::with_capacity(8192);
    socket.recv(&mut reply, 0).ok()?;
    let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&reply).ok()?;
    match msg.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => Some(r.header.uid),
        _ => None,
    }
}

/// Which connecting uids a [`PeerFilter`] lets through.
#[derive(Debug, Clone)]
pub enum PeerRule {
    /// Everyone (no check).
    Anyone,
    /// Only sockets created by this uid: an instance's own Runtime API endpoint.
    Only(u32),
    /// Everyone but sockets created by uids in this range: the management API, which sandboxed
    /// functions must not reach. A connection whose owner cannot be found is let through.
    NotFrom(std::ops::Range<u32>),
}

impl PeerRule {
    fn allows(&self, uid: Option<u32>) -> bool {
        match self {
            PeerRule::Anyone => true,
            PeerRule::Only(expected) => uid == Some(*expected),
            PeerRule::NotFrom(range) => !uid.is_some_and(|u| range.contains(&u)),
        }
    }
}

/// A TCP listener that drops connections its [`PeerRule`] refuses.
pub struct PeerFilter {
    inner: TcpListener,
    rule: PeerRule,
    /// Names the endpoint in the warning a refusal logs.
    what: String,
}

impl PeerFilter {
    pub fn new(inner: TcpListener, rule: PeerRule, what: impl Into<String>) -> PeerFilter {
        PeerFilter {
            inner,
            rule,
            what: what.into(),
        }
    }
}

impl axum::serve::Listener for PeerFilter {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
            };
            // Request/response traffic: a reply must not wait for the last one's ACK.
            let _ = stream.set_nodelay(true);
            if matches!(self.rule, PeerRule::Anyone) {
                return (stream, peer);
            }
            let uid = match stream.local_addr() {
                Ok(ours) => {
                    // One netlink round trip to the kernel: fast enough for the reactor.
                    match diag_uid(canonical(peer), canonical(ours)) {
                        Some(uid) => Some(uid),
                        // The /proc fallback is slow blocking file I/O: off the reactor.
                        None => tokio::task::spawn_blocking(move || peer_uid(peer, ours))
                            .await
                            .ok()
                            .flatten(),
                    }
                }
                Err(_) => None,
            };
            if self.rule.allows(uid) {
                return (stream, peer);
            }
            tracing::warn!(endpoint = %self.what, ?uid, "refused a connection from a process that may not use this endpoint");
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:236F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19881 1 0 100 0 0 10 0\n\
   1: 0100007F:A1B2 0100007F:236F 01 00000000:00000000 00:00000000 00000000 200003        0 19882 1 0 100 0 0 10 0\n";
        let peer: SocketAddr = "127.0.0.1:41394".parse().unwrap();
        let ours: SocketAddr = "127.0.0.1:9071".parse().unwrap();
        assert_eq!(uid_in_table(table, peer, ours), Some(200003));
        assert_eq!(uid_in_table(table, ours, peer), None);
        assert_eq!(
            parse_endpoint("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
    }

    #[test]
    fn rules() {
        assert!(PeerRule::Anyone.allows(None));
        assert!(PeerRule::Only(7).allows(Some(7)));
        assert!(!PeerRule::Only(7).allows(Some(8)));
        assert!(!PeerRule::Only(7).allows(None));
        let api = PeerRule::NotFrom(200_000..200_064);
        assert!(api.allows(Some(0)));
        assert!(api.allows(None));
        assert!(!api.allows(Some(200_000)));
        assert!(!api.allows(Some(200_063)));
        assert!(api.allows(Some(200_064)));
    }

    #[tokio::test]
    async fn finds_the_uid_of_a_live_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (_server_side, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        // Our own uid, read without unsafe.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .unwrap();
        assert_eq!(peer_uid(peer, addr), Some(uid));
        assert_eq!(diag_uid(peer, addr), Some(uid), "netlink lookup");
        // The other direction names no client socket of ours... it names the server side,
        // which is ours too; a port nobody uses names nothing.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(diag_uid(nobody, addr), None);
    }
}
