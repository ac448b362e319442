//! The route table: which paths exist, which methods each supports, who may
//! call them, and which media types they read and write.
//!
//! Routes are data, not code, so the decision flow, the documentation and the
//! tests can all read the same table.

use http::Method;

use crate::access::Role;
use crate::catalogue::ProblemKind;
use crate::media::MediaType;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Anyone, without credentials (health, docs).
    Public,
    /// An authenticated caller holding at least this role.
    Role(Role),
}

/// What a route does with one method.
#[derive(Debug, Clone)]
pub struct MethodSpec {
    /// The method. `HEAD` is implied by `GET` and never listed.
    pub method: Method,
    /// Who may call it.
    pub guard: Guard,
    /// Media types accepted for the request body; empty when the method takes none.
    pub accepts: &'static [MediaType],
    /// Media types the success response can be, in order of preference; empty
    /// when success has no body.
    pub produces: &'static [MediaType],
    /// Whether the method creates the resource when it does not exist (PUT).
    pub creates: bool,
    /// Whether the body is taken as a stream once every node before
    /// `Execute` has passed (up to `Limits::max_stream_bytes`), instead of
    /// being read whole at the `Body` node (up to `max_body_bytes`).
    pub streams: bool,
    /// Whether the method changes state (so locks and `require_if_match` apply).
    pub writes: bool,
    /// Whether the request and the answer belong to another server (a
    /// device, through the gateway): the body is taken as a stream of any
    /// type and coding, conditional headers, `Accept` and `Idempotency-Key`
    /// are left to that server, and its answer ([`Outcome::Forwarded`]) is
    /// relayed as it came.
    pub forwards: bool,
    /// The 2xx outcomes the action can have.
    pub outcomes: &'static [Outcome],
    /// The problems the action itself can raise once every node before
    /// `Execute` passed (a taken unique value, a schema violation, …).
    pub raises: &'static [ProblemKind],
    /// The name of the request body's schema (for the API description).
    pub request: Option<&'static str>,
    /// The name of the JSON success body's schema (for the API description).
    pub response: Option<&'static str>,
}

/// A 2xx outcome of an action (the `Success` variants of the flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with a representation.
    Ok,
    /// 201 with `Location` and a representation.
    Created,
    /// 204 without a body.
    NoContent,
    /// 207: several operations, each with its own status in the body.
    MultiStatus,
    /// 202: accepted as a job (`Location`, `Retry-After`).
    Accepted,
    /// Another server's answer, relayed with its own status (a device's,
    /// through the gateway); listed as 200, its usual status.
    Forwarded,
}

impl Outcome {
    /// The status this outcome is sent with.
    pub const fn status(self) -> u16 {
        match self {
            Outcome::Ok => 200,
            Outcome::Created => 201,
            Outcome::NoContent => 204,
            Outcome::MultiStatus => 207,
            Outcome::Accepted => 202,
            Outcome::Forwarded => 200,
        }
    }
}

/// What the resources behind a route can be found in: the facts the flow's
/// `Exists`, `PreconditionRequired` and `Unlocked` nodes read. Documentation
/// derives each operation's statuses from them (`operation::statuses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct States {
    /// Something the path names may not exist (404).
    pub missing: bool,
    /// Something the path names may have been deleted, its tombstone kept (410).
    pub gone: bool,
    /// The path may name a renamed collection by its old name (301/308).
    pub moved: bool,
    /// The path may go through `/v1/tenants/current` (307).
    pub current: bool,
    /// Writes may be required to carry `If-Match` (428).
    pub require_if_match: bool,
    /// Writes may meet another caller's lock (423).
    pub lockable: bool,
    /// The path may name finished work whose outcome is elsewhere (303 for
    /// GET and HEAD).
    pub see_other: bool,
}

impl States {
    /// A resource that always exists (health, documentation, top-level lists).
    pub const FIXED: States = States {
        missing: false,
        gone: false,
        moved: false,
        current: false,
        require_if_match: false,
        lockable: false,
        see_other: false,
    };

    /// With `see_other` set.
    pub const fn see_other(mut self) -> Self {
        self.see_other = true;
        self
    }
    /// With `missing` set.
    pub const fn missing(mut self) -> Self {
        self.missing = true;
        self
    }
    /// With `gone` set.
    pub const fn gone(mut self) -> Self {
        self.gone = true;
        self
    }
    /// With `moved` set.
    pub const fn moved(mut self) -> Self {
        self.moved = true;
        self
    }
    /// With `current` set.
    pub const fn current(mut self) -> Self {
        self.current = true;
        self
    }
    /// With `require_if_match` set.
    pub const fn require_if_match(mut self) -> Self {
        self.require_if_match = true;
        self
    }
    /// With `lockable` set.
    pub const fn lockable(mut self) -> Self {
        self.lockable = true;
        self
    }
}

impl MethodSpec {
    /// A safe read producing `produces`.
    pub const fn read(method: Method, guard: Guard, produces: &'static [MediaType]) -> Self {
        Self {
            method,
            guard,
            accepts: &[],
            produces,
            creates: false,
            streams: false,
            writes: false,
            forwards: false,
            outcomes: &[Outcome::Ok],
            raises: &[],
            request: None,
            response: None,
        }
    }

    /// A write taking `accepts` and answering with `produces`.
    pub const fn write(
        method: Method,
        guard: Guard,
        accepts: &'static [MediaType],
        produces: &'static [MediaType],
    ) -> Self {
        Self {
            method,
            guard,
            accepts,
            produces,
            creates: false,
            streams: false,
            writes: true,
            forwards: false,
            outcomes: &[Outcome::Ok],
            raises: &[],
            request: None,
            response: None,
        }
    }

    /// This spec, taking its body as a stream (see [`MethodSpec::streams`]).
    pub const fn streaming(mut self) -> Self {
        self.streams = true;
        self
    }

    /// This spec, relaying its request to another server and that server's
    /// answer back (see [`MethodSpec::forwards`]): it streams, and takes
    /// any body.
    pub const fn forwarding(mut self) -> Self {
        self.forwards = true;
        self.streams = true;
        self.outcomes = &[Outcome::Forwarded];
        self
    }

    /// This spec, marked as able to create a missing resource.
    pub const fn creating(mut self) -> Self {
        self.creates = true;
        self
    }

    /// This spec, with the 2xx outcomes its action can have.
    pub const fn answering(mut self, outcomes: &'static [Outcome]) -> Self {
        self.outcomes = outcomes;
        self
    }

    /// This spec, with the problems its action can raise.
    pub const fn raising(mut self, raises: &'static [ProblemKind]) -> Self {
        self.raises = raises;
        self
    }

    /// This spec, with the names of its request and success body schemas.
    pub const fn bodies(mut self, request: Option<&'static str>, response: Option<&'static str>) -> Self {
        self.request = request;
        self.response = response;
        self
    }
}

/// One route: a path pattern and its methods.
#[derive(Debug)]
pub struct RouteSpec {
    /// A stable name, used to dispatch to the handler.
    pub name: &'static str,
    /// The path pattern in `matchit` syntax (`/v1/tenants/{tenant}`).
    pub pattern: &'static str,
    /// The supported methods.
    pub methods: &'static [MethodSpec],
    /// Methods the contract names for this route that are not implemented
    /// yet: they answer 501, and are left out of `Allow`.
    pub planned: &'static [Method],
    /// One line on what the route is.
    pub summary: &'static str,
    /// What the resources behind it can be found in.
    pub states: States,
}

impl RouteSpec {
    /// The spec for `method`, with `HEAD` served by `GET`.
    pub fn method(&self, method: &Method) -> Option<&MethodSpec> {
        let wanted = if method == Method::HEAD { &Method::GET } else { method };
        self.methods.iter().find(|m| m.method == *wanted)
    }

    /// The `Allow` header value: the supported methods, `HEAD` after `GET`,
    /// and `OPTIONS`.
    pub fn allow(&self) -> String {
        let mut out: Vec<&str> = Vec::with_capacity(self.methods.len() + 2);
        for m in self.methods {
            out.push(m.method.as_str());
            if m.method == Method::GET {
                out.push("HEAD");
            }
        }
        out.push("OPTIONS");
        out.join(", ")
    }
}

/// The most parameters one route captures (`{tenant}`, `{collection}`,
/// `{id}` and room for one more); [`RouteTable::new`] refuses a pattern
/// with more.
pub const MAX_PARAMS: usize = 4;

/// Path parameters captured by a match, in pattern order.
///
/// The decoded values sit one after another in one string, each named with
/// where it ends: a match allocates once, whatever the number of parameters
/// (every API request is matched).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// The values, concatenated.
    text: String,
    /// Each parameter's name and the end of its value in `text`; its start
    /// is the end of the one before.
    ends: [(&'static str, usize); MAX_PARAMS],
    len: usize,
}

impl Params {
    /// The value of the parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let mut start = 0;
        for &(key, end) in &self.ends[..self.len] {
            if key == name {
                return self.text.get(start..end);
            }
            start = end;
        }
        None
    }

    /// Builds parameters from pairs (for tests and internal dispatch); at
    /// most [`MAX_PARAMS`] of them, the rest are dropped.
    pub fn from_pairs(pairs: Vec<(&'static str, String)>) -> Self {
        let mut params = Self::default();
        for (name, value) in pairs.into_iter().take(MAX_PARAMS) {
            params.text.push_str(&value);
            params.push_end(name);
        }
        params
    }

    /// Ends the value written last to `text`, naming it `name`.
    fn push_end(&mut self, name: &'static str) {
        if let Some(slot) = self.ends.get_mut(self.len) {
            *slot = (name, self.text.len());
            self.len += 1;
        }
    }
}

/// A compiled route table.
pub struct RouteTable {
    routes: &'static [RouteSpec],
    router: matchit::Router<usize>,
    /// Each route's parameters, in pattern order: the values are read
    /// from the path's segments by position, not from matchit's captures,
    /// which it checks as UTF-8 one by one (the path is a `&str` already).
    captures: Vec<Vec<Capture>>,
}

/// Where a route's parameter sits in its pattern: a whole segment, or
/// (`{*name}`) the rest of the path from that segment on.
#[derive(Debug, Clone, Copy)]
struct Capture {
    name: &'static str,
    /// The index of its segment in the pattern split at `/` (0 is the
    /// empty one before the leading slash).
    segment: usize,
    rest: bool,
}

/// The table could not be compiled (a pattern conflict: a programming error).
#[derive(Debug, thiserror::Error)]
#[error("route {pattern}: {reason}")]
pub struct RouteTableError {
    /// The offending pattern.
    pub pattern: &'static str,
    /// Why it was rejected.
    pub reason: String,
}

impl RouteTable {
    /// Compiles `routes`.
    pub fn new(routes: &'static [RouteSpec]) -> Result<Self, RouteTableError> {
        let mut router = matchit::Router::new();
        let mut captures = Vec::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            let refuse = |reason: String| RouteTableError {
                pattern: r.pattern,
                reason,
            };
            router.insert(r.pattern, i).map_err(|e| refuse(e.to_string()))?;
            let mut these = Vec::new();
            for (segment, text) in r.pattern.split('/').enumerate() {
                if !text.contains(['{', '}']) {
                    continue;
                }
                let name = text
                    .strip_prefix('{')
                    .and_then(|s| s.strip_suffix('}'))
                    .filter(|s| !s.contains(['{', '}']))
                    .ok_or_else(|| refuse(format!("the parameter `{text}` is not a whole segment")))?;
                let (name, rest) = match name.strip_prefix('*') {
                    Some(name) => (name, true),
                    None => (name, false),
                };
                these.push(Capture { name, segment, rest });
            }
            if these.len() > MAX_PARAMS {
                return Err(refuse(format!("more than {MAX_PARAMS} parameters")));
            }
            captures.push(these);
        }
        Ok(Self {
            routes,
            router,
            captures,
        })
    }

    /// Every route, in table order.
    pub fn routes(&self) -> &'static [RouteSpec] {
        self.routes
    }

    /// The route matching `path`, with its parameters (percent-decoded).
    pub fn lookup(&self, path: &str) -> Option<(&'static RouteSpec, Params)> {
        let matched = self.router.at(path).ok()?;
        let idx = *matched.value;
        let captures = &self.captures[idx];
        if matched.params.len() != captures.len() {
            return None;
        }
        // The path's length bounds the values' (decoding only shortens).
        let mut params = Params {
            text: String::with_capacity(if captures.is_empty() { 0 } else { path.len() }),
            ..Params::default()
        };
        // The path matched the pattern, so its segments line up with the
        // pattern's: each value is the segment at its parameter's place (or,
        // for `{*name}`, the path from there on), found in one pass over
        // the path's bytes.
        let bytes = path.as_bytes();
        let slash_after = |from: usize| bytes.get(from..).and_then(|rest| rest.iter().position(|&b| b == b'/'));
        // The segment `start` begins, and where it begins.
        let (mut segment, mut start) = (0, 0);
        for capture in captures {
            while segment < capture.segment {
                start += slash_after(start)? + 1;
                segment += 1;
            }
            let end = if capture.rest {
                bytes.len()
            } else {
                slash_after(start).map_or(bytes.len(), |at| start + at)
            };
            percent_decode_into(&mut params.text, path.get(start..end)?)?;
            params.push_end(capture.name);
            // `end` is the slash before the next segment: the next step
            // finds it at once.
            start = end;
        }
        Some((&self.routes[idx], params))
    }
}

/// Appends `s` to `out` with its `%XX` escapes decoded; `None` for bad
/// escapes or a result that is not UTF-8 (`out` is then left as it was).
fn percent_decode_into(out: &mut String, s: &str) -> Option<()> {
    if !s.contains('%') {
        out.push_str(s);
        return Some(());
    }
    let bytes = s.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    out.push_str(std::str::from_utf8(&decoded).ok()?);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    static ROUTES: &[RouteSpec] = &[
        RouteSpec {
            name: "thing",
            pattern: "/v1/things/{thing}",
            methods: &[
                MethodSpec::read(Method::GET, Guard::Role(Role::Viewer), &[MediaType::Json]),
                MethodSpec::write(
                    Method::PUT,
                    Guard::Role(Role::Editor),
                    &[MediaType::Json],
                    &[MediaType::Json],
                )
                .creating(),
            ],
            planned: &[Method::PATCH],
            summary: "a thing",
            states: States::FIXED.missing(),
        },
        RouteSpec {
            name: "health",
            pattern: "/healthz",
            methods: &[],
            planned: &[],
            summary: "",
            states: States::FIXED,
        },
    ];

    #[test]
    fn lookup_captures_decoded_params() {
        let t = RouteTable::new(ROUTES).unwrap();
        let (r, p) = t.lookup("/v1/things/a%20b").unwrap();
        assert_eq!(r.name, "thing");
        assert_eq!(p.get("thing"), Some("a b"));
        assert!(t.lookup("/v1/things/%zz").is_none());
        assert!(t.lookup("/v1/things").is_none());
        assert!(t.lookup("/v1/things/a/b").is_none());
    }

    #[test]
    fn lookup_names_each_param_in_pattern_order() {
        static NESTED: &[RouteSpec] = &[RouteSpec {
            name: "nested",
            pattern: "/v1/outer/{outer}/inner/{inner}/{leaf}",
            methods: &[],
            planned: &[],
            summary: "",
            states: States::FIXED,
        }];
        let t = RouteTable::new(NESTED).unwrap();
        let (_, p) = t.lookup("/v1/outer/a/inner/b%2Fc/d").unwrap();
        assert_eq!(
            (p.get("outer"), p.get("inner"), p.get("leaf")),
            (Some("a"), Some("b/c"), Some("d"))
        );
    }

    #[test]
    fn lookup_takes_a_catch_all_parameter_to_the_end_of_the_path() {
        static GATEWAY: &[RouteSpec] = &[RouteSpec {
            name: "gateway",
            pattern: "/v1/devices/{device}/api/{*path}",
            methods: &[],
            planned: &[],
            summary: "",
            states: States::FIXED,
        }];
        let t = RouteTable::new(GATEWAY).unwrap();
        let (_, p) = t.lookup("/v1/devices/d%201/api/system/ports/7").unwrap();
        assert_eq!((p.get("device"), p.get("path")), (Some("d 1"), Some("system/ports/7")));
        let (_, p) = t.lookup("/v1/devices/d/api/x").unwrap();
        assert_eq!(p.get("path"), Some("x"));
        assert!(t.lookup("/v1/devices/d/api/").is_none());
    }

    #[test]
    fn a_parameter_must_be_a_whole_segment() {
        static PARTIAL: &[RouteSpec] = &[RouteSpec {
            name: "partial",
            pattern: "/v1/files/{name}.json",
            methods: &[],
            planned: &[],
            summary: "",
            states: States::FIXED,
        }];
        let error = RouteTable::new(PARTIAL).err().expect("refused");
        assert!(error.reason.contains("whole segment"), "{error}");
    }

    #[test]
    fn params_share_one_buffer_and_keep_their_bounds() {
        let p = Params::from_pairs(vec![
            ("tenant", "acme".into()),
            ("collection", "".into()),
            ("id", "r 1".into()),
        ]);
        assert_eq!(p.get("tenant"), Some("acme"));
        assert_eq!(p.get("collection"), Some(""));
        assert_eq!(p.get("id"), Some("r 1"));
        assert_eq!(p.get("other"), None);
        let too_many = (0..MAX_PARAMS + 1).map(|n| ("p", n.to_string())).collect();
        assert_eq!(Params::from_pairs(too_many).len, MAX_PARAMS);
    }

    #[test]
    fn allow_lists_head_after_get_and_options_last() {
        assert_eq!(ROUTES[0].allow(), "GET, HEAD, PUT, OPTIONS");
        assert_eq!(ROUTES[1].allow(), "OPTIONS");
    }

    #[test]
    fn head_is_served_by_get() {
        assert!(ROUTES[0].method(&Method::HEAD).is_some());
        assert!(ROUTES[0].method(&Method::DELETE).is_none());
    }
}
