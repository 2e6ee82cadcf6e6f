//! Rate limits, so one caller cannot crowd out the others: a token bucket per
//! client IP (the TCP peer) and one per bearer token (keyed by the token itself,
//! so a forged token naming someone else drains only its own bucket). Over the
//! limit: `429 too_many_requests` with `Retry-After`. The buckets are `governor`'s
//! keyed limiters; idle keys are forgotten every minute, so memory stays bounded
//! by the callers of the last minute.

use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::AUTHORIZATION;
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
    /// Set once a serving thread sweeps these limits ([`Limits::claim_sweep`]).
    swept: std::sync::atomic::AtomicBool,
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
            swept: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True for the first caller only: the serving threads share one
    /// `Limits`, and one of them sweeps it ([`Limits::forget_idle`]).
    pub fn claim_sweep(&self) -> bool {
        !self.swept.swap(true, std::sync::atomic::Ordering::Relaxed)
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

/// The layer that refuses requests over either limit, as a plain tower
/// service: a request under the limits goes to the inner service as it is
/// (`axum::middleware::from_fn` boxed the inner service and the future of
/// every request).
#[derive(Clone)]
pub struct LimitLayer(pub std::sync::Arc<Limits>);

impl<S> tower::Layer<S> for LimitLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            limits: self.0.clone(),
        }
    }
}

/// A service behind [`LimitLayer`].
#[derive(Clone)]
pub struct Limited<S> {
    inner: S,
    limits: std::sync::Arc<Limits>,
}

impl<S> tower::Service<Request> for Limited<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        std::future::Ready<Result<Response, std::convert::Infallible>>,
        S::Future,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Every connection has its peer's address (the server is made with
        // connect info); without one, all such requests share one bucket.
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let token = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(reddit_shared::auth::parse_bearer);
        match self.limits.check(ip, token) {
            Ok(()) => futures::future::Either::Right(self.inner.call(request)),
            Err(e) => futures::future::Either::Left(std::future::ready(Ok(e.into_response()))),
        }
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

    #[test]
    fn one_serving_thread_of_many_sweeps_the_shared_limits() {
        let l = Limits::new((1, 3), (1, 2));
        let claims: Vec<bool> = (0..4).map(|_| l.claim_sweep()).collect();
        assert_eq!(claims, [true, false, false, false]);
    }
}
