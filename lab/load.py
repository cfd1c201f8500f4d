"""Topology YAML -> lab.model.Topology. All validation lives here, with the ELBv2 vocabulary
(services.elbv2) and the ALB's own rule checks (services.alb_sim.config) called with YAML key paths.

Every error names the key path, the offending value, the file and what is allowed:
    nlb.listeners[1].port: 70000 is not a valid port (1-65535) in topologies/default.yaml
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import yaml

from lab import model as m
from lab.errors import LabError, TopologyError
from services.alb_sim import config as alb_config
from services.elbv2 import attributes, health_checks
from services.elbv2.errors import ApiError
from services.elbv2.security_policies import DEFAULT_SSL_POLICY, check_ssl_policy

TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "topologies"


def resolve_topology_path(name_or_file: str) -> Path:
    """`default` -> topologies/default.yaml; a path to a file is taken as it is."""
    candidate = Path(name_or_file)
    if candidate.suffix in (".yaml", ".yml") or candidate.parent != Path("."):
        if candidate.is_file():
            return candidate
        if candidate.exists():
            raise TopologyError(f"topology file {name_or_file} is not a regular file")
        raise TopologyError(f"topology file {name_or_file} does not exist")
    named = TOPOLOGY_DIR / f"{name_or_file}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in TOPOLOGY_DIR.glob("*.yaml")))
    raise TopologyError(f"unknown topology {name_or_file!r} (known: {known}; or give a path to a .yaml file)")


def _display(path: Path) -> str:
    """How a topology file is named in messages and rendered headers: relative to the repository
    when it is inside it (stable wherever `lab` runs from), else as given."""
    try:
        return str(path.resolve().relative_to(TOPOLOGY_DIR.parent))
    except ValueError:
        return str(path)


def read_yaml_file(path: Path, what: str, shown: str | None = None, error: type[LabError] = TopologyError) -> Any:
    """The parsed file; a syntax error or an unreadable file is one line, not PyYAML's multi-line
    report: '<file>: not valid YAML at line L, column C: <problem>', 'cannot read <what> <file>: ...'."""
    shown = shown or str(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise error(f"{shown}: not valid YAML at line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x})") from None
    except RecursionError:  # PyYAML recurses once per level of nesting
        raise error(f"{shown}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{shown}: not valid YAML{where}: {problem}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {shown}: {exc.strerror}") from None


def _read_yaml(path: Path, shown: str) -> dict:
    data = read_yaml_file(path, "topology file", shown)
    if not isinstance(data, dict):
        raise TopologyError(f"{shown}: the top level must be a mapping, not {type(data).__name__}")
    return data


def _merge(base: Any, override: Any) -> Any:
    """Deep-merge mappings (override wins); lists and scalars are replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return override


def read_topology_data(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The raw mapping, with `extends:` resolved (relative to the extending file)."""
    shown = _display(path)
    if path.resolve() in _seen:
        raise TopologyError(f"{shown}: `extends` forms a cycle")
    data = _read_yaml(path, shown)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise TopologyError(f"extends: {parent!r} is not a file name in {shown}")
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise TopologyError(f"extends: {parent} does not exist (looked for {_display(parent_path)}) in {shown}")
    return _merge(read_topology_data(parent_path, (*_seen, path.resolve())), data)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]+")
CERTIFICATE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN_NAME = re.compile(rf"(?:\*\.)?(?:{_LABEL}\.)+[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?")
TARGET_GROUP_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?")
HOST_NAME = re.compile(rf"(?:{_LABEL}\.)*[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?")  # a DNS name, no wildcard
TOPOLOGY_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")
SERVICE_LABEL = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")


def _target_group_name(parent: _Node, name: str) -> str:
    if not TARGET_GROUP_NAME.fullmatch(str(name)):
        raise parent.child(str(name), None).fail(
            "is not a valid target group name (1-32 letters, digits and hyphens, not starting or ending with a hyphen)")
    return str(name)


def _load_balancer_name(node: "_Node") -> str:
    """CreateLoadBalancer's rule for Name (decisions.md #65)."""
    name = node.string()
    if not TARGET_GROUP_NAME.fullmatch(name) or name.startswith("internal-"):
        raise node.fail(f"{name!r} is not a valid load balancer name (at most 32 characters, only letters, digits"
                        " and hyphens, not beginning or ending with a hyphen, not beginning with 'internal-')")
    return name


def _host_name(node: "_Node", what: str) -> str:
    """A DNS name the lab's DNS serves and HAProxy resolves: lower-case labels, no wildcard."""
    name = node.string()
    if len(name) > 253 or not HOST_NAME.fullmatch(name):
        raise node.fail(f"{name!r} is not a {what} (lower-case letters, digits and hyphens in dot-separated labels)")
    return name


def _matching(node: "_Node", pattern: re.Pattern[str], what: str) -> str:
    value = node.string()
    if not pattern.fullmatch(value):
        raise node.fail(f"{value!r} is not {what}")
    return value


class _Node:
    """A value in the YAML with its key path, for precise error messages."""

    def __init__(self, value: Any, path: str, source: str) -> None:
        self.value, self.path, self.source = value, path, source

    def fail(self, message: str) -> TopologyError:
        return TopologyError(f"{self.path}: {message} in {self.source}")

    def child(self, key: str | int, value: Any) -> "_Node":
        if not isinstance(key, int) and not _PLAIN_KEY.fullmatch(str(key)):
            key = repr(key)  # a key with spaces or control characters: shown quoted, one line
        path = f"{self.path}[{key}]" if isinstance(key, int) else (f"{self.path}.{key}" if self.path else str(key))
        return _Node(value, path, self.source)

    # -- containers ---------------------------------------------------------------------------
    def mapping(self, allowed: tuple[str, ...] | None = None, required: tuple[str, ...] = ()) -> "_Map":
        if not isinstance(self.value, dict):
            raise self.fail(f"expected a mapping, got {_shown(self.value)}")
        if allowed is not None:
            for key in self.value:
                if key not in allowed:
                    raise self.child(str(key), None).fail(f"unknown key (allowed here: {', '.join(allowed)})")
        for key in required:
            if key not in self.value:
                raise self.fail(f"missing required key {key!r}")
        return _Map(self)

    def items(self) -> Iterator["_Node"]:
        if not isinstance(self.value, list):
            raise self.fail(f"expected a list, got {_shown(self.value)}")
        for index, item in enumerate(self.value):
            yield self.child(index, item)

    # -- scalars ------------------------------------------------------------------------------
    def string(self, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(self.value, str) or not self.value:
            raise self.fail(f"{_shown(self.value)} is not a non-empty string")
        if choices is not None and self.value not in choices:
            raise self.fail(f"{self.value!r} is not one of {', '.join(choices)}")
        return self.value

    def integer(self, low: int, high: int, what: str = "") -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.fail(f"{_shown(self.value)} is not an integer")
        if not low <= self.value <= high:
            raise self.fail(f"{self.value} is not a valid {what or 'value'} ({low}-{high})")
        return self.value

    def port(self) -> int:
        return self.integer(1, 65535, "port")

    def ipv4(self) -> IPv4Address:
        try:
            address = ip_address(str(self.value))
        except ValueError:
            raise self.fail(f"{_shown(self.value)} is not an IPv4 address") from None
        if not isinstance(address, IPv4Address):
            raise self.fail(f"{self.value} is IPv6; the lab uses IPv4 addresses")
        return address

    def network(self) -> IPv4Network:
        try:
            return IPv4Network(str(self.value), strict=True)
        except ValueError as exc:
            raise self.fail(f"{_shown(self.value)} is not a valid IPv4 CIDR ({exc})") from None


class _Map:
    def __init__(self, node: _Node) -> None:
        self.node = node

    def __contains__(self, key: str) -> bool:
        return key in self.node.value

    def __getitem__(self, key: str) -> _Node:
        if key not in self.node.value:
            raise self.node.fail(f"missing required key {key!r}")
        return self.node.child(key, self.node.value[key])

    def get(self, key: str, default: Any) -> _Node:
        return self.node.child(key, self.node.value.get(key, default))

    def keys(self) -> list:
        return list(self.node.value)


def _no_certificates(listener: _Map, secure: str) -> None:
    """Certificates belong to TLS (NLB) / HTTPS (ALB) listeners only."""
    for key in ("certificate", "certificates", "ssl_policy"):
        if key in listener:
            raise listener[key].fail(f"ValidationError: only {secure} listeners take a certificate, a certificate"
                                     " list and an ssl_policy")


def _shown(value: Any) -> str:
    return "nothing" if value is None else repr(value)


def _attributes(node: _Node, table: attributes.Table, target_type: str | None = None,
                check: Callable[[list[tuple[str, str]]], dict[str, str]] | None = None) -> Mapping[str, str]:
    """An `attributes:` mapping, checked with the ELBv2 table as a Modify*Attributes call is (the same
    words): every key of the table, AWS's defaults filled in. A problem with one key (its value, or a
    rule across attributes about it) is reported at that key; the rest (``check``'s, which gets the
    pairs) at `attributes`."""
    pairs = [(str(key), attributes.attribute_value(value)) for key, value in node.mapping().node.value.items()]
    try:
        values = check(pairs) if check is not None else table.check(pairs, {}, target_type)
    except attributes.AttributeProblem as exc:
        raise node.child(exc.key, None).fail(str(exc)) from None
    except ApiError as exc:
        raise node.fail(str(exc)) from None
    return MappingProxyType(values)


def _health_check(node: _Node, rules: health_checks.HealthCheckRules, protocol: str | None = None,
                  target_type: str | None = None) -> m.HealthCheck:
    """A `health_check:` mapping, checked as CreateTargetGroup checks it; ``protocol``: the lab's default
    protocol where AWS's would not reach the targets (HTTPS targets, `alb` targets)."""
    given = node.mapping(allowed=health_checks.SETTINGS).node.value
    protocol = given.get("protocol", protocol or rules.default_protocol)
    defaults = rules.defaults(protocol if protocol in rules.protocols else None)
    try:
        hc = health_checks.check(rules, given, {**defaults, "protocol": protocol}, target_type=target_type)
    except health_checks.HealthCheckProblem as exc:
        message = str(exc)
        if exc.message == health_checks.INTERVAL_ABOVE_TIMEOUT and "timeout_seconds" not in given:
            message += (f" (the default timeout of {protocol} health checks is {defaults['timeout_seconds']} s:"
                        " set timeout_seconds below interval_seconds)")
        raise node.child(exc.setting, None).fail(message) from None
    return m.HealthCheck(protocol=hc["protocol"], port=hc["port"], path=hc["path"],
                         interval_seconds=hc["interval_seconds"], timeout_seconds=hc["timeout_seconds"],
                         healthy_threshold=hc["healthy_threshold"], unhealthy_threshold=hc["unhealthy_threshold"],
                         matcher=hc["matcher"])


# Valid NLB listener -> target group protocol combinations (NLB-TG23, NLB-ALBT23).
NLB_COMBINATIONS = {("TCP", "instance"): ("TCP",), ("TCP", "ip"): ("TCP",), ("TCP", "alb"): ("TCP",),
                    ("TLS", "instance"): ("TCP", "TLS"), ("TLS", "ip"): ("TCP", "TLS")}


class _Loader:
    def __init__(self, data: dict, source: str) -> None:
        self.root = _Node(data, "", source)
        self.source = source
        self.names: set[str] = set()

    def load(self) -> m.Topology:
        top = self.root.mapping(
            allowed=("name", "account_id", "region", "site", "networks", "dns", "client", "certificates", "nlb",
                     "haproxy", "alb", "web"),
            required=("name", "networks", "dns", "client", "nlb", "haproxy", "alb", "web"),
        )
        self.account = str(top.get("account_id", "123456789012").value)
        if not (self.account.isdigit() and len(self.account) == 12):
            raise top["account_id"].fail(f"{self.account!r} is not a 12-digit AWS account id")
        self.region = _matching(top.get("region", "eu-west-2"), REGION, "an AWS Region name (like eu-west-2)")
        name = _matching(top["name"], TOPOLOGY_NAME, "a topology name (lower-case letters, digits and hyphens, at"
                         " most 64; it names .lab/compose.<name>.yaml)")
        site = _host_name(top.get("site", "www.lab.test"), "DNS name")

        nets = top["networks"].mapping(allowed=("internet", "vpc"), required=("internet", "vpc"))
        internet = nets["internet"].mapping(allowed=("subnet",), required=("subnet",))["subnet"].network()
        vpc_spec = nets["vpc"].mapping(allowed=("cidr", "subnets"), required=("cidr", "subnets"))
        vpc = vpc_spec["cidr"].network()
        if vpc.overlaps(internet):
            raise vpc_spec["cidr"].fail(f"{vpc} overlaps the internet subnet {internet}")
        subnets: dict[str, IPv4Network] = {}
        subnets_node = vpc_spec["subnets"]
        for key in subnets_node.mapping().keys():
            az = str(key)
            if not re.fullmatch(r"[a-z]", az):
                raise subnets_node.child(az, None).fail("is not an availability zone letter (a-z)")
            subnet = subnets_node.child(az, subnets_node.value[key]).network()
            if not subnet.subnet_of(vpc):
                raise subnets_node.child(az, None).fail(f"{subnet} is not inside the VPC CIDR {vpc}")
            subnets[az] = subnet
        if not subnets:
            raise subnets_node.fail("at least one availability zone subnet is needed")
        self.internet, self.vpc, self.subnets = internet, vpc, subnets
        self.used: dict[IPv4Address, str] = {}

        dns_spec = top["dns"].mapping(allowed=("vpc_address", "internet_address", "public_zone", "private_zone", "ttl"),
                                      required=("vpc_address", "internet_address"))
        dns = m.Dns(
            vpc_address=self._address(dns_spec["vpc_address"], vpc, "dns"),
            internet_address=self._address(dns_spec["internet_address"], internet, "dns"),
            public_zone=_host_name(dns_spec.get("public_zone", "lab.test"), "DNS zone name"),
            private_zone=_host_name(dns_spec.get("private_zone", "lab.internal"), "DNS zone name"),
            ttl=dns_spec.get("ttl", 60).integer(1, 86400, "TTL"),
        )
        self.private_zone = dns.private_zone
        if not (site == dns.public_zone or site.endswith("." + dns.public_zone)):
            raise top["site"].fail(f"{site!r} is not inside the public zone {dns.public_zone!r}")
        self.site = site
        client = self._client(top["client"])
        self.certificates = {"www": m.Certificate(
            name="www", arn=f"arn:aws:acm:{self.region}:{self.account}:certificate/{m.aws_id('acm', site)}",
            pem_file="www.pem", domain_names=(site, f"*.{dns.public_zone}", dns.public_zone))}
        self._certificates(top.get("certificates", {}))

        haproxy_node = top["haproxy"]
        haproxy_spec = haproxy_node.mapping(allowed=("instances", "alb_servers", "verify", "accept_proxy", "resolve"),
                                            required=("instances",))
        instances = tuple(self._haproxy_instance(n) for n in haproxy_spec["instances"].items())
        if not instances:
            raise haproxy_spec["instances"].fail("at least one HAProxy instance is needed")
        self.instances = {h.name: h for h in instances}
        web = tuple(self._web(n) for n in top["web"].items())
        self.web = {w.name: w for w in web}
        nlb = self._nlb(top["nlb"], dns)
        alb = self._alb(top["alb"])

        feeding = [tg for tg in nlb.target_groups if any(t.id in self.instances for t in tg.targets)]
        accept = haproxy_spec.get("accept_proxy", "auto")
        if accept.value == "auto":
            accept_proxy = any(tg.proxy_protocol_v2 for tg in feeding)
        elif isinstance(accept.value, bool):
            accept_proxy = accept.value
        else:
            raise accept.fail(f"{accept.value!r} is not one of auto, true, false")
        haproxy = m.Haproxy(
            instances=instances,
            alb_servers=haproxy_spec.get("alb_servers", 4).integer(1, 64, "number of servers"),
            verify=haproxy_spec.get("verify", "required").string(("required", "none")),
            accept_proxy=accept_proxy,
            route_internet_via_nlb=any(tg.preserve_client_ip for tg in feeding),
            resolve=haproxy_spec.get("resolve", "runtime").string(("runtime", "startup")),
        )
        return m.Topology(
            name=name, source=self.source, account_id=self.account, region=self.region, site=site,
            internet=internet, vpc=vpc, subnets=MappingProxyType(subnets), dns=dns, client=client,
            nlb=nlb, haproxy=haproxy, alb=alb, web=web, certificates=tuple(self.certificates.values()),
        )

    # -- pieces -------------------------------------------------------------------------------
    def _address(self, node: _Node, net: IPv4Network, owner: str) -> IPv4Address:
        address = node.ipv4()
        if address not in net:
            raise node.fail(f"{address} is not inside {net}")
        if address in (net.network_address, net.broadcast_address, net.network_address + 1):
            raise node.fail(f"{address} is reserved in {net} (network, broadcast or the bridge gateway)")
        if address in self.used:
            raise node.fail(f"{address} is already used by {self.used[address]}")
        self.used[address] = owner
        return address

    def _az(self, node: _Node) -> str:
        az = node.string()
        if az not in self.subnets:
            raise node.fail(f"{az!r} is not an availability zone of this VPC ({', '.join(self.subnets)})")
        return az

    def _vpc_address(self, node: _Node, az: str, owner: str) -> IPv4Address:
        address = self._address(node, self.vpc, owner)
        if address not in self.subnets[az]:
            raise node.fail(f"{address} is not in the subnet of AZ {az} ({self.subnets[az]})")
        return address

    def _client(self, node: _Node) -> m.Client:
        spec = node.mapping(allowed=("address", "source_range"), required=("address",))
        address = self._address(spec["address"], self.internet, "client")
        range_node = spec.get("source_range", f"{address}-{address}")
        first_text, sep, last_text = str(range_node.value).partition("-")
        try:
            first, last = IPv4Address(first_text.strip()), IPv4Address(last_text.strip())
        except ValueError:
            raise range_node.fail(f"{range_node.value!r} is not a range like 198.51.100.100-198.51.100.199") from None
        if not sep or first > last or first not in self.internet or last not in self.internet:
            raise range_node.fail(f"{range_node.value!r} must be FIRST-LAST inside {self.internet}")
        if not first <= address <= last:
            raise range_node.fail(f"{range_node.value!r} must include the client address {address}")
        for ip, owner in self.used.items():
            if first <= ip <= last and owner != "client":
                raise range_node.fail(f"{range_node.value!r} includes {ip}, used by {owner}")
        for offset in range(int(last) - int(first) + 1):
            self.used.setdefault(first + offset, "client")
        return m.Client(address=address, source_first=first, source_last=last)

    def _haproxy_instance(self, node: _Node) -> m.HaproxyInstance:
        spec = node.mapping(allowed=("name", "az", "address"), required=("name", "az", "address"))
        name = self._service_name(spec["name"])
        az = self._az(spec["az"])
        return m.HaproxyInstance(name=name, az=az, address=self._vpc_address(spec["address"], az, name))

    def _web(self, node: _Node) -> m.WebService:
        spec = node.mapping(allowed=("name", "service", "az", "address"), required=("name", "service", "az", "address"))
        name = self._service_name(spec["name"])
        az = self._az(spec["az"])
        service = _matching(spec["service"], SERVICE_LABEL, "a service label (1-32 lower-case letters, digits and"
                            " hyphens, starting with a letter)")
        return m.WebService(name=name, service=service, az=az,
                            address=self._vpc_address(spec["address"], az, name))

    def _service_name(self, node: _Node) -> str:
        name = node.string()
        if not (name.replace("-", "").isalnum() and name[0].isalpha() and name.islower() and len(name) <= 32):
            raise node.fail(f"{name!r} is not a service name (lower-case letters, digits and '-', <= 32)")
        if name in (m.NLB_SERVICE, m.ALB_SERVICE, m.DNS_SERVICE, m.CLIENT_SERVICE) or name in self.names:
            raise node.fail(f"{name!r} is already used by another service")
        self.names.add(name)
        return name

    def _certificates(self, node: _Node) -> None:
        """`certificates:` name -> {domain_name, subject_alternative_names, key_algorithm}: lab "ACM"
        certificates besides `www` (always issued for the site), issued by lab.certs at `lab up`."""
        for key in node.mapping().keys():
            name = str(key)
            item = node.child(name, node.value[key])
            if name == "www":
                raise item.fail("'www' is the site's certificate, always issued (site, *.zone, zone); pick another name")
            if not CERTIFICATE_NAME.fullmatch(name):
                raise item.fail("is not a certificate name (1-32 lower-case letters, digits and hyphens)")
            spec = item.mapping(allowed=("domain_name", "subject_alternative_names", "key_algorithm"),
                                required=("domain_name",))
            names = [self._domain_name(spec["domain_name"])]
            for san in spec.get("subject_alternative_names", []).items():
                domain = self._domain_name(san)
                if domain in names:
                    raise san.fail(f"{domain!r} is already a name of this certificate")
                names.append(domain)
            algorithm = spec.get("key_algorithm", "EC_prime256v1").string(m.CERTIFICATE_KEY_ALGORITHMS)
            self.certificates[name] = m.Certificate(
                name=name, arn=f"arn:aws:acm:{self.region}:{self.account}:certificate/{m.aws_id('acm', name)}",
                pem_file=f"acm-{name}.pem", domain_names=tuple(names), key_algorithm=algorithm)

    @staticmethod
    def _domain_name(node: _Node) -> str:
        domain = node.string().lower()
        if len(domain) > 253 or not DOMAIN_NAME.fullmatch(domain):
            raise node.fail(f"{node.value!r} is not a fully qualified domain name (a wildcard only as the"
                            " whole first label: *.example.com)")
        return domain

    def _certificate(self, node: _Node) -> m.Certificate:
        name = node.string()
        if name not in self.certificates:
            raise node.fail(f"CertificateNotFound: certificate {name!r} not found (the topology's certificates:"
                            f" {', '.join(self.certificates)})")
        return self.certificates[name]

    def _certificate_list(self, listener: _Map, default: m.Certificate) -> tuple[m.Certificate, ...]:
        """A TLS/HTTPS listener's certificate list (SNI), besides its default certificate."""
        listed: list[m.Certificate] = []
        for item in listener.get("certificates", []).items():
            cert = self._certificate(item)
            if cert == default:
                raise item.fail(f"{cert.name!r} is the listener's default certificate; the list holds the others")
            if cert in listed:
                raise item.fail(f"certificate {cert.name!r} is already in the list")
            listed.append(cert)
        return tuple(listed)

    def _ssl_policy(self, node: _Node) -> str:
        try:
            return check_ssl_policy(node.string())
        except ApiError as exc:
            raise node.fail(str(exc)) from None

    def _targets(self, node: _Node, port: int, known: Mapping[str, Any]) -> tuple[m.Target, ...]:
        targets = []
        for item in node.items():
            name = item.string()
            if name not in known:
                raise item.fail(f"unknown target {name!r} (known here: {', '.join(known)})")
            target = known[name]
            targets.append(m.Target(id=name, ip=target.address, port=port, az=target.az))
        return tuple(targets)

    def _nlb(self, node: _Node, dns: m.Dns) -> m.Nlb:
        spec = node.mapping(allowed=("name", "attributes", "subnet_mappings", "listeners", "target_groups",
                                     "relaxed_limits", "vpc_endpoint_id"),
                            required=("name", "subnet_mappings", "listeners", "target_groups"))
        name = _load_balancer_name(spec["name"])
        relaxed = spec.get("relaxed_limits", False).value
        if not isinstance(relaxed, bool):
            raise spec["relaxed_limits"].fail(f"{relaxed!r} must be true or false (lab-only: shorter idle timeouts)")
        vpce = spec.get("vpc_endpoint_id", None).value
        if vpce is not None and not (isinstance(vpce, str) and re.fullmatch(r"vpce-[0-9a-f]{8,17}", vpce)):
            raise spec["vpc_endpoint_id"].fail(f"{vpce!r} is not a VPC endpoint id (vpce- and 8-17 hex digits)")
        nlb_id = m.aws_id("nlb", name)
        nodes: list[m.NlbNode] = []
        for item in spec["subnet_mappings"].items():
            mapping = item.mapping(allowed=("az", "elastic_ip", "private_ipv4_address"),
                                   required=("az", "elastic_ip", "private_ipv4_address"))
            az = self._az(mapping["az"])
            if any(n.az == az for n in nodes):
                raise mapping["az"].fail(f"AZ {az} already has a subnet mapping (one node per AZ)")
            nodes.append(m.NlbNode(
                name=f"nlb-{az}", az=az,
                elastic_ip=self._address(mapping["elastic_ip"], self.internet, f"nlb-{az}"),
                private_ip=self._vpc_address(mapping["private_ipv4_address"], az, f"nlb-{az}")))
        if not nodes:
            raise spec["subnet_mappings"].fail("a load balancer needs at least one subnet mapping (one node per AZ)")
        lb_attributes = _attributes(spec.get("attributes", {}), attributes.NLB_LOAD_BALANCER)
        groups = {}
        tgs_node = spec["target_groups"]
        for key in tgs_node.mapping().keys():
            tg_name = _target_group_name(tgs_node, key)
            groups[tg_name] = self._nlb_target_group(tgs_node.child(tg_name, tgs_node.value[key]), tg_name)
        listeners: list[m.NlbListener] = []
        for item in spec["listeners"].items():
            ls = item.mapping(allowed=("protocol", "port", "target_group", "certificate", "certificates", "ssl_policy",
                                       "alpn_policy", "attributes"),
                              required=("protocol", "port", "target_group"))
            protocol = ls["protocol"].string(("TCP", "TLS"))
            port = ls["port"].port()
            if any(existing.port == port for existing in listeners):
                raise ls["port"].fail(f"a listener on port {port} already exists")
            tg_name = ls["target_group"].string()
            if tg_name not in groups:
                raise ls["target_group"].fail(f"unknown target group {tg_name!r} (defined: {', '.join(groups)})")
            tg = groups[tg_name]
            if (protocol, tg.target_type) not in NLB_COMBINATIONS:
                raise ls["target_group"].fail(
                    f"a {protocol} listener cannot forward to target groups of target type {tg.target_type} "
                    "(use a TCP listener)")
            if tg.protocol not in NLB_COMBINATIONS[(protocol, tg.target_type)]:
                raise ls["target_group"].fail(
                    f"a {protocol} listener cannot forward to a {tg.protocol} target group of target type "
                    f"{tg.target_type} (allowed: {', '.join(NLB_COMBINATIONS[(protocol, tg.target_type)])})")
            certificate = ssl_policy = None
            listed: tuple[m.Certificate, ...] = ()
            if protocol == "TLS":
                certificate = self._certificate(ls["certificate"])
                listed = self._certificate_list(ls, certificate)
                ssl_policy = self._ssl_policy(ls.get("ssl_policy", DEFAULT_SSL_POLICY))
            else:
                _no_certificates(ls, "TLS")
            alpn = ls.get("alpn_policy", "None").string(("HTTP1Only", "HTTP2Only", "HTTP2Optional", "HTTP2Preferred", "None"))
            ls_table = attributes.NLB_TCP_LISTENER_RELAXED if relaxed else attributes.NLB_TCP_LISTENER
            ls_attributes = _attributes(ls.get("attributes", {}), ls_table, check=lambda pairs: (
                attributes.nlb_listener_attributes(protocol, pairs, {}, relaxed)))
            if tg.protocol == "TLS" and protocol == "TLS" and tg.attributes["stickiness.enabled"] == "true":
                raise ls["target_group"].fail(str(attributes.no_tls_stickiness()))
            listeners.append(m.NlbListener(protocol=protocol, port=port, target_group=tg_name,
                                           certificate=certificate, ssl_policy=ssl_policy, alpn_policy=alpn,
                                           attributes=ls_attributes, certificates=listed))
        if not listeners:
            raise spec["listeners"].fail("at least one listener is needed")
        return m.Nlb(
            name=name,
            arn=f"arn:aws:elasticloadbalancing:{self.region}:{self.account}:loadbalancer/net/{name}/{nlb_id}",
            dns_name=f"{name}-{nlb_id}.elb.{self.region}.amazonaws.com",
            nodes=tuple(nodes), listeners=tuple(listeners), target_groups=tuple(groups.values()),
            attributes=lb_attributes, relaxed_limits=relaxed, vpc_endpoint_id=vpce)

    def _nlb_target_group(self, node: _Node, name: str) -> m.NlbTargetGroup:
        spec = node.mapping(allowed=("protocol", "port", "target_type", "targets", "health_check", "attributes"),
                            required=("protocol", "port", "targets"))
        protocol = spec["protocol"].string(("TCP", "TLS"))
        target_type = spec.get("target_type", "instance").string(("instance", "ip", "alb"))
        if target_type == "alb" and protocol != "TCP":
            raise spec["protocol"].fail(f"{protocol!r}: target groups of target type alb use TCP")
        port = spec["port"].port()
        # AWS's defaults per target type (NLB-TGA): instance -> client IP preserved; ip with TCP/TLS -> not.
        tg_attributes = _attributes(spec.get("attributes", {}), attributes.NLB_TARGET_GROUP, check=lambda pairs: (
            attributes.nlb_target_group_attributes(pairs, {}, target_type=target_type)))
        if target_type == "alb":
            targets = self._alb_targets(spec["targets"], port)
            health_check = _health_check(spec.get("health_check", {}), health_checks.NETWORK, "HTTPS", "alb")
        else:
            targets = self._targets(spec["targets"], port, self.instances)
            health_check = _health_check(spec.get("health_check", {}), health_checks.NETWORK)
        return m.NlbTargetGroup(
            name=name, arn=self._tg_arn(name), protocol=protocol, port=port, target_type=target_type,
            targets=targets, health_check=health_check, attributes=tg_attributes)

    def _alb_targets(self, node: _Node, port: int) -> tuple[m.Target, ...]:
        """An `alb` target group holds the one ALB of the topology; the NLB simulator sends to its nodes
        (one target per ALB node, id `alb-<az>`; docs/decisions.md #24)."""
        items = list(node.items())
        alb_raw = self.root.value.get("alb") if isinstance(self.root.value, dict) else None
        alb_raw = alb_raw if isinstance(alb_raw, dict) else {}
        alb_name = alb_raw.get("name")
        if len(items) != 1 or items[0].value != alb_name:
            raise node.fail(f"a target group of target type alb holds exactly one target: the ALB's name ({alb_name!r})")
        raw_listeners = alb_raw.get("listeners")
        ports = [ls.get("port") for ls in raw_listeners if isinstance(ls, dict)] if isinstance(raw_listeners, list) else []
        if port not in ports:
            raise node.fail(f"the target group port {port} must be a listener port of the ALB ({', '.join(map(str, ports))})")
        targets = []
        raw_nodes = alb_raw.get("nodes")
        for n in raw_nodes if isinstance(raw_nodes, list) else []:
            try:
                targets.append(m.Target(id=f"alb-{n['az']}", ip=IPv4Address(str(n["address"])), port=port,
                                        az=str(n["az"])))
            except (TypeError, KeyError, ValueError):
                continue  # the ALB's own section reports its bad node with path and value
        return tuple(targets)

    def _tg_arn(self, name: str) -> str:
        return f"arn:aws:elasticloadbalancing:{self.region}:{self.account}:targetgroup/{name}/{m.aws_id('tg', name)}"

    def _alb(self, node: _Node) -> m.Alb:
        spec = node.mapping(allowed=("name", "dns_name", "nodes", "listeners", "target_groups", "attributes", "rotation"),
                            required=("name", "nodes", "listeners", "target_groups"))
        name = _load_balancer_name(spec["name"])
        alb_id = m.aws_id("alb", name)
        nodes: list[m.AlbNode] = []
        for item in spec["nodes"].items():
            ns = item.mapping(allowed=("az", "address"), required=("az", "address"))
            az = self._az(ns["az"])
            if any(n.az == az for n in nodes):
                raise ns["az"].fail(f"AZ {az} already has an ALB node")
            nodes.append(m.AlbNode(name=f"alb-{az}", az=az, address=self._vpc_address(ns["address"], az, f"alb-{az}")))
        if len(nodes) < 2:
            raise spec["nodes"].fail("an Application Load Balancer needs nodes in at least two availability zones")
        groups = {}
        tgs_node = spec["target_groups"]
        for key in tgs_node.mapping().keys():
            tg_name = _target_group_name(tgs_node, key)
            tg = tgs_node.child(tg_name, tgs_node.value[key])
            ts = tg.mapping(allowed=("protocol", "port", "targets", "health_check", "attributes"),
                            required=("protocol", "port", "targets"))
            protocol = ts["protocol"].string(("HTTP", "HTTPS"))
            port = ts["port"].port()
            groups[tg_name] = m.AlbTargetGroup(
                name=tg_name, arn=self._tg_arn(tg_name), protocol=protocol, port=port,
                targets=self._targets(ts["targets"], port, self.web),
                health_check=_health_check(ts.get("health_check", {}), health_checks.APPLICATION, protocol),
                attributes=_attributes(ts.get("attributes", {}), attributes.ALB_TARGET_GROUP))
        listeners = []
        for item in spec["listeners"].items():
            ls = item.mapping(allowed=("protocol", "port", "certificate", "certificates", "ssl_policy", "rules",
                                       "default_actions"),
                              required=("protocol", "port", "default_actions"))
            protocol = ls["protocol"].string(("HTTP", "HTTPS"))
            certificate = ssl_policy = None
            listed: tuple[m.Certificate, ...] = ()
            if protocol == "HTTPS":
                certificate = self._certificate(ls["certificate"])
                listed = self._certificate_list(ls, certificate)
                ssl_policy = self._ssl_policy(ls.get("ssl_policy", DEFAULT_SSL_POLICY))
            else:
                _no_certificates(ls, "HTTPS")
            # The ALB's own rule checks, with this file's key paths: the rules the ALB will run.
            context = alb_config.Context(self.source)
            rules_node, actions_node = ls.get("rules", []), ls["default_actions"]
            try:
                rules = alb_config.listener_rules(rules_node.value, rules_node.path, protocol, set(groups), context)
                actions = alb_config.default_actions(actions_node.value, actions_node.path, protocol, set(groups),
                                                     context)
            except alb_config.ConfigError as exc:  # already "<key path>: <AWS's words> in <file>"
                raise TopologyError(str(exc)) from None
            listeners.append(m.AlbListener(protocol=protocol, port=ls["port"].port(), certificate=certificate,
                                           ssl_policy=ssl_policy, rules=rules, default_actions=actions,
                                           certificates=listed))
        if not listeners:
            raise spec["listeners"].fail("at least one listener is needed")
        lb_attributes = _attributes(spec.get("attributes", {}), attributes.ALB_LOAD_BALANCER)
        return m.Alb(
            name=name,
            arn=f"arn:aws:elasticloadbalancing:{self.region}:{self.account}:loadbalancer/app/{name}/{alb_id}",
            dns_name=self._alb_dns_name(spec),
            nodes=tuple(nodes), listeners=tuple(listeners), target_groups=tuple(groups.values()),
            attributes=lb_attributes, rotation=self._alb_rotation(spec.get("rotation", {}), nodes))

    def _alb_dns_name(self, spec: "_Map") -> str:
        """The name HAProxy resolves: served by the lab's DNS, so inside its private zone."""
        zone = self.private_zone
        if "dns_name" not in spec:
            return f"alb.{zone}"
        name = _host_name(spec["dns_name"], "DNS name")
        if not name.endswith("." + zone):
            raise spec["dns_name"].fail(f"{name!r} is not inside the private zone {zone!r}, which the lab's DNS serves")
        return name

    def _alb_rotation(self, node: _Node, nodes: list[m.AlbNode]) -> m.AlbRotation:
        """Address pools default to the 7 free addresses after each node's own (decisions.md #40)."""
        spec = node.mapping(allowed=("drain_seconds", "interval_seconds", "address_pools"))
        pools_node = spec.get("address_pools", {})
        given = pools_node.mapping().keys()
        pools: dict[str, tuple[IPv4Address, ...]] = {}
        for n in nodes:
            pool = [n.address]
            if n.az in given:
                item = pools_node.child(n.az, pools_node.value[n.az])
                first, _, last = item.string().partition("-")
                start, end = item.child("first", first.strip()).ipv4(), item.child("last", (last or first).strip()).ipv4()
                if end < start:
                    raise item.fail(f"{pools_node.value[n.az]!r} is an empty range")
                candidates = [start + i for i in range(int(end) - int(start) + 1)]
                for address in candidates:
                    if address == n.address:
                        continue
                    if address not in self.subnets[n.az]:
                        raise item.fail(f"{address} is not in the subnet of AZ {n.az} ({self.subnets[n.az]})")
                    if address in self.used:
                        raise item.fail(f"{address} is already used by {self.used[address]}")
                    pool.append(address)
            else:
                address = n.address
                while len(pool) < 8 and address + 1 in self.subnets[n.az] and address + 1 != self.subnets[n.az].broadcast_address:
                    address += 1
                    if address not in self.used:
                        pool.append(address)
            if len(pool) < 2:
                raise spec["address_pools"].fail(f"AZ {n.az} has no spare address to rotate the ALB node to")
            for address in pool[1:]:
                self.used[address] = f"{n.name} (address pool)"
            pools[n.az] = tuple(pool)
        for az in given:
            if not any(n.az == az for n in nodes):
                raise pools_node.child(az, None).fail(f"the ALB has no node in AZ {az!r}")
        return m.AlbRotation(
            drain_seconds=spec.get("drain_seconds", 120).integer(0, m.MAX_DRAIN_SECONDS, "drain time in seconds"),
            interval_seconds=spec.get("interval_seconds", 0).integer(0, 604800, "rotation interval in seconds (0 = off)"),
            pools=pools)


def load_topology(name_or_file: str = "default") -> m.Topology:
    """Load, merge `extends`, validate: every check the simulators' loaders make is made here, with
    this file's key paths (the rendered configs are plain serialisations of the model)."""
    path = resolve_topology_path(name_or_file)
    return _Loader(read_topology_data(path), _display(path)).load()


def load_topology_text(text: str, source: str = "<text>") -> m.Topology:
    """For tests: load a topology from YAML text (no `extends`)."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise TopologyError(f"{source}: the top level must be a mapping")
    return _Loader(data, source).load()
