"""The variant registry: the spec schema, loading and validation, presets, counts and hashes.

Import the submodules directly (``registry.loader``, ``registry.params``, ...); this package
file imports nothing so that ``model`` and ``registry`` can use each other's types.
"""
