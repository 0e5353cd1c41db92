//! The one listener of per-VM-address mode: every VM's endpoint, on one port.
//!
//! It is bound to `0.0.0.0:<port>` *and* to the loopback device
//! (`SO_BINDTODEVICE` = `lo`): the kernel then delivers to it only
//! connections that arrive on `lo`, i.e. from this host's own network
//! namespace, to any of its addresses, including every `127.x.y.z`. So one
//! socket accepts connections to each VM's own loopback address
//! (`crate::domain::addresses`) and nothing from another interface; the
//! connection's local address names the VM. Linux lets unprivileged
//! processes bind to a device since 5.7; where it is refused, IMDS does not
//! start rather than listen on every interface.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

/// The device the listener is bound to.
const LOOPBACK_DEVICE: &[u8] = b"lo";
/// Connections waiting to be accepted (the kernel caps it at somaxconn).
const BACKLOG: i32 = 1024;

/// Binds the VMs' listener on `port` (0: the kernel picks), on the loopback
/// device only. The error names the cause when the kernel refuses the device
/// binding.
pub(crate) fn bind_loopback_device(port: u16) -> std::io::Result<TcpListener> {
    #[cfg(target_os = "linux")]
    {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        // As tokio's own bind: a restart may rebind the port while the old
        // process's connections linger in TIME_WAIT.
        socket.set_reuse_address(true)?;
        socket.bind_device(Some(LOOPBACK_DEVICE)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "binding IMDS's VM listener to the loopback device (SO_BINDTODEVICE lo) was \
                     refused ({e}); it needs Linux 5.7 or later (or CAP_NET_RAW). IMDS does not \
                     fall back to listening on every interface"
                ),
            )
        })?;
        // Never serve without the device binding: read it back.
        let device = socket.device()?;
        if device.as_deref() != Some(LOOPBACK_DEVICE) {
            return Err(std::io::Error::other(format!(
                "IMDS's VM listener is bound to device {device:?}, not lo"
            )));
        }
        socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        TcpListener::from_std(socket.into())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (port, LOOPBACK_DEVICE, BACKLOG);
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "per-VM IMDS addresses need Linux (SO_BINDTODEVICE); use source-address mode",
        ))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn device_of(l: &TcpListener) -> Option<Vec<u8>> {
        socket2::SockRef::from(l).device().unwrap()
    }

    /// One socket, bound to `lo`, reached at two loopback addresses; each
    /// accepted connection knows which one it was made to.
    #[tokio::test]
    async fn one_socket_on_lo_accepts_every_loopback_address() {
        let l = bind_loopback_device(0).unwrap();
        assert_eq!(device_of(&l).as_deref(), Some(LOOPBACK_DEVICE));
        let port = l.local_addr().unwrap().port();
        assert_ne!(port, 0);
        for ip in [Ipv4Addr::new(127, 64, 0, 1), Ipv4Addr::new(127, 100, 7, 9)] {
            let to = SocketAddr::from((ip, port));
            let _client = tokio::net::TcpStream::connect(to).await.unwrap();
            let (server, _) = l.accept().await.unwrap();
            assert_eq!(server.local_addr().unwrap(), to);
        }
    }

    /// The port is the listener's alone: nobody (not even this user) can
    /// bind a more specific address on it to intercept one VM's address.
    #[tokio::test]
    async fn a_vm_address_cannot_be_taken_over_on_the_same_port() {
        let l = bind_loopback_device(0).unwrap();
        let port = l.local_addr().unwrap().port();
        let thief = std::net::TcpListener::bind((Ipv4Addr::new(127, 64, 0, 1), port));
        assert!(
            thief.is_err(),
            "another socket bound a VM address on IMDS's port"
        );
        // A port in use cannot be bound twice.
        assert!(bind_loopback_device(port).is_err());
    }
}
