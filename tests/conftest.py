"""Hypothesis profiles for the whole suite.

`make test` (and so CI) runs the property tests on a fixed set of examples ("repeatable"): a run
fails only because the code changed, never because this run happened to draw a new example.
`make fuzz` runs them with fresh random examples ("explore") to look for new failures; Hypothesis
prints how to reproduce any it finds.

Neither profile has a per-example deadline: on a loaded 2-core CI machine one slow example (a
garbage collection, a neighbour's burst) is not a bug, and a hang still ends at the suite's limits.
"""

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", derandomize=False, database=None, print_blob=True, deadline=None)
settings.load_profile("repeatable")  # pytest's --hypothesis-profile, read later, takes precedence
