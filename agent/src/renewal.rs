//! When to ask for the next workload certificate. The CA backdates a
//! certificate's notBefore (clock skew), so its lifetime is counted from
//! when this agent got it; a CSR that goes unanswered is sent again after
//! a tenth of that lifetime (at most 10 s), and the wait for an answer
//! ends as soon as a new certificate arrives, so that short lifetimes
//! (seconds) are renewed before they end.

use std::time::{Duration, SystemTime};

use crate::identity::CertInfo;

/// The longest wait for an answer to a CSR before another is sent.
const RETRY_AT_MOST: Duration = Duration::from_secs(10);
/// The shortest: however short the lifetime, CSRs do not flood the CP.
const RETRY_AT_LEAST: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct RenewalClock {
    /// The certificate in force and when it arrived.
    seen: Option<(String, SystemTime)>,
    /// The last CSR: when it went, and for which certificate.
    sent: Option<(String, SystemTime)>,
}

impl RenewalClock {
    /// When the next CSR is due for `cert`, as of `now`.
    pub fn due(&mut self, cert: &CertInfo, now: SystemTime) -> SystemTime {
        let arrived = match &self.seen {
            Some((serial, at)) if *serial == cert.serial => *at,
            _ => {
                self.seen = Some((cert.serial.clone(), now));
                now
            }
        };
        let start = arrived.max(cert.not_before);
        let life = cert.not_after.duration_since(start).unwrap_or_default();
        let at = start + life.mul_f64(0.8);
        match &self.sent {
            // Unanswered: the certificate is the one it was sent for.
            Some((serial, sent_at)) if *serial == cert.serial => {
                let retry = (life / 10).clamp(RETRY_AT_LEAST, RETRY_AT_MOST);
                at.max(*sent_at + retry)
            }
            _ => at,
        }
    }

    /// A CSR went for (the renewal of) `cert`.
    pub fn sent(&mut self, cert: Option<&CertInfo>, now: SystemTime) {
        self.sent = cert.map(|c| (c.serial.clone(), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: &str, issued: SystemTime, life: Duration) -> CertInfo {
        CertInfo {
            serial: serial.into(),
            sha256: String::new(),
            uris: Vec::new(),
            // Backdated by the CA.
            not_before: issued - Duration::from_secs(10),
            not_after: issued + life,
        }
    }

    #[test]
    fn five_second_certificates_are_renewed_before_they_end_again_and_again() {
        let mut clock = RenewalClock::default();
        let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = cert("1", now, Duration::from_secs(5));
        for n in 2..20 {
            let due = clock.due(&c, now);
            assert!(due < c.not_after, "renewal {n} due at or after expiry");
            assert!(due >= now + Duration::from_secs(3), "renewal {n} too early");
            now = due;
            clock.sent(Some(&c), now);
            // The CP answers 50 ms later.
            now += Duration::from_millis(50);
            c = cert(&n.to_string(), now, Duration::from_secs(5));
        }
    }

    #[test]
    fn an_unanswered_csr_is_sent_again_within_the_lifetime() {
        let mut clock = RenewalClock::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = cert("1", now, Duration::from_secs(5));
        let first = clock.due(&c, now);
        clock.sent(Some(&c), first);
        let again = clock.due(&c, first);
        assert_eq!(again, first + RETRY_AT_LEAST);
        assert!(again < c.not_after);
        // A day-long certificate retries 10 s later.
        let day = cert("2", now, Duration::from_secs(86_400));
        let due = clock.due(&day, now);
        clock.sent(Some(&day), due);
        assert_eq!(clock.due(&day, due), due + RETRY_AT_MOST);
    }
}
