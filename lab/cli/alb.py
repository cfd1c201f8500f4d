"""`lab alb ...`: the ALB at run time, in AWS terms, through its admin API (inside the container).

    lab alb nodes                              the nodes, active and draining, and the DNS name
    lab alb rotate [--drain-seconds N]         new node addresses; DNS updated; old nodes drain
    lab alb target-health [TG]                 DescribeTargetHealth
    lab alb register TG IP[:PORT]... [--availability-zone all]
                                               RegisterTargets (outside the VPC: needs the zone)
    lab alb deregister TG IP[:PORT]...         DeregisterTargets (targets drain first)
    lab alb attributes [KEY=VALUE...]          Describe/ModifyLoadBalancerAttributes
    lab alb tg-attributes TG [KEY=VALUE...]    Describe/ModifyTargetGroupAttributes
    lab alb rules PORT [--set FILE]            the listener's rules; --set replaces them (YAML/JSON list)
    lab alb metrics                            CloudWatch-named metrics (Prometheus text)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab import model as m
from lab.cli._common import (alb_admin_url, current_topology, parse_key_values, require_running, seconds_arg,
                             simulator_call, target_group_name)
from lab.errors import LabError
from lab.load import read_yaml_file
from lab.runtime import docker_client


def admin_call(method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
    """Call the ALB admin API; an AWS-shaped error becomes a LabError with AWS's code and message."""
    client = docker_client()
    require_running(client)
    return simulator_call(client, m.ALB_SERVICE, f"{alb_admin_url()}{path}", body, method, text=raw)


def _targets(specs: list[str], default_port: int, az: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for spec in specs:
        ip, _, port = spec.partition(":")
        if port and not port.isdigit():
            raise LabError(f"{spec!r} is not IP[:PORT]")
        out.append({"Id": ip, "Port": int(port) if port else default_port, **({"AvailabilityZone": az} if az else {})})
    return out


def _key_values(pairs: list[str]) -> list[dict[str, str]]:
    return parse_key_values(pairs, "routing.http.xff_header_processing.mode=preserve")


def _group_port(name: str) -> int:
    topology = current_topology(None)
    for tg in topology.alb.target_groups:
        if tg.name == name:
            return tg.port
    return 80


def register(verbs) -> None:
    parser = verbs.add_parser("alb", help="the ALB at run time: nodes, rotation, targets, attributes, rules")
    sub = parser.add_subparsers(dest="alb_verb", metavar="ALB_VERB", required=True)
    p = sub.add_parser("nodes", help="the ALB's nodes (active and draining)")
    p.set_defaults(run=run_nodes)
    p = sub.add_parser("rotate", help="move the ALB to new node addresses (DNS updated, old nodes drain)")
    p.add_argument("--drain-seconds", type=seconds_arg(0, m.MAX_DRAIN_SECONDS, low_allowed=True), default=None,
                   help="how long old nodes keep serving (default: the topology's alb.rotation.drain_seconds)")
    p.set_defaults(run=run_rotate)
    p = sub.add_parser("target-health", aliases=["describe-target-health"], help="DescribeTargetHealth")
    p.add_argument("target_group", nargs="?", type=target_group_name)
    p.set_defaults(run=run_target_health)
    for verb in ("register", "deregister"):
        p = sub.add_parser(verb, aliases=[f"{verb}-targets"], help=f"{verb.capitalize()}Targets")
        p.add_argument("target_group", type=target_group_name)
        p.add_argument("targets", nargs="+", metavar="IP[:PORT]")
        p.add_argument("--availability-zone", dest="az", default=None, metavar="AZ",
                       help="`all` (or a zone) for an address outside the VPC, as AWS requires")
        p.set_defaults(run=run_register, endpoint=f"/{verb}-targets")
    p = sub.add_parser("attributes", help="Describe/ModifyLoadBalancerAttributes")
    p.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(run=run_attributes)
    p = sub.add_parser("tg-attributes", help="Describe/ModifyTargetGroupAttributes")
    p.add_argument("target_group", type=target_group_name)
    p.add_argument("pairs", nargs="*", default=[], metavar="KEY=VALUE")  # a default: optional in usage errors
    p.set_defaults(run=run_tg_attributes)
    p = sub.add_parser("rules", help="a listener's rules; --set FILE replaces them")
    p.add_argument("port", type=int)
    p.add_argument("--set", dest="rules_file", type=Path, default=None, help="YAML or JSON list of rules")
    p.set_defaults(run=run_rules)
    p = sub.add_parser("metrics", help="CloudWatch-named metrics, Prometheus text format")
    p.set_defaults(run=run_metrics)
    for p in {id(p): p for p in sub.choices.values()}.values():  # aliases share a parser
        p.add_argument("--json", action="store_true", help="print the admin API's JSON")


def _print(args, doc: Any, lines: list[str]) -> int:
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for line in lines:
            print(line)
    return 0


def run_nodes(args) -> int:
    doc = admin_call("GET", "/nodes")
    return _print(args, doc, [f"{doc['DNSName']}"] + [
        f"  {n['Name']:10} {n['AvailabilityZone']:3} {n['Address']:15} {n['State']:9} connections={n['Connections']}"
        for n in doc["Nodes"]])


def run_rotate(args) -> int:
    body = {} if args.drain_seconds is None else {"DrainSeconds": args.drain_seconds}
    doc = admin_call("POST", "/rotate", body)
    return _print(args, doc, [f"new:      {n['Name']} {n['Address']}" for n in doc["New"]] +
                  [f"draining: {n['Name']} {n['Address']} (gone in {doc['DrainSeconds']:g} s)" for n in doc["Draining"]])


def run_target_health(args) -> int:
    names = [args.target_group] if args.target_group else [tg.name for tg in current_topology(None).alb.target_groups]
    docs = {name: admin_call("GET", f"/target-health?target_group={name}") for name in names}
    lines = [f"{'TARGET GROUP':16} {'TARGET':15} {'PORT':6} {'STATE':10} REASON"]  # as `lab nlb describe-target-health`
    for name, doc in docs.items():
        for d in doc["TargetHealthDescriptions"]:
            h = d["TargetHealth"]
            lines.append(f"{name:16} {d['Target']['Id']:15} {d['Target']['Port']:<6} {h['State']:10} {h.get('Reason', '')}")
    return _print(args, docs if len(docs) > 1 else docs[names[0]], lines)


def run_register(args) -> int:
    body = {"TargetGroupName": args.target_group,
            "Targets": _targets(args.targets, _group_port(args.target_group), args.az)}
    doc = admin_call("POST", args.endpoint, body)
    return _print(args, doc, [f"{args.endpoint.strip('/')}: {args.target_group} {' '.join(args.targets)}"])


def run_attributes(args) -> int:
    doc = (admin_call("POST", "/attributes", {"Attributes": _key_values(args.pairs)}) if args.pairs
           else admin_call("GET", "/attributes"))
    return _print(args, doc, [f"{a['Key']} = {a['Value']}" for a in doc["Attributes"]])


def run_tg_attributes(args) -> int:
    if args.pairs:
        doc = admin_call("POST", "/target-group-attributes",
                         {"TargetGroupName": args.target_group, "Attributes": _key_values(args.pairs)})
    else:
        doc = admin_call("GET", f"/target-group-attributes?target_group={args.target_group}")
    return _print(args, doc, [f"{a['Key']} = {a['Value']}" for a in doc["Attributes"]])


def read_rules(path: Path) -> Any:
    """A YAML or JSON list of rules; `lab alb rules PORT --json` output (`{"Rules": [...]}`, its
    default rule included) is accepted too, so a listener's rules can be saved, edited, set back."""
    rules = read_yaml_file(path, "rules from", error=LabError)
    if isinstance(rules, dict) and set(rules) == {"Rules"} and isinstance(rules["Rules"], list):
        rules = [r for r in rules["Rules"] if not (isinstance(r, dict) and r.get("IsDefault"))]
    return rules


def run_rules(args) -> int:
    if args.rules_file is not None:
        doc = admin_call("POST", "/rules", {"Port": args.port, "Rules": read_rules(args.rules_file)})
    else:
        doc = admin_call("GET", f"/rules?port={args.port}")
    return _print(args, doc, [json.dumps(r) for r in doc["Rules"]])


def run_metrics(args) -> int:
    print(admin_call("GET", "/metrics", raw=True), end="")
    return 0
