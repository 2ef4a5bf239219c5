//! Which route and version a request goes to: the routing decision with no HTTP types in it,
//! so the HTTP plumbing around it can be replaced without touching routing behaviour.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use switchyard_core::table::{roll, AffinityKey, Route};

use crate::live::{Live, RouteExtras};

/// The request header that pins a version (or a tag) when the Function allows it.
pub const PIN_HEADER: &str = "x-switchyard-version";
/// The response header naming the version that served a request.
pub const SERVED_BY_HEADER: &str = "x-switchyard-served-by";

/// How a version was chosen; it decides what a connect failure may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// By weight, with this roll.
    Weighted(u32),
    /// By the affinity key's point.
    Affinity(u32),
    /// By an explicit pin: no other version may serve it.
    Pinned,
}

/// Where one request goes.
pub struct Target {
    /// The route.
    pub route: Arc<Route>,
    /// Its counter and metrics.
    pub extras: Arc<RouteExtras>,
    /// Index into `route.backends`.
    pub backend: usize,
    /// How it was chosen.
    pub choice: Choice,
}

impl Target {
    /// The value of `x-switchyard-served-by` for the chosen backend.
    pub fn served_by(&self) -> &str {
        &self.route.backends[self.backend].served_by
    }

    /// After `backend` could not be reached: another version with weight, chosen by the same
    /// roll (never a weight-0 version, never for a pinned request).
    pub fn failover(&self) -> Option<usize> {
        match self.choice {
            Choice::Weighted(r) | Choice::Affinity(r) => self.route.failover(self.backend, r),
            Choice::Pinned => None,
        }
    }
}

/// The decision on one request.
pub enum Decision {
    /// No route matches: 404.
    NoRoute,
    /// The pin names no version or tag of the function: 400.
    UnknownPin {
        /// `namespace/name`.
        function: String,
        /// What the request asked for.
        pin: String,
    },
    /// Forward to a version.
    Forward(Target),
}

/// What the decision reads from a request.
pub struct RequestView<'a, H: Fn(&str) -> Option<&'a [u8]>> {
    /// The Host header (or the URI authority), possibly with a port.
    pub host: &'a str,
    /// The request path, without the query.
    pub path: &'a str,
    /// Header lookup by lowercase name.
    pub header: H,
}

/// Routes one request on `live`. Weighted picks take the next roll of the function's counter.
pub fn decide<'a, H: Fn(&str) -> Option<&'a [u8]>>(
    live: &Live,
    req: &RequestView<'a, H>,
) -> Decision {
    let Some(route) = live.table.lookup(req.host, req.path) else {
        return Decision::NoRoute;
    };
    let Some(extras) = live.extras(route) else {
        return Decision::NoRoute;
    };
    let target = |backend, choice| {
        Decision::Forward(Target {
            route: Arc::clone(route),
            extras: Arc::clone(extras),
            backend,
            choice,
        })
    };
    if route.pinning {
        if let Some(pin) = (req.header)(PIN_HEADER) {
            let pin = String::from_utf8_lossy(pin);
            let pin = pin.trim();
            return match route.pin(pin) {
                Some(i) => target(i, Choice::Pinned),
                None => Decision::UnknownPin {
                    function: route.key(),
                    pin: pin.to_string(),
                },
            };
        }
    }
    let key = match &route.affinity {
        Some(AffinityKey::Header(name)) => (req.header)(name).filter(|v| !v.is_empty()),
        Some(AffinityKey::Cookie(name)) => {
            (req.header)("cookie").and_then(|c| cookie_value(c, name.as_bytes()))
        }
        None => None,
    };
    if let Some(key) = key {
        let point = switchyard_core::table::affinity_point(key);
        return target(route.pick(point), Choice::Affinity(point));
    }
    let r = roll(extras.counter.fetch_add(1, Ordering::Relaxed));
    target(route.pick(r), Choice::Weighted(r))
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name)
            .then(|| pair[eq + 1..].trim_ascii())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_are_found_by_exact_name() {
        let h = b"a=1; session=abc ; sess=zzz";
        assert_eq!(cookie_value(h, b"session"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(h, b"sess"), Some(&b"zzz"[..]));
        assert_eq!(cookie_value(h, b"missing"), None);
        assert_eq!(cookie_value(b"empty=", b"empty"), None);
    }

    use std::time::SystemTime;
    use switchyard_core::{Function, FunctionVersion};

    fn live(f: Function) -> Live {
        let versions = ["1.0.0", "2.0.0"].map(|v| {
            Arc::new(FunctionVersion::test_endpoint(
                "hello",
                v,
                "http://127.0.0.1:9",
            ))
        });
        let state = crate::source::State {
            functions: vec![Arc::new(f)],
            versions: versions.to_vec(),
        };
        let mut b = crate::build::Builder::new(Default::default(), "r".into());
        b.apply(&state, SystemTime::now(), &crate::metrics::Metrics::new())
            .live
            .expect("a table")
    }

    fn served(d: Decision) -> String {
        match d {
            Decision::Forward(t) => t.route.backends[t.backend].served_by.clone(),
            Decision::NoRoute => "404".into(),
            Decision::UnknownPin { .. } => "400".into(),
        }
    }

    fn request<'a>(
        path: &'a str,
        headers: &'a [(&'a str, &'a str)],
    ) -> RequestView<'a, impl Fn(&str) -> Option<&'a [u8]>> {
        RequestView {
            host: "localhost",
            path,
            header: move |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.as_bytes())
            },
        }
    }

    #[test]
    fn weighted_picks_follow_the_weights_exactly_over_a_window() {
        let live = live(
            Function::test("hello")
                .with_weight("1.0.0", 999_000)
                .with_weight("2.0.0", 1_000),
        );
        let canary = (0..10_000)
            .filter(|_| served(decide(&live, &request("/hello", &[]))) == "hello@2.0.0")
            .count();
        assert!((8..=12).contains(&canary), "{canary}");
    }

    #[test]
    fn pins_need_pinning_and_unknown_pins_are_refused() {
        let f = Function::test("hello")
            .with_weight("1.0.0", 1_000_000)
            .with_weight("2.0.0", 0)
            .with_tag("next", "2.0.0");
        let off = live(f.clone());
        let on = live(f.with_pinning());
        let pin = |v| [(PIN_HEADER, v)];
        assert_eq!(
            served(decide(&off, &request("/hello", &pin("2.0.0")))),
            "hello@1.0.0"
        );
        assert_eq!(
            served(decide(&on, &request("/hello", &pin("2.0.0")))),
            "hello@2.0.0"
        );
        assert_eq!(
            served(decide(&on, &request("/hello", &pin("next")))),
            "hello@2.0.0"
        );
        assert_eq!(
            served(decide(&on, &request("/hello", &pin("7.0.0")))),
            "400"
        );
        assert_eq!(served(decide(&on, &request("/nope", &[]))), "404");
    }

    #[test]
    fn failover_never_picks_weight_zero_nor_overrides_a_pin() {
        let f = Function::test("hello")
            .with_weight("1.0.0", 1_000_000)
            .with_weight("2.0.0", 0)
            .with_pinning();
        let live = live(f);
        for _ in 0..100 {
            let Decision::Forward(t) = decide(&live, &request("/hello", &[])) else {
                panic!("routed")
            };
            assert_eq!(t.failover(), None);
        }
        let Decision::Forward(t) = decide(&live, &request("/hello", &[(PIN_HEADER, "2.0.0")]))
        else {
            panic!("routed")
        };
        assert_eq!(t.failover(), None);
    }
}
