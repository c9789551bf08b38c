"""Definitions with history (issue 23): every saved version of a sequence, workflow,
schedule, registry screen and caption template, their diffs and reverts.

`versions.VersionStore` owns the ``definition_versions`` rows; `diff.diff_versions` makes a
readable diff of two contents; `kinds` says, per kind, whose a definition is and how a past
version is saved again; `history.DefinitionHistory` is what the API and the runs use.
"""
