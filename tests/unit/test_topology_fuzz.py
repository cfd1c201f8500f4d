"""Any mangled topology gets a TopologyError (a clear message), never another exception, and one
the loader accepts renders into configs both simulators accept."""

from __future__ import annotations

import copy
from pathlib import Path

from hypothesis import given, settings, strategies as st

from lab.errors import TopologyError, one_line
from lab.load import _Loader, read_topology_data
from lab.render.simulators import validate_simulator_configs

DEFAULT = read_topology_data(Path("topologies/default.yaml"))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


PATHS = [p for p in _paths(DEFAULT) if p]
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), st.text(max_size=12),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                 st.sampled_from(["10.20.1.20", "198.51.100.10", "0.0.0.0/0", "TLS", "ip", "-1", "a", "true"]))


def _set(data, path, value):
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), JUNK), min_size=1, max_size=3))
def test_mangled_topology_raises_only_topology_error(edits):
    data = copy.deepcopy(DEFAULT)
    for path, value in edits:
        try:
            _set(data, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced a parent; this path no longer exists
    try:
        topology = _Loader(data, "fuzz.yaml").load()
    except TopologyError as exc:
        assert str(exc) and "\n" not in one_line(str(exc))
        return
    # What the topology loader accepts, both simulators' own loaders accept as rendered: the loader
    # checks everything itself (decisions #77), so this never raises.
    validate_simulator_configs(topology)
