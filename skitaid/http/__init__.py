"""HTTP primitives shared by every layer above: header rules, no I/O."""
