//! [`FastRequestId`]: the `x-request-id` the gateway gives a request that arrives without one.

use http::HeaderValue;
use tower_http::request_id::{MakeRequestId, RequestId};

/// Makes request ids shaped as UUID version 4 (`8-4-4-4-12` lowercase hex, version and
/// variant bits set) from a per-thread [`fastrand`] generator.
///
/// `tower_http`'s `MakeRequestUuid` asks the operating system for 16 random bytes on every
/// request (a `getrandom` system call each time). A request id needs to be unique, not
/// unpredictable — it is printed in logs and sent back to the client — so 122 bits from a
/// fast generator seeded once per thread are enough, and the system call goes away.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FastRequestId;

impl FastRequestId {
    /// A new id as its 36 ASCII bytes.
    pub(crate) fn generate() -> [u8; 36] {
        let mut bits = fastrand::u128(..);
        // Version 4 (random) in bits 76..80, variant `10` in bits 62..64.
        bits = (bits & !(0xF << 76)) | (0x4 << 76);
        bits = (bits & !(0x3 << 62)) | (0x2 << 62);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(bits.to_be_bytes()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xF)];
        }
        let mut out = [b'-'; 36];
        out[..8].copy_from_slice(&hex[..8]);
        out[9..13].copy_from_slice(&hex[8..12]);
        out[14..18].copy_from_slice(&hex[12..16]);
        out[19..23].copy_from_slice(&hex[16..20]);
        out[24..].copy_from_slice(&hex[20..]);
        out
    }
}

impl MakeRequestId for FastRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_bytes(&Self::generate())
            .ok()
            .map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_uuid_v4(id: &str) -> bool {
        let groups: Vec<&str> = id.split('-').collect();
        groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
            && groups.iter().all(|group| {
                group
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            && groups[2].starts_with('4')
            && groups[3].starts_with(['8', '9', 'a', 'b'])
    }

    #[test]
    fn ids_are_shaped_as_uuid_v4() {
        for _ in 0..1_000 {
            let id = FastRequestId::generate();
            let id = std::str::from_utf8(&id).unwrap();
            assert!(is_uuid_v4(id), "{id}");
        }
    }

    #[test]
    fn ids_do_not_repeat() {
        let ids: HashSet<[u8; 36]> = (0..100_000).map(|_| FastRequestId::generate()).collect();
        assert_eq!(ids.len(), 100_000);
    }

    #[test]
    fn every_request_gets_a_header_value() {
        let request = http::Request::new(());
        let id = FastRequestId.make_request_id(&request).expect("an id");
        assert!(is_uuid_v4(id.header_value().to_str().unwrap()));
    }
}
