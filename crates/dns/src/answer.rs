//! One DNS query in, one answer out: pure, no IO, so UDP and TCP share it
//! and tests call it directly.
//!
//! Authoritative-only (RFC 1035 §4.1.1): the server never recurses or
//! forwards, so a name it does not know does not exist.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use crate::Records;

/// How long clients may cache an answer. The compose addresses are fixed,
/// but a short TTL keeps a changed map from lingering in client caches.
pub const TTL: u32 = 60;

/// The DNS header's length: anything shorter is not a DNS message.
const HEADER_LEN: usize = 12;

/// The answer to `query`, or `None` when it must be dropped: too short to
/// carry an id, or itself a response (answering responses lets two servers
/// loop on each other).
pub fn answer(records: &Records, query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < HEADER_LEN || query[2] & 0x80 != 0 {
        return None;
    }
    let Ok(request) = Message::from_vec(query) else {
        return Some(format_error(query));
    };
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    // We are the authority for every name we answer, and for the absence of
    // the rest; some stub resolvers (Go's) treat a non-authoritative empty
    // answer without recursion as a lame referral.
    response.metadata.authoritative = true;
    response.metadata.response_code = respond(records, &request, &mut response);
    response.to_vec().ok()
}

/// Fills `response`'s question and answer sections; returns the RCODE.
fn respond(records: &Records, request: &Message, response: &mut Message) -> ResponseCode {
    if request.metadata.op_code != OpCode::Query {
        response.metadata.authoritative = false;
        return ResponseCode::NotImp;
    }
    // RFC 9619: QDCOUNT is exactly 1 in a query.
    let [question] = request.queries.as_slice() else {
        response.metadata.authoritative = false;
        return ResponseCode::FormErr;
    };
    response.add_query(question.clone());
    if question.query_class() != DNSClass::IN {
        response.metadata.authoritative = false;
        return ResponseCode::Refused;
    }
    // Zone transfers are never served: the map is configuration, not a zone.
    if matches!(question.query_type(), RecordType::AXFR | RecordType::IXFR) {
        response.metadata.authoritative = false;
        return ResponseCode::Refused;
    }
    let name = question.name();
    let Some(ip) = records.lookup(name.iter()) else {
        return ResponseCode::NXDomain;
    };
    // AAAA and every other type of a known name: the name exists but has no
    // such record (NODATA), so clients fall back to its A record. ANY gets
    // the A record (RFC 8482 lets a server answer ANY with a subset).
    if matches!(question.query_type(), RecordType::A | RecordType::ANY) {
        response.add_answer(Record::from_rdata(name.clone(), TTL, RData::A(A(ip))));
    }
    ResponseCode::NoError
}

/// FORMERR for a query that does not parse: the header's id and opcode
/// copied, nothing else, so the client stops waiting.
fn format_error(query: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out[..2].copy_from_slice(&query[..2]);
    // QR=1, the query's opcode, RD copied; RCODE=1.
    out[2] = 0x80 | (query[2] & 0x79);
    out[3] = ResponseCode::FormErr.low();
    out
}
