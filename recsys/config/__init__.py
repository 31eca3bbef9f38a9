"""Typed configs: option models derived from signatures (``options``) and the schema every
entry point checks its composed config against before any work (``schema``)."""
