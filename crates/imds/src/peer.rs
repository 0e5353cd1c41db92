//! Which local user a loopback client is: the VMs' listener serves only the
//! sandbox owner's processes.
//!
//! The VMs' listener is a loopback port any local user can find (in
//! `/proc/net/tcp`) and call at any VM's address, and the token it hands out
//! is that VM's. So in per-VM-address mode each connection is admitted only
//! when the client's socket belongs to the uid IMDS runs as. The kernel lists every TCP socket of the
//! network namespace with its owner in `/proc/net/tcp` and `/proc/net/tcp6`;
//! the client's socket is the entry whose local address is our peer and
//! whose remote address is the VM address the connection was made to (the
//! accepted socket's local address, not the listener's `0.0.0.0`). Read once
//! per connection, at accept.
//!
//! Without `/proc` (not Linux) there is no unsafe-free way to learn the
//! peer's uid: the check is not installed and any local user can call the
//! listener (see [`owner_only`]). On Linux, a lookup that finds nothing
//! (the table unreadable, the client already gone) refuses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid owning the TCP socket whose local address is `peer` and whose
/// remote address is `local`, from the text of `/proc/net/tcp` or `tcp6`.
pub(crate) fn socket_uid(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace();
        let (_sl, l, r) = (f.next()?, f.next()?, f.next()?);
        if parse_addr(l)? != peer || parse_addr(r)? != local {
            return None;
        }
        // st, tx:rx, tr:when, retrnsmt, then uid.
        f.nth(4)?.parse().ok()
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The kernel
/// prints each 32-bit word of the address as a native-endian integer, so its
/// bytes in memory order are the address in network order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// An IPv4 address as an IPv6 listener sees it (`::ffff:a.b.c.d`).
fn mapped(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    }
}

/// The uid of the client socket of the connection `peer` → `local`: asked of
/// the kernel for that one socket (sock_diag), else from the system's TCP tables.
#[cfg(target_os = "linux")]
fn peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    diag::uid(peer, local)
        .or_else(|| diag::uid(mapped(peer), mapped(local)))
        .or_else(|| table_uid(peer, local))
}

/// [`peer_uid`] from `/proc/net/tcp` and `tcp6`: every socket of the network
/// namespace is listed and read (milliseconds on a busy machine), so this is
/// the fallback where sock_diag is unavailable.
#[cfg(target_os = "linux")]
fn table_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    if let (IpAddr::V4(_), IpAddr::V4(_)) = (peer.ip(), local.ip())
        && let Some(uid) = read("/proc/net/tcp").and_then(|t| socket_uid(&t, peer, local))
    {
        return Some(uid);
    }
    let t = read("/proc/net/tcp6")?;
    socket_uid(&t, peer, local).or_else(|| socket_uid(&t, mapped(peer), mapped(local)))
}

/// One socket's owner, asked of the kernel over netlink (`sock_diag(7)`): an
/// exact lookup by the connection's addresses is one hash lookup in the
/// kernel, where `/proc/net/tcp` walks and prints every TCP socket of the
/// namespace (about 4.5 ms per connection with the bench's sockets open, on
/// the task that accepts connections). The kernel answers within the send,
/// so the reply is read without waiting; no reply counts as not found.
#[cfg(target_os = "linux")]
mod diag {
    use std::net::{IpAddr, SocketAddr};

    use netlink_sys::Socket;
    use netlink_sys::protocols::NETLINK_SOCK_DIAG;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;
    const IPPROTO_TCP: u8 = 6;
    /// `nlmsghdr` (16 bytes) and `inet_diag_req_v2` (56 bytes).
    const REQUEST_LEN: u32 = 72;
    /// Where `inet_diag_msg`'s `idiag_uid` is in a reply: after the
    /// `nlmsghdr` (16), family/state/timer/retrans (4), the socket id (48)
    /// and expires/rqueue/wqueue (12).
    const UID_AT: usize = 80;

    /// The uid owning the TCP socket whose local address is `own` and whose
    /// remote address is `remote`, when the kernel knows one.
    pub(super) fn uid(own: SocketAddr, remote: SocketAddr) -> Option<u32> {
        let socket = Socket::new(NETLINK_SOCK_DIAG).ok()?;
        socket.set_non_blocking(true).ok()?;
        socket.send(&request(own, remote)?, 0).ok()?;
        let mut reply = Vec::with_capacity(512);
        socket.recv(&mut reply, 0).ok()?;
        uid_of(&reply, own, remote)
    }

    /// An exact-match `SOCK_DIAG_BY_FAMILY` request for one TCP socket, any state.
    pub(super) fn request(own: SocketAddr, remote: SocketAddr) -> Option<Vec<u8>> {
        let (family, src, dst) = match (own.ip(), remote.ip()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (AF_INET, padded(a.octets()), padded(b.octets())),
            (IpAddr::V6(a), IpAddr::V6(b)) => (AF_INET6, a.octets(), b.octets()),
            _ => return None,
        };
        let mut m = Vec::with_capacity(REQUEST_LEN as usize);
        m.extend_from_slice(&REQUEST_LEN.to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
        m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        m.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
        m.extend_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
        m.extend_from_slice(&own.port().to_be_bytes());
        m.extend_from_slice(&remote.port().to_be_bytes());
        m.extend_from_slice(&src);
        m.extend_from_slice(&dst);
        m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
        m.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE, twice
        Some(m)
    }

    /// An IPv4 address in the socket id's 16 bytes (the first 4 used).
    fn padded(v4: [u8; 4]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&v4);
        b
    }

    /// The uid in a reply that describes the socket asked for; `None` for an
    /// error reply (`ENOENT`: no such socket), a short one, or another socket.
    pub(super) fn uid_of(reply: &[u8], own: SocketAddr, remote: SocketAddr) -> Option<u32> {
        let u16_at = |i: usize| Some(u16::from_ne_bytes(reply.get(i..i + 2)?.try_into().ok()?));
        let u32_at = |i: usize| Some(u32::from_ne_bytes(reply.get(i..i + 4)?.try_into().ok()?));
        if u16_at(4)? != SOCK_DIAG_BY_FAMILY {
            return None;
        }
        let port_at = |i: usize| Some(u16::from_be_bytes(reply.get(i..i + 2)?.try_into().ok()?));
        (port_at(20)? == own.port() && port_at(22)? == remote.port()).then_some(())?;
        u32_at(UID_AT)
    }
}

/// The admission check of the VMs' listener: only the uid this process runs
/// as. `None` where it cannot be checked (no `/proc`).
pub(crate) fn owner_only() -> Option<misim_runtime::serve::AdmitFn> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let me = match std::fs::metadata("/proc/self") {
            Ok(m) => m.uid(),
            Err(e) => {
                tracing::warn!(error = %e, "no /proc: the IMDS vm listener admits every local user");
                return None;
            }
        };
        Some(std::sync::Arc::new(move |peer, local| {
            let uid = peer_uid(peer, local);
            if uid != Some(me) {
                tracing::warn!(%peer, ?uid, "imds refused a connection from another local user");
            }
            uid == Some(me)
        }))
    }
    #[cfg(not(target_os = "linux"))]
    {
        tracing::warn!(
            "the IMDS vm listener admits every local user: peer uids are read from /proc"
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1588 1 0 100 0 0 10 0
   1: 0100007F:AE6D 0100007F:1F90 01 00000000:00000000 00:00000000 00000000 65534        0 1589 1 0 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:AE6D 01 00000000:00000000 00:00000000 00000000  1000        0 1590 1 0 20 4 30 10 -1
";

    #[test]
    fn the_client_socket_of_a_connection_names_its_uid() {
        let listener: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:44653".parse().unwrap();
        // Only on little-endian hosts is 127.0.0.1 printed as 0100007F.
        if cfg!(target_endian = "little") {
            assert_eq!(socket_uid(TCP, client, listener), Some(65534));
            // The server's own end of the connection is not the client.
            assert_eq!(socket_uid(TCP, listener, client), Some(1000));
            let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
            assert_eq!(socket_uid(TCP, other, listener), None);
        }
        assert_eq!(socket_uid("header only\n", client, listener), None);
        assert_eq!(
            socket_uid("h\n 0: zz:1 0:0 01 a b c 5\n", client, listener),
            None
        );
    }

    /// The request the kernel gets, byte for byte where it matters, and the
    /// replies it may send: the uid at its offset, nothing for an error.
    #[cfg(target_os = "linux")]
    #[test]
    fn sock_diag_requests_and_replies_are_laid_out_as_the_kernel_does() {
        let own: SocketAddr = "127.0.0.1:44653".parse().unwrap();
        let remote: SocketAddr = "127.64.0.9:8080".parse().unwrap();
        let req = diag::request(own, remote).unwrap();
        assert_eq!(req.len(), 72);
        assert_eq!(&req[16..18], &[2, 6], "AF_INET, IPPROTO_TCP");
        assert_eq!(&req[24..28], &[0xAE, 0x6D, 0x1F, 0x90], "ports, big-endian");
        assert_eq!(&req[28..32], &[127, 0, 0, 1]);
        assert_eq!(&req[44..48], &[127, 64, 0, 9]);
        assert_eq!(&req[64..72], &[0xff; 8], "no cookie");
        assert!(diag::request(own, "[::1]:80".parse().unwrap()).is_none());
        // A reply: the request's header type, then the socket it describes.
        let mut reply = vec![0u8; 88];
        reply[4..6].copy_from_slice(&20u16.to_ne_bytes());
        reply[20..24].copy_from_slice(&req[24..28]);
        reply[80..84].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(diag::uid_of(&reply, own, remote), Some(1000));
        assert_eq!(diag::uid_of(&reply, remote, own), None, "another socket");
        assert_eq!(diag::uid_of(&reply[..82], own, remote), None, "short");
        reply[4..6].copy_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        assert_eq!(diag::uid_of(&reply, own, remote), None);
    }

    #[test]
    fn ipv6_entries_parse_word_by_word() {
        // ::1 port 80, as the kernel prints it on a little-endian host.
        let a = parse_addr("00000000000000000000000001000000:0050").unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(a, "[::1]:80".parse().unwrap());
        }
        assert!(parse_addr("0100007F").is_none());
        assert!(parse_addr("0100007:0050").is_none());
    }

    /// The real table: this test's own connection is found, owned by us.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_live_connection_is_found_with_our_uid() {
        use std::os::unix::fs::MetadataExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = l.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(local).await.unwrap();
        let (_server, peer) = l.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(peer_uid(peer, local), Some(me));
        // Both ways agree: the kernel's answer for the one socket, and its table.
        assert_eq!(diag::uid(peer, local), Some(me));
        assert_eq!(table_uid(peer, local), Some(me));
        assert_eq!(
            diag::uid(local, peer),
            Some(me),
            "the server's end, ours too"
        );
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(diag::uid(gone, local), None);
        let admit = owner_only().unwrap();
        assert!(admit(peer, local));
    }

    /// On the VMs' listener (0.0.0.0 on the loopback device) the client's
    /// socket is found by the VM address it called, which the accepted
    /// socket's local address names; the listener's own address names none.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_connection_to_a_vm_address_is_found_with_our_uid() {
        use std::os::unix::fs::MetadataExt;
        let l = crate::listener::bind_loopback_device(0).unwrap();
        let wildcard = l.local_addr().unwrap();
        let to = SocketAddr::from((Ipv4Addr::new(127, 64, 0, 9), wildcard.port()));
        let _client = tokio::net::TcpStream::connect(to).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        let local = server.local_addr().unwrap();
        assert_eq!(local, to);
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(peer_uid(peer, local), Some(me));
        assert_eq!(peer_uid(peer, wildcard), None);
    }
}
