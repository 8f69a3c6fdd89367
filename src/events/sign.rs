//! Delivery signatures, as Stripe and GitHub sign theirs: HMAC-SHA256 with the
//! subscription's secret over "timestamp.body", sent as `Facegate-Signature: t=T,v1=HEX`.
//! The timestamp in the signed part lets a receiver refuse a replayed delivery.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const HEADER: &str = "Facegate-Signature";

/// The header value for `body` signed at unix time `t`.
pub fn header(secret: &str, t: u64, body: &str) -> String {
    format!("t={t},v1={}", hex::encode(mac(secret, t, body)))
}

fn mac(secret: &str, t: u64, body: &str) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// A receiver's check: the header parses, its signature is the body's (compared in constant
/// time) and its timestamp within `tolerance_secs` of `now`.
pub fn verify(secret: &str, header: &str, body: &str, now: u64, tolerance_secs: u64) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => sigs.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now.abs_diff(t) > tolerance_secs {
        return false;
    }
    let expected = mac(secret, t, body);
    sigs.iter().any(|s| bool::from(expected.ct_eq(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_and_any_change_breaks_it() {
        let h = header("s3cret-s3cret-s3cret", 1_700_000_000, "{\"a\":1}");
        assert!(h.starts_with("t=1700000000,v1="), "{h}");
        assert!(verify("s3cret-s3cret-s3cret", &h, "{\"a\":1}", 1_700_000_010, 300));
        assert!(!verify("s3cret-s3cret-s3cres", &h, "{\"a\":1}", 1_700_000_010, 300));
        assert!(!verify("s3cret-s3cret-s3cret", &h, "{\"a\":2}", 1_700_000_010, 300));
        assert!(!verify("s3cret-s3cret-s3cret", &h, "{\"a\":1}", 1_700_001_000, 300), "too old");
        let forged = h.replace("t=1700000000", "t=1700000500");
        assert!(!verify("s3cret-s3cret-s3cret", &forged, "{\"a\":1}", 1_700_000_500, 300));
        // RFC 4231 test case 2.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap_or_else(|_| unreachable!());
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
