//! misim-dns component tests: the server on 127.0.0.1 port 0, queried over
//! UDP and TCP with hand-made hickory messages.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use misim_dns::Records;
use misim_dns::answer::answer;
use misim_dns::serve::{DnsLimits, serve};
use misim_runtime::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const ARM: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 2);
const ENTRA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 3);
const KV: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 4);

fn records() -> Records {
    Records::parse(
        "management.azure.com=169.254.169.2,login.microsoftonline.com=169.254.169.3,\
         graph.microsoft.com=169.254.169.3,*.vault.azure.net=169.254.169.4",
    )
    .unwrap()
}

struct Server {
    udp: SocketAddr,
    tcp: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: DnsLimits) -> Server {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (u, t) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(serve(
        Arc::new(records()),
        udp,
        tcp,
        shutdown.clone(),
        limits,
    ));
    Server {
        udp: u,
        tcp: t,
        shutdown,
        task,
    }
}

fn query(id: u16, name: &str, ty: RecordType) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
    m
}

async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), s.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn udp(server: SocketAddr, q: &Message) -> Message {
    Message::from_vec(&udp_raw(server, &q.to_vec().unwrap()).await).unwrap()
}

async fn tcp_ask(stream: &mut TcpStream, q: &Message) -> Message {
    let bytes = q.to_vec().unwrap();
    let len = u16::try_from(bytes.len()).unwrap();
    stream.write_all(&len.to_be_bytes()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let n = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(n)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn azure_names_resolve_to_the_configured_addresses_over_udp() {
    let s = start(DnsLimits::default()).await;
    for (i, (name, ip)) in [
        ("management.azure.com.", ARM),
        ("login.microsoftonline.com.", ENTRA),
        ("graph.microsoft.com.", ENTRA),
        ("kv1.vault.azure.net.", KV),
        ("a-vault-created-just-now.vault.azure.net.", KV),
    ]
    .into_iter()
    .enumerate()
    {
        let id = 1000 + u16::try_from(i).unwrap();
        let r = udp(s.udp, &query(id, name, RecordType::A)).await;
        assert_eq!(r.metadata.id, id);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(r.metadata.authoritative);
        assert!(r.metadata.recursion_desired, "RD is copied");
        assert!(!r.metadata.recursion_available, "never recurses");
        assert_eq!(r.queries.len(), 1);
        assert_eq!(a_records(&r), vec![ip], "{name}");
        assert_eq!(r.answers[0].name.to_ascii(), name);
    }
}

#[tokio::test]
async fn names_match_in_any_case_and_answers_keep_the_asked_case() {
    let s = start(DnsLimits::default()).await;
    for name in ["MANAGEMENT.Azure.COM.", "Kv1.VAULT.azure.NET."] {
        let r = udp(s.udp, &query(7, name, RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(a_records(&r).len(), 1, "{name}");
        assert_eq!(r.answers[0].name.to_ascii(), name);
    }
}

#[tokio::test]
async fn every_other_name_does_not_exist() {
    let s = start(DnsLimits::default()).await;
    for name in [
        "example.com.",
        "azure.com.",
        "azure.net.",
        "vault.azure.net.",
        "a.b.vault.azure.net.",
        "x.management.azure.com.",
        "microsoft.com.",
        "localhost.",
    ] {
        for ty in [RecordType::A, RecordType::AAAA, RecordType::MX] {
            let r = udp(s.udp, &query(9, name, ty)).await;
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::NXDomain,
                "{name} {ty}"
            );
            assert!(r.answers.is_empty());
        }
    }
}

#[tokio::test]
async fn other_types_of_known_names_have_no_data_and_refusals_are_typed() {
    let s = start(DnsLimits::default()).await;
    // AAAA (and MX, TXT): the name exists, the record does not (NODATA), so
    // clients fall back to the A record.
    for ty in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let r = udp(s.udp, &query(1, "management.azure.com.", ty)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{ty}");
        assert!(r.answers.is_empty(), "{ty}");
    }
    let r = udp(s.udp, &query(2, "kv9.vault.azure.net.", RecordType::ANY)).await;
    assert_eq!(a_records(&r), vec![KV]);
    for ty in [RecordType::AXFR, RecordType::IXFR] {
        let r = udp(s.udp, &query(3, "vault.azure.net.", ty)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{ty}");
    }
    let mut chaos = query(4, "management.azure.com.", RecordType::A);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        udp(s.udp, &chaos).await.metadata.response_code,
        ResponseCode::Refused
    );
    for op in [OpCode::Status, OpCode::Notify, OpCode::Update] {
        let mut q = query(5, "management.azure.com.", RecordType::A);
        q.metadata.op_code = op;
        let r = udp(s.udp, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp, "{op}");
        assert_eq!(r.metadata.op_code, op);
    }
    let mut two = query(6, "management.azure.com.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("graph.microsoft.com.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        udp(s.udp, &two).await.metadata.response_code,
        ResponseCode::FormErr
    );
    let none = Message::new(8, MessageType::Query, OpCode::Query);
    assert_eq!(
        udp(s.udp, &none).await.metadata.response_code,
        ResponseCode::FormErr
    );
}

#[tokio::test]
async fn malformed_datagrams_get_formerr_or_nothing_and_the_server_lives_on() {
    let s = start(DnsLimits::default()).await;
    let good = query(77, "management.azure.com.", RecordType::A)
        .to_vec()
        .unwrap();
    // A question cut short: FORMERR with the query's id.
    let r = udp_raw(s.udp, &good[..good.len() - 3]).await;
    let r = Message::from_vec(&r).unwrap();
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (77, ResponseCode::FormErr)
    );
    // A counted question that is not there.
    let mut lying = good[..12].to_vec();
    lying[5] = 3;
    let r = Message::from_vec(&udp_raw(s.udp, &lying).await).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // No answer at all: too short for an id, or a response (QR set).
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut response = good.clone();
    response[2] |= 0x80;
    for junk in [&[][..], &[1, 2, 3][..], &good[..11], &response[..]] {
        sock.send_to(junk, s.udp).await.unwrap();
    }
    // Datagrams are served in order: the next answer is the good query's.
    sock.send_to(&good, s.udp).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(a_records(&r), vec![ARM]);
    assert!(!s.task.is_finished());
}

#[tokio::test]
async fn tcp_answers_several_queries_on_one_connection() {
    let s = start(DnsLimits::default()).await;
    let mut c = TcpStream::connect(s.tcp).await.unwrap();
    let r = tcp_ask(
        &mut c,
        &query(1, "login.microsoftonline.com.", RecordType::A),
    )
    .await;
    assert_eq!(a_records(&r), vec![ENTRA]);
    let r = tcp_ask(
        &mut c,
        &query(2, "new-vault.vault.azure.net.", RecordType::A),
    )
    .await;
    assert_eq!(a_records(&r), vec![KV]);
    let r = tcp_ask(&mut c, &query(3, "example.com.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    // A framed message that is no query closes the connection.
    c.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let s = start(DnsLimits {
        idle_timeout: Duration::from_millis(100),
        ..DnsLimits::default()
    })
    .await;
    let mut c = TcpStream::connect(s.tcp).await.unwrap();
    // Half a length prefix, then nothing.
    c.write_all(&[0]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest))
        .await
        .expect("closed by the server")
        .ok();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn over_the_connection_cap_the_listener_waits_for_a_slot() {
    let s = start(DnsLimits {
        max_connections: 1,
        ..DnsLimits::default()
    })
    .await;
    let mut first = TcpStream::connect(s.tcp).await.unwrap();
    let q = query(1, "management.azure.com.", RecordType::A);
    assert_eq!(a_records(&tcp_ask(&mut first, &q).await), vec![ARM]);
    let mut second = TcpStream::connect(s.tcp).await.unwrap();
    let ask = tokio::spawn(async move { tcp_ask(&mut second, &q).await });
    // Unanswered while the first holds the only slot…
    let waiting = tokio::time::timeout(Duration::from_millis(300), async {
        while !ask.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        waiting.is_err(),
        "the second connection was served over the cap"
    );
    // …and served once it closes.
    drop(first);
    let r = tokio::time::timeout(Duration::from_secs(10), ask)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a_records(&r), vec![ARM]);
}

#[tokio::test]
async fn shutdown_stops_both_listeners() {
    let s = start(DnsLimits::default()).await;
    let _idle = TcpStream::connect(s.tcp).await.unwrap();
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), s.task)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
}

proptest::proptest! {
    /// No input panics the answerer, and whatever it answers parses and
    /// carries the query's id.
    #[test]
    fn any_bytes_are_answered_or_dropped_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let r = records();
        if let Some(out) = answer(&r, &bytes) {
            let m = Message::from_vec(&out).expect("a parseable answer");
            proptest::prop_assert_eq!(m.metadata.id, u16::from_be_bytes([bytes[0], bytes[1]]));
            proptest::prop_assert_eq!(m.metadata.message_type, MessageType::Response);
        }
    }

    /// Queries for any name under the vault suffix: one A record or NXDOMAIN,
    /// never anything else.
    #[test]
    fn vault_names_resolve_by_label_count(label in "[a-zA-Z][a-zA-Z0-9-]{0,23}", extra in proptest::option::of("[a-z0-9]{1,8}")) {
        let name = match &extra {
            Some(e) => format!("{e}.{label}.vault.azure.net."),
            None => format!("{label}.vault.azure.net."),
        };
        let q = query(5, &name, RecordType::A).to_vec().unwrap();
        let m = Message::from_vec(&answer(&records(), &q).unwrap()).unwrap();
        if extra.is_none() {
            proptest::prop_assert_eq!(a_records(&m), vec![KV]);
        } else {
            proptest::prop_assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        }
    }
}
