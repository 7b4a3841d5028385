"""Pieces that several end-to-end tests share (servers, clients, backends)."""
