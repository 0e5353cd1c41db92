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

/// The uid of the client socket of the connection `peer` → `local`, from the
/// system's TCP tables.
#[cfg(target_os = "linux")]
fn peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    if let (IpAddr::V4(_), IpAddr::V4(_)) = (peer.ip(), local.ip())
        && let Some(uid) = read("/proc/net/tcp").and_then(|t| socket_uid(&t, peer, local))
    {
        return Some(uid);
    }
    let t = read("/proc/net/tcp6")?;
    socket_uid(&t, peer, local).or_else(|| socket_uid(&t, mapped(peer), mapped(local)))
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
