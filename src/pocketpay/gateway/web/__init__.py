"""The users' web app: server-rendered pages served by the gateway (see routes.py)."""
