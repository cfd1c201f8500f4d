"""haproxy.cfg for each HAProxy instance: a pure function of the topology model.

The shape follows the production config in shared/reference/field-notes.md (GOV.UK Verify):
a `resolvers` section with short holds so the ALB's changing addresses are followed, several
servers (`server-template`) because one `server` line keeps only one address, TLS on both sides.
"""

from __future__ import annotations

from lab import model as m
from lab.render.simulators import CERT_DIR

# One log line per request, key=value so `lab trace` can read it. %ci:%cp is the client as HAProxy
# sees it (from the PROXY header under accept-proxy), conn= is the TCP peer (fc_src).
LOG_FORMAT = (
    "{name} client=%ci:%cp conn=%[fc_src]:%[fc_src_port] frontend=%ft backend=%b server=%s "
    "server_addr=%si:%sp status=%ST bytes=%B trace=%{{+Q}}[capture.req.hdr(0)] request=%{{+Q}}r"
)


# `haproxy.resolve: runtime` (the default).
RESOLVERS = """\
# The VPC resolver. Short holds: re-resolve every second and keep nothing stale, so the ALB's
# changing addresses are followed (field notes: GOV.UK Verify d8588fa).
resolvers vpcdns
    nameserver vpc {vpc_resolver}:53
    accepted_payload_size 4096
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid 1s
    hold timeout 0s
    hold nx 0s
    hold other 0s
    hold refused 0s
    hold obsolete 0s

"""


def haproxy_config(topology: m.Topology, instance: m.HaproxyInstance) -> str:
    hp = topology.haproxy
    alb = topology.alb
    accept_proxy = " accept-proxy" if hp.accept_proxy else ""
    if hp.verify == "required":
        verify = f"verify required ca-file {CERT_DIR}/public-ca.pem sni str({topology.site}) verifyhost {topology.site}"
    else:
        verify = "verify none"
    https_port = next((ls.port for ls in alb.listeners if ls.protocol == "HTTPS"), 443)
    log_format = LOG_FORMAT.format(name=instance.name)
    if hp.resolve == "runtime":
        resolvers = RESOLVERS.format(vpc_resolver=topology.dns.vpc_address)
        servers = (
            "    # One slot per ALB address: a single `server` keeps only one address (verify-infrastructure 24ac501).\n"
            f"    server-template alb {hp.alb_servers} {alb.dns_name}:{https_port} resolvers vpcdns resolve-prefer ipv4 "
            f"init-addr none check ssl {verify}")
    else:
        resolvers = ""
        servers = (
            "    # haproxy.resolve: startup. No resolvers section: libc resolves the name once, when HAProxy\n"
            "    # starts, and this one server keeps that one address (field notes pain point 8; the\n"
            "    # hmpps-delius-core config). When the ALB's addresses change, nothing follows them.\n"
            f"    server alb {alb.dns_name}:{https_port} init-addr last,libc,none check ssl {verify}")
    return f"""\
# Rendered by `lab render` from {topology.source} for {instance.name} (AZ {instance.az}). Do not edit.
global
    log stdout format raw local0
    maxconn 4096
    stats socket /run/haproxy-admin.sock mode 600 level admin
    ssl-default-bind-options ssl-min-ver TLSv1.2
    ssl-default-server-options ssl-min-ver TLSv1.2

defaults
    mode http
    log global
    # The NLB's TCP health checks connect and close without sending a byte (decisions #33): not
    # logged, instead of a 400 <BADREQ> on :80 and "Connection closed during SSL handshake" on :443.
    option dontlognull
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 55s

{resolvers}frontend https
    bind {instance.address}:443{accept_proxy} ssl crt {CERT_DIR}/{instance.name}.pem
    capture request header X-Lab-Trace len 64
    log-format "{log_format}"
    option forwardfor
    default_backend alb

frontend http
    bind {instance.address}:80{accept_proxy}
    capture request header X-Lab-Trace len 64
    log-format "{log_format}"
    http-request redirect scheme https code 301

backend alb
    balance roundrobin
    http-reuse safe
    default-server inter 2s fall 3 rise 2
{servers}
"""
