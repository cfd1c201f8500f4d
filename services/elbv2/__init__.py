"""The ELBv2 vocabulary, once for the whole lab (no I/O).

Attribute tables with AWS's defaults and allowed values, health-check defaults and ranges per load
balancer type, security policy names, and the ELBv2 error type with AWS's codes. The topology
loader (lab.load), both simulators' config loaders and their run-time control calls all validate
with these, so a bad value is rejected in the same AWS words wherever it comes from; each caller
adds where the value came from (a YAML key path, a JSON path, an API parameter).
"""
