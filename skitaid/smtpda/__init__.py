"""Mail from app code: compose and spool (compose.py, spool.py), and the delivery
agent, a daemon of its own (agent.py, deliver.py, control.py)."""
