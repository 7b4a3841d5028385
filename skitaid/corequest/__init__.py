"""Corequests: Task/Tasks/Mask/Result, the HTTP client pool, RPC, clusters, result cache."""
