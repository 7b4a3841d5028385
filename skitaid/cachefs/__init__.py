"""The cache file system: an RFC 9111 shared cache for proxied responses and
`was` calls — a memory tier per worker in front of a disk tier shared by the
workers of a server.

rules.py   what may be stored and for how long (pure functions)
entry.py   a stored response and its on-disk form (header, checksum)
memory.py  the per-worker LRU by bytes
disk.py    the shared directory: atomic writes, LRU eviction by bytes, stats
store.py   the two tiers together, variants (Vary) and the stampede locks
"""
