"""Content negotiation for `/metrics`: which format, and whether to gzip, by the HTTP rules.

prometheus_client's own helpers (`exposition.choose_encoder` and `gzip_accepted`,
checked in 0.26) compare the bare names between commas and ignore q-values, so
`Accept-Encoding: gzip;q=0` still gets gzip and `application/openmetrics-text;q=0`
still gets OpenMetrics. These two functions read the weights as RFC 9110 says
(12.4.2 quality values, 12.5.1 Accept, 12.5.3 Accept-Encoding). Both are pure.
"""

from __future__ import annotations

import re
from typing import NamedTuple

OPENMETRICS = "application/openmetrics-text"
# The OpenMetrics versions our body satisfies: Prometheus asks for 1.0.0 and 0.0.1.
OPENMETRICS_VERSIONS = frozenset({"1.0.0", "0.0.1"})
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


class Preference(NamedTuple):
    name: str  # lower case: a media range or a content coding
    params: dict[str, str]
    q: float


def parse_preferences(header: str | None) -> list[Preference]:
    """`a;p=1;q=0.5, b` -> [(a, {p: 1}, 0.5), (b, {}, 1.0)]; malformed elements are dropped.

    Quoted parameter values holding commas are not supported: no media type we
    serve has one, and the worst a client gets by sending one is the default.
    """
    preferences = []
    for element in (header or "").split(","):
        name, *raw_params = element.split(";")
        name = name.strip().lower()
        if not name:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for raw in raw_params:
            key, _, text = raw.partition("=")
            key, text = key.strip().lower(), text.strip().strip('"')
            if key == "q":
                if not _QVALUE.fullmatch(text):
                    break
                q = float(text)
            elif key:
                params[key] = text
        else:
            preferences.append(Preference(name, params, q))
    return preferences


def wants_gzip(accept_encoding: str | None) -> bool:
    """True when gzip is acceptable (q > 0) and not less preferred than identity.

    `*` stands for every coding not named. Identity needs no mention to be
    acceptable, so when it is not named (nor `*`) it states no preference.
    """
    weights: dict[str, float] = {}
    for preference in parse_preferences(accept_encoding):
        name = "gzip" if preference.name == "x-gzip" else preference.name
        weights[name] = max(weights.get(name, 0.0), preference.q)
    gzip = weights.get("gzip", weights.get("*", 0.0))
    identity = weights.get("identity", weights.get("*"))
    return gzip > 0 and (identity is None or gzip >= identity)


def wants_openmetrics(accept: str | None) -> bool:
    """True when the client names OpenMetrics and weighs it no lower than the text format.

    The text format's weight is that of its most specific match (`text/plain`,
    else `text/*`, else `*/*`). OpenMetrics must be named: a wildcard alone gets
    the text format, as in prometheus_client. On a tie the named format wins.
    """
    openmetrics: float | None = None
    text: dict[str, float] = {}
    for preference in parse_preferences(accept):
        if preference.name == OPENMETRICS:
            version = preference.params.get("version")
            if version is None or version in OPENMETRICS_VERSIONS:
                openmetrics = max(openmetrics or 0.0, preference.q)
        elif preference.name in ("text/plain", "text/*", "*/*"):
            text[preference.name] = max(text.get(preference.name, 0.0), preference.q)
    if not openmetrics:
        return False
    text_q = text.get("text/plain", text.get("text/*", text.get("*/*", 0.0)))
    return openmetrics >= text_q
