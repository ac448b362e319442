//! What the flow's `RateLimit` node knows of a caller's limits, and the
//! header fields that say it: `RateLimit-Policy` and `RateLimit` in the
//! structured-field syntax of draft-ietf-httpapi-ratelimit-headers-10
//! (`"burst";q=100;w=1` and `"daily";r=99987;t=43000`).
//!
//! The limiter itself lives in the server (its state is IO: memory now,
//! Redis later); the flow receives its answer as a [`RateVerdict`] and
//! decides the status from it.

use http::HeaderValue;
use http::header::HeaderName;

use crate::catalogue::ProblemKind;

/// `RateLimit-Policy`: the quota policies that apply to the caller.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: where the caller stands against the policy closest to exhaustion.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The limits Canon enforces, each a named quota policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitName {
    /// Per API key: a token bucket (GCRA) with a rate per second and a burst.
    Burst,
    /// Per tenant: requests per calendar day, reset at 00:00 UTC.
    Daily,
    /// Per client address: failed authentications (guessing tokens).
    AuthFailures,
    /// Per API key or tenant: requests in flight at once.
    InFlight,
}

impl LimitName {
    /// The policy's name in the header fields (an sf-string).
    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::Burst => "burst",
            LimitName::Daily => "daily",
            LimitName::AuthFailures => "auth-failures",
            LimitName::InFlight => "in-flight",
        }
    }

    /// The problem a refusal under this limit answers with.
    pub fn problem_kind(self) -> ProblemKind {
        match self {
            LimitName::Burst => ProblemKind::RateLimited,
            LimitName::Daily => ProblemKind::QuotaExhausted,
            LimitName::AuthFailures => ProblemKind::AuthFailuresLimited,
            LimitName::InFlight => ProblemKind::TooManyInFlight,
        }
    }
}

/// One policy and the caller's standing against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyStanding {
    /// Which limit.
    pub name: LimitName,
    /// `q`: requests the policy allows per window.
    pub quota: u64,
    /// `w`: the window, in seconds.
    pub window: u64,
    /// `r`: requests left now.
    pub remaining: u64,
    /// `t`: seconds until the quota is whole again.
    pub reset: u64,
}

/// A caller's standing: up to two policies (burst and daily for a tenant's
/// key; one for the operator or a failing client address). A fixed array,
/// so building one allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// The policies, in the order they are listed in `RateLimit-Policy`.
    pub policies: [Option<PolicyStanding>; 2],
}

impl Standing {
    /// A standing against one policy.
    pub fn one(p: PolicyStanding) -> Self {
        Self {
            policies: [Some(p), None],
        }
    }

    /// A standing against two policies.
    pub fn two(a: PolicyStanding, b: PolicyStanding) -> Self {
        Self {
            policies: [Some(a), Some(b)],
        }
    }

    /// The policies present.
    pub fn iter(&self) -> impl Iterator<Item = &PolicyStanding> {
        self.policies.iter().flatten()
    }

    /// The policy closest to exhaustion: the smallest share of its quota
    /// left (ties: the fewest requests left, then the first listed).
    pub fn closest(&self) -> Option<&PolicyStanding> {
        self.iter().min_by(|a, b| {
            // remaining/quota compared without division: a.r * b.q vs b.r * a.q.
            let left = u128::from(a.remaining) * u128::from(b.quota.max(1));
            let right = u128::from(b.remaining) * u128::from(a.quota.max(1));
            left.cmp(&right).then(a.remaining.cmp(&b.remaining))
        })
    }

    /// `RateLimit-Policy`: `"burst";q=100;w=1, "daily";q=100000;w=86400`.
    pub fn policy_field(&self) -> Option<HeaderValue> {
        // The policies change only when an operator changes limits, and
        // most callers share the defaults: each thread keeps the last field
        // it built, and a response with the same policies shares its bytes.
        thread_local! {
            static LAST: std::cell::RefCell<Option<(Policies, HeaderValue)>> = const { std::cell::RefCell::new(None) };
        }
        let policies = self.policies.map(|p| p.map(|p| (p.name, p.quota, p.window)));
        LAST.with_borrow_mut(|last| match last {
            Some((kept, field)) if *kept == policies => Some(field.clone()),
            _ => {
                let field = self.build_policy_field()?;
                *last = Some((policies, field.clone()));
                Some(field)
            }
        })
    }

    fn build_policy_field(&self) -> Option<HeaderValue> {
        // Built by hand (itoa for the numbers): every limited response
        // sends both fields, and `format!` was a visible share of a GET.
        let mut field = String::with_capacity(64);
        for p in self.iter() {
            if !field.is_empty() {
                field.push_str(", ");
            }
            item(&mut field, p.name, [("q", p.quota), ("w", p.window)]);
        }
        (!field.is_empty()).then(|| HeaderValue::try_from(field).ok()).flatten()
    }

    /// `RateLimit`: `"daily";r=99987;t=43000`, for the policy closest to exhaustion.
    pub fn limit_field(&self) -> Option<HeaderValue> {
        let p = self.closest()?;
        let mut field = String::with_capacity(40);
        item(&mut field, p.name, [("r", p.remaining), ("t", p.reset)]);
        HeaderValue::try_from(field).ok()
    }
}

/// What `RateLimit-Policy` says: each policy's name, quota and window.
type Policies = [Option<(LimitName, u64, u64)>; 2];

/// Appends one structured-field item: `"name";k=v;k=v`.
fn item(field: &mut String, name: LimitName, parameters: [(&str, u64); 2]) {
    field.push('"');
    field.push_str(name.as_str());
    field.push('"');
    let mut digits = itoa::Buffer::new();
    for (key, value) in parameters {
        field.push(';');
        field.push_str(key);
        field.push('=');
        field.push_str(digits.format(value));
    }
}

/// The limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// No limit applies (a batch's operations, charged once as the batch).
    Unlimited,
    /// Within every limit; one request was taken from each.
    Allowed(Standing),
    /// Over `limit`: nothing was taken. `retry_after` is in whole seconds, at least 1.
    Refused {
        /// The caller's standing (unchanged by the refusal).
        standing: Standing,
        /// The limit that was hit.
        limit: LimitName,
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
}

impl RateVerdict {
    /// The standing to advertise, if any.
    pub fn standing(&self) -> Option<Standing> {
        match self {
            RateVerdict::Unlimited => None,
            RateVerdict::Allowed(s) | RateVerdict::Refused { standing: s, .. } => Some(*s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: LimitName, quota: u64, window: u64, remaining: u64, reset: u64) -> PolicyStanding {
        PolicyStanding {
            name,
            quota,
            window,
            remaining,
            reset,
        }
    }

    #[test]
    fn fields_follow_the_draft_syntax() {
        let s = Standing::two(
            p(LimitName::Burst, 100, 1, 99, 1),
            p(LimitName::Daily, 100_000, 86_400, 99_987, 43_000),
        );
        assert_eq!(
            s.policy_field().unwrap(),
            "\"burst\";q=100;w=1, \"daily\";q=100000;w=86400"
        );
        // 99/100 left of the burst, 99987/100000 of the day: the burst is closer.
        assert_eq!(s.limit_field().unwrap(), "\"burst\";r=99;t=1");
        let s = Standing::two(
            p(LimitName::Burst, 100, 1, 100, 0),
            p(LimitName::Daily, 100_000, 86_400, 99_987, 43_000),
        );
        assert_eq!(s.limit_field().unwrap(), "\"daily\";r=99987;t=43000");
    }

    #[test]
    fn the_policy_field_kept_by_a_thread_follows_the_policies() {
        let burst = |quota| Standing::one(p(LimitName::Burst, quota, 1, 1, 1));
        assert_eq!(burst(10).policy_field().unwrap(), "\"burst\";q=10;w=1");
        assert_eq!(burst(10).policy_field().unwrap(), "\"burst\";q=10;w=1");
        assert_eq!(burst(20).policy_field().unwrap(), "\"burst\";q=20;w=1");
        let daily = Standing::one(p(LimitName::Daily, 20, 86_400, 1, 1));
        assert_eq!(daily.policy_field().unwrap(), "\"daily\";q=20;w=86400");
        assert_eq!(Standing::default().policy_field(), None);
    }

    #[test]
    fn an_empty_standing_has_no_fields() {
        let s = Standing::default();
        assert!(s.policy_field().is_none());
        assert!(s.limit_field().is_none());
    }
}
