"""Speed measurements: ``brainmri bench`` and a load test of ``brainmri serve`` (a pure client)."""
