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
    "prefer", st.sampled_from(["return=minimal", "return=representation", "respond-async"])
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
