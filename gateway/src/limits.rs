//! Rate limits, so one caller cannot crowd out the others: a token bucket per
//! client IP (the TCP peer) and one per bearer token (keyed by the token itself,
//! so a forged token naming someone else drains only its own bucket). Over the
//! limit: `429 too_many_requests` with `Retry-After`. The buckets are `governor`'s
//! keyed limiters; idle keys are forgotten every minute, so memory stays bounded
//! by the callers of the last minute.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

/// The two limiters.
pub struct Limits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_token: DefaultKeyedRateLimiter<u64>,
    /// Made once: creating a clock calibrates it (CPUID), which cost a quarter
    /// of the gateway's CPU when it was done per request.
    clock: DefaultClock,
}

fn quota((rate, burst): (u32, u32)) -> Quota {
    let rate = NonZeroU32::new(rate.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl Limits {
    /// Limits of `per_ip` and `per_token` (requests per second, burst).
    pub fn new(per_ip: (u32, u32), per_token: (u32, u32)) -> Self {
        Self {
            per_ip: RateLimiter::keyed(quota(per_ip)),
            per_token: RateLimiter::keyed(quota(per_token)),
            clock: DefaultClock::default(),
        }
    }

    /// Forgets keys whose buckets are full again (call periodically).
    pub fn forget_idle(&self) {
        self.per_ip.retain_recent();
        self.per_token.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_token.shrink_to_fit();
    }

    fn check(&self, ip: IpAddr, token: Option<&str>) -> Result<(), ApiError> {
        if let Err(not_until) = self.per_ip.check_key(&ip) {
            let wait = not_until
                .wait_time_from(self.clock.now())
                .as_secs_f64()
                .ceil() as u64;
            return Err(ApiError::too_many(
                format!("too many requests from {ip}; retry in {}s", wait.max(1)),
                wait,
            ));
        }
        if let Some(token) = token {
            let key = hash(token);
            if let Err(not_until) = self.per_token.check_key(&key) {
                let wait = not_until
                    .wait_time_from(self.clock.now())
                    .as_secs_f64()
                    .ceil() as u64;
                return Err(ApiError::too_many(
                    format!(
                        "too many requests with this token; retry in {}s",
                        wait.max(1)
                    ),
                    wait,
                ));
            }
        }
        Ok(())
    }
}

fn hash(token: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Per-process random keys: a caller cannot aim at another token's bucket.
    static STATE: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = STATE.get_or_init(Default::default).build_hasher();
    h.write(token.as_bytes());
    h.finish()
}

/// Middleware: refuses requests over either limit.
pub async fn limit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(reddit_shared::auth::parse_bearer);
    match state.limits.check(peer.ip(), token) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_429_and_tokens_do_not_share_buckets() {
        let l = Limits::new((1, 3), (1, 2));
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        assert!(l.check(other, Some("a")).is_ok());
        assert!(l.check(other, Some("a")).is_ok());
        let e = l.check(other, Some("a")).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retry_after.is_some());
        assert!(
            l.check(ip, Some("b")).is_ok(),
            "another token has its own bucket"
        );
        for _ in 0..2 {
            let _ = l.check(ip, None);
        }
        assert!(l.check(ip, None).is_err(), "the IP's burst of 3 is used up");
    }
}
