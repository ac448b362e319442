"""Generators schemathesis uses for the header syntaxes Canon's OpenAPI
document names with a `format` (crates/canon-server/src/openapi.rs).

Without them schemathesis cannot make valid values for a header whose
pattern needs characters other than letters and digits (an entity tag
needs `"`), and sends schema-violating values as if they were valid.
scripts/conformance loads this module through SCHEMATHESIS_HOOKS.
"""

from email.utils import format_datetime
from datetime import datetime, timezone

import schemathesis
from hypothesis import strategies as st

_ETAGC = st.sampled_from([chr(c) for c in range(0x21, 0x7F) if c != 0x22])
_TAG = st.builds(
    lambda weak, text: f'{"W/" if weak else ""}"{text}"',
    st.booleans(),
    st.text(_ETAGC, max_size=16),
)

schemathesis.openapi.format(
    "entity-tags",
    st.one_of(st.just("*"), st.lists(_TAG, min_size=1, max_size=4).map(", ".join)),
)
schemathesis.openapi.format(
    "http-date",
    st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: format_datetime(d.replace(tzinfo=timezone.utc), usegmt=True)
    ),
)
schemathesis.openapi.format(
    "prefer", st.sampled_from(["return=minimal", "return=representation", "respond-async", "wait=0"])
)


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """A cursor is valid only when Canon issued it for that very list (it is
    signed; docs/decisions.md, "Cursors"), which no generator can produce: a
    case meant to be valid goes without one. Invalid cases keep theirs, and
    must be refused (400)."""
    mode = getattr(getattr(getattr(case, "meta", None), "generation", None), "mode", None)
    if case.query and "cursor" in case.query and str(mode).lower().endswith("positive"):
        del case.query["cursor"]
    # Maintenance mode switched on would answer every later case 503 (as it
    # must): the fuzzer sets the switch, but always to off. The 503 itself
    # is tested in crates/canon-server/tests/maintenance.rs.
    if case.path == "/v1/admin/maintenance" and isinstance(case.body, dict) and case.body.get("enabled") is True:
        case.body["enabled"] = False


# hyper's own limit on a request target (u16::MAX - 1 bytes): a longer one is
# answered by hyper itself, before Canon sees the request, with a bare 414
# (no body, no Content-Type). docs/http.md lists the answers hyper gives
# itself; Canon's own limit (8 KiB, a 414 problem) is far below this one.
HYPER_MAX_TARGET = 65534


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    """Keeps every failure except the documented one above: a bare 414 from
    hyper for a request target longer than it reads, which only generated
    values can reach (each query parameter is bounded; all of them together
    can still exceed 64 KiB once percent-encoded)."""
    request = getattr(response, "request", None)
    target = getattr(request, "path_url", "") or ""
    bare = response.status_code == 414 and not response.content and "content-type" not in {
        k.lower() for k in response.headers
    }
    return not (bare and len(target) > HYPER_MAX_TARGET)


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    """An NDJSON body (`POST …/imports`): one JSON value per line (a list
    gives one line per item)."""
    import json

    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()
