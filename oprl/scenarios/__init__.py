"""One module per domain, each listing its `Scenario`s in ``SCENARIOS``.

The modules hold only names and "module:function" paths, so listing scenarios imports no
simulator, solver or policy code.
"""
