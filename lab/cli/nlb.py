"""`lab nlb ...`: the NLB's run-time API in AWS's vocabulary (ELBv2 action names, attribute keys).

  lab nlb describe-target-health [--target-group NAME] [--node NODE]
  lab nlb register-targets   --target-group NAME ID[:PORT][@AZ] ...
  lab nlb deregister-targets --target-group NAME ID[:PORT][@AZ] ...
  lab nlb describe-attributes [--target-group NAME | --listener PORT]
  lab nlb modify-target-group --target-group NAME KEY=VALUE ...   (health check: HealthCheckProtocol,
      HealthCheckPort, HealthCheckPath, HealthCheckIntervalSeconds, HealthCheckTimeoutSeconds,
      HealthyThresholdCount, UnhealthyThresholdCount, Matcher=HTTPCODES)
  lab nlb modify-target-group-attributes --target-group NAME KEY=VALUE ...
  lab nlb modify-load-balancer-attributes KEY=VALUE ...
  lab nlb modify-listener-attributes --listener PORT KEY=VALUE ...
  lab nlb metrics

Changes apply live (no restart) to new flows; `lab status` shows the result.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from lab import model as m
from lab.cli._common import current_topology, parse_key_values, require_running, simulator_call, target_group_name
from lab.errors import LabError
from lab.runtime import docker_client
from services.elbv2 import health_checks
from services.nlb_sim import control

ACTIONS = ("describe-target-health", "register-targets", "deregister-targets", "describe-attributes",
           "modify-target-group", "modify-target-group-attributes", "modify-load-balancer-attributes",
           "modify-listener-attributes", "metrics")


def register(verbs) -> None:
    parser = verbs.add_parser("nlb", help="NLB run-time API: target health, (de)register targets, attributes")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("describe-target-health", help="target states and reasons (consensus of the nodes)")
    p.add_argument("--target-group", type=target_group_name, default=None, help="default: every target group")
    p.add_argument("--node", default=None, help="one node's own view, e.g. nlb-a")
    p.add_argument("--json", action="store_true")
    for name, helptext in (("register-targets", "register targets (ID[:PORT][@AZ])"),
                           ("deregister-targets", "deregister targets (ID[:PORT][@AZ]): draining, then unused")):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("--target-group", type=target_group_name, required=True)
        p.add_argument("targets", nargs="+", metavar="ID[:PORT][@AZ]")
    p = actions.add_parser("describe-attributes", help="attributes of the LB, a target group or a listener")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--target-group", type=target_group_name, default=None)
    group.add_argument("--listener", type=int, default=None, metavar="PORT")
    p = actions.add_parser("modify-target-group", help="health check KEY=VALUE ... (AWS parameter names),"
                                                       " applied to the next check")
    p.add_argument("--target-group", type=target_group_name, required=True)
    p.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    p = actions.add_parser("modify-target-group-attributes", help="KEY=VALUE ... (AWS keys)")
    p.add_argument("--target-group", type=target_group_name, required=True)
    p.add_argument("attributes", nargs="+", metavar="KEY=VALUE")
    p = actions.add_parser("modify-load-balancer-attributes", help="KEY=VALUE ... (AWS keys)")
    p.add_argument("attributes", nargs="+", metavar="KEY=VALUE")
    p = actions.add_parser("modify-listener-attributes", help="KEY=VALUE ... (tcp.idle_timeout.seconds)")
    p.add_argument("--listener", type=int, required=True, metavar="PORT")
    p.add_argument("attributes", nargs="+", metavar="KEY=VALUE")
    actions.add_parser("metrics", help="the Prometheus endpoint (AWS/NetworkELB metric names)")
    parser.set_defaults(run=run)


def parse_targets(items: list[str]) -> list[dict[str, Any]]:
    """``haproxy-a``, ``10.20.1.20:443``, ``10.20.1.21:443@a`` -> AWS TargetDescriptions, with the
    NLB's own parser (services/nlb_sim/control.py), so both verbs and the admin API read targets alike."""
    out = []
    for item in items:
        try:
            d = control.parse_target(item)
        except control.ApiError as exc:
            raise LabError(f"{exc.code}: {exc.message}") from None
        out.append({"Id": d.id, **({"Port": d.port} if d.port is not None else {}),
                    **({"AvailabilityZone": d.az} if d.az is not None else {})})
    return out


def parse_attributes(items: list[str]) -> list[dict[str, str]]:
    return parse_key_values(items, "deregistration_delay.timeout_seconds=30")


# ModifyTargetGroup's health-check parameters, and HealthCheckEnabled (always true here; false is refused).
HEALTH_CHECK_PARAMETERS = (*(api for api, _ in health_checks.API_NAMES.values()), "HealthCheckEnabled")


def parse_health_check(items: list[str]) -> dict[str, Any]:
    """``HealthCheckProtocol=HTTP Matcher=200-299`` -> ModifyTargetGroup parameters (values are
    checked by the NLB, services/nlb_sim/control.py; ``Matcher`` is the HttpCode)."""
    out: dict[str, Any] = {}
    for pair in parse_key_values(items, "HealthCheckIntervalSeconds=10"):
        key, value = pair["Key"], pair["Value"]
        if key not in HEALTH_CHECK_PARAMETERS:
            raise LabError(f"ValidationError: {key!r} is not a ModifyTargetGroup health check"
                           f" parameter; use one of {', '.join(HEALTH_CHECK_PARAMETERS)}")
        if key == "Matcher":
            out[key] = {"HttpCode": value}
        elif key == "HealthCheckEnabled" and value in ("true", "false"):  # a boolean in the API, as AWS's
            out[key] = value == "true"
        else:
            out[key] = value
    return out


def nlb_call(client, topology: m.Topology, path: str, body: Any = None) -> Any:
    """The NLB admin API's answer to `path` (`/target-health?...`, `/modify-target-group-attributes`, ...);
    an AWS-shaped error becomes a LabError."""
    return _call(client, f"{_base(topology)}{path}", body)


def _base(topology: m.Topology) -> str:
    return f"http://{topology.nlb.nodes[0].private_ip}:{m.NLB_ADMIN_PORT}"


def _call(client, url: str, body: Any = None) -> Any:
    return simulator_call(client, m.NLB_SERVICE, url, body, text=url.endswith("/metrics"))


def run(args) -> int:
    # Argument errors first: one line, without needing the lab up.
    settings = parse_health_check(args.settings) if args.action == "modify-target-group" else {}
    topology = current_topology(None)
    client = docker_client()
    require_running(client)
    base = _base(topology)
    action = args.action
    if action == "describe-target-health":
        names = [args.target_group] if args.target_group else [tg.name for tg in topology.nlb.target_groups]
        docs = {}
        for name in names:
            url = f"{base}/target-health?target_group={quote(name)}" + (f"&node={quote(args.node)}" if args.node else "")
            docs[name] = _call(client, url)["TargetHealthDescriptions"]
        if args.json:
            print(json.dumps(docs, indent=2))
            return 0
        print(f"{'TARGET GROUP':16} {'TARGET':16} {'PORT':6} {'AZ':4} {'STATE':10} REASON")
        for name, descriptions in docs.items():
            for d in descriptions:
                t, h = d["Target"], d["TargetHealth"]
                print(f"{name:16} {t['Id']:16} {t['Port']:<6} {t.get('AvailabilityZone', ''):4} {h['State']:10} "
                      f"{h.get('Reason', '')}")
        return 0
    if action in ("register-targets", "deregister-targets"):
        _call(client, f"{base}/{action}", {"TargetGroupName": args.target_group, "Targets": parse_targets(args.targets)})
        print(f"{action}: {args.target_group}: {' '.join(args.targets)}")
        return 0
    if action == "describe-attributes":
        query = (f"?target_group={quote(args.target_group)}" if args.target_group
                 else f"?listener={args.listener}" if args.listener is not None else "")
        doc = _call(client, f"{base}/attributes{query}")
    elif action == "modify-target-group":
        doc = _call(client, f"{base}/{action}", {"TargetGroupName": args.target_group, **settings})
        for key, value in doc["TargetGroups"][0].items():
            shown = value["HttpCode"] if key == "Matcher" else json.dumps(value) if isinstance(value, bool) else value
            print(f"{key} = {shown}")  # booleans as the AWS CLI prints them (true/false)
        return 0
    elif action == "modify-target-group-attributes":
        doc = _call(client, f"{base}/{action}", {"TargetGroupName": args.target_group,
                                                "Attributes": parse_attributes(args.attributes)})
    elif action == "modify-load-balancer-attributes":
        doc = _call(client, f"{base}/{action}", {"Attributes": parse_attributes(args.attributes)})
    elif action == "modify-listener-attributes":
        doc = _call(client, f"{base}/{action}", {"Port": args.listener, "Attributes": parse_attributes(args.attributes)})
    else:
        print(_call(client, f"{base}/metrics"), end="")
        return 0
    for attr in doc["Attributes"]:
        print(f"{attr['Key']} = {attr['Value']}")
    if not doc["Attributes"]:  # only a TLS listener has none (AWS: its idle timeout is fixed)
        print(f"listener {args.listener} has no attributes: tcp.idle_timeout.seconds is for TCP listeners;"
              " a TLS listener's idle timeout is fixed at 350 s")
    return 0
