"""Listener rule evaluation (pure: no I/O).

Semantics (ALB listener docs):
- path-pattern: case-sensitive, `*` = 0+ characters, `?` = exactly one; matched against the path
  only (never the query string).
- host-header: case-insensitive with wildcards; matched against the Host header without its
  port (decision: a `:port` suffix, or `[v6]:port`, is removed before matching).
- http-header: header name and values case-insensitive, wildcards in values; any header line of
  that name may match.
- http-request-method: case-sensitive, exact.
- query-string: `key=value` or value-only pairs, case-insensitive, wildcards; `\\*` and `\\?` in a key
  or value are a literal `*` and `?` (the only condition with escapes); matched against the raw (still
  URL-encoded) query components, as AWS asks condition values to be URL-encoded.
- source-ip: CIDRs against the TCP peer address, never X-Forwarded-For.
Values of one condition are OR'ed, conditions are AND'ed, rules are tried by ascending priority,
first match wins; the default actions (logged as priority 0) apply when nothing matches.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable, ClassVar, Final, Iterable, Iterator, NamedTuple, Sequence

from .model import Action, Condition, Listener, QueryPair

Predicate = Callable[["RequestView"], bool]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RequestView:
    """What the rule engine may look at: a request as the ALB received it. Made per request (when
    the rules need more than method, path and host): a plain class, as a NamedTuple's constructor
    runs interpreted even compiled (decisions #69)."""
    __slots__ = ("method", "path", "query", "host", "headers", "source_ip")

    def __init__(self, method: str, path: str, query: str, host: str, headers: Iterable[tuple[str, str]],
                 source_ip: str) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.host = host
        self.headers = headers
        self.source_ip = source_ip


class LatinHeaders:
    """Received header lines, decoded only if an http-header condition asks for them."""

    __slots__ = ("raw",)

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw)


class Match(NamedTuple):
    priority: int  # 0 = default rule, as the access log shows it
    actions: tuple[Action, ...]


def wildcard_tokens(pattern: str, *, escapes: bool) -> list[tuple[str, bool]]:
    """The pattern's characters, each with whether it is a wildcard: `*` and `?` are, the rest are not.
    With `escapes` (query-string conditions only, as AWS documents), `\\*` and `\\?` are the literal
    character without its backslash; a backslash before anything else is an ordinary character."""
    tokens = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if escapes and ch == "\\" and i + 1 < n and pattern[i + 1] in "*?":
            tokens.append((pattern[i + 1], False))
            i += 2
            continue
        tokens.append((ch, ch == "*" or ch == "?"))
        i += 1
    return tokens


def wildcard_count(pattern: str, *, escapes: bool) -> int:
    """How many wildcards the pattern has, as the rule limit counts them (escaped characters are not)."""
    return sum(1 for _, wild in wildcard_tokens(pattern, escapes=escapes) if wild)


def wildcard_regex(pattern: str, *, ignore_case: bool, escapes: bool = False) -> re.Pattern[str]:
    """`*` -> any run of characters, `?` -> exactly one, everything else literal (see wildcard_tokens)."""
    parts = []
    for ch, wild in wildcard_tokens(pattern, escapes=escapes):
        parts.append((".*" if ch == "*" else ".") if wild else re.escape(ch))
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("".join(parts), flags)


def host_without_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def parse_query(query: str) -> list[tuple[str, str]]:
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((key, value))
    return pairs


def _ip(text: str) -> IPAddress | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def compile_condition(cond: Condition) -> Predicate:
    """Turn one condition into a predicate; patterns are compiled here, once."""
    fld = cond.field
    if fld == "path-pattern":
        regs = [wildcard_regex(str(v), ignore_case=False) for v in cond.values]
        return lambda r: any(rx.fullmatch(r.path) for rx in regs)
    if fld == "host-header":
        regs = [wildcard_regex(str(v), ignore_case=True) for v in cond.values]
        return lambda r: any(rx.fullmatch(host_without_port(r.host)) for rx in regs)
    if fld == "http-header":
        name = (cond.header_name or "").lower()
        regs = [wildcard_regex(str(v), ignore_case=True) for v in cond.values]
        return lambda r: any(rx.fullmatch(v) for n, v in r.headers if n.lower() == name for rx in regs)
    if fld == "http-request-method":
        methods = frozenset(str(v) for v in cond.values)
        return lambda r: r.method in methods
    if fld == "query-string":
        compiled = []
        for v in cond.values:
            assert isinstance(v, QueryPair)
            krx = wildcard_regex(v.key, ignore_case=True, escapes=True) if v.key is not None else None
            compiled.append((krx, wildcard_regex(v.value, ignore_case=True, escapes=True)))

        def match_query(r: RequestView) -> bool:
            pairs = parse_query(r.query)
            return any((krx is None or krx.fullmatch(k)) and vrx.fullmatch(val)
                       for krx, vrx in compiled for k, val in pairs)
        return match_query
    if fld == "source-ip":
        nets: list[IPNetwork] = [ipaddress.ip_network(str(v), strict=False) for v in cond.values]

        def match_source(r: RequestView) -> bool:
            addr = _ip(r.source_ip)
            return addr is not None and any(addr.version == n.version and addr in n for n in nets)
        return match_source
    raise ValueError(f"unknown condition field {fld!r}")


@dataclass(frozen=True)
class CompiledRule:
    priority: int
    predicates: tuple[Predicate, ...]
    actions: tuple[Action, ...]

    def matches(self, req: RequestView) -> bool:
        return all(p(req) for p in self.predicates)


# Conditions that look only at the method, the path and the Host header: a table made of these
# alone gives the same match for the same (method, path, Host), so it may remember it.
_KEYED_FIELDS: Final = frozenset({"path-pattern", "host-header", "http-request-method"})


class RuleTable:
    """A listener's rules, compiled once; `match` is called per request.

    When no rule looks at headers, the query string or the source address, the outcome for a
    (method, path, Host) is remembered (`lookup`): a bounded cache, emptied when full, of short keys
    only. A rule change builds a new table."""

    CACHE_ENTRIES: ClassVar[int] = 4096
    CACHE_KEY_CHARS: ClassVar[int] = 512

    def __init__(self, listener: Listener) -> None:
        self.rules = tuple(
            CompiledRule(r.priority, tuple(compile_condition(c) for c in r.conditions), r.actions)
            for r in sorted(listener.rules, key=lambda r: r.priority)
        )
        self.default = Match(0, listener.default_actions)
        self._tried = tuple((rule, Match(rule.priority, rule.actions)) for rule in self.rules)
        keyed = all(c.field in _KEYED_FIELDS for r in listener.rules for c in r.conditions)
        self._cache: dict[tuple[str, str, str], Match] | None = {} if keyed else None

    def lookup(self, method: str, path: str, host: str) -> Match | None:
        """The match remembered for this method, path and Host, if any."""
        cache = self._cache
        return None if cache is None else cache.get((method, path, host))

    def match(self, req: RequestView) -> Match:
        result = self.default
        for rule, outcome in self._tried:
            if rule.matches(req):
                result = outcome
                break
        cache = self._cache
        if cache is not None and len(req.path) + len(req.host) <= self.CACHE_KEY_CHARS:
            if len(cache) >= self.CACHE_ENTRIES:
                cache.clear()
            cache[(req.method, req.path, req.host)] = result
        return result
