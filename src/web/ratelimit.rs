//! The per-client rate limit of the web front (429 past it): token
//! buckets in a bounded table, pure (the caller passes the time).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Per-client token buckets (the front keys them by [`super::access::client_key`]);
/// the table is bounded (oldest entries go).
pub struct RateLimiter {
    rate: f32,
    burst: f32,
    buckets: HashMap<IpAddr, (f32, Instant)>,
}

/// Most addresses tracked at once.
const MAX_BUCKETS: usize = 1024;

impl RateLimiter {
    /// `rate` requests per second with bursts of `burst`.
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: rate.max(1) as f32,
            burst: burst.max(1) as f32,
            buckets: HashMap::new(),
        }
    }

    /// True when `ip` may make a request at `now` (and takes a token).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&ip) {
            // forget the buckets that have refilled; if none, the oldest
            let (rate, burst) = (self.rate, self.burst);
            self.buckets
                .retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f32() * rate < burst);
            if self.buckets.len() >= MAX_BUCKETS
                && let Some(oldest) = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f32() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limiter_refills() {
        let mut r = RateLimiter::new(10, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(r.allow(ip, t0));
        assert!(r.allow(ip, t0));
        assert!(!r.allow(ip, t0));
        assert!(r.allow(ip, t0 + Duration::from_millis(150)));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(r.allow(other, t0));
        for i in 0..3000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            r.allow(a, t0);
        }
        assert!(r.buckets.len() <= MAX_BUCKETS);
    }
}
