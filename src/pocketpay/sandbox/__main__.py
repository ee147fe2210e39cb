"""Serve the sandbox alone: ``python -m pocketpay.sandbox [--host H] [--port P]``.

Settings come from the environment as everywhere (``POCKETPAY_SANDBOX__API_KEY``,
``POCKETPAY_SANDBOX__WEBHOOK_URL``, ...); an empty webhook URL records events without
sending them. The Stripe API base is then ``http://H:P`` (the SDK appends ``/v1``).
"""

from __future__ import annotations

import argparse

import uvicorn

from pocketpay.kit.clock import SystemClock
from pocketpay.sandbox.app import create_app
from pocketpay.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pocketpay.sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8012)
    args = parser.parse_args(argv)
    settings = Settings().sandbox
    app = create_app(settings, SystemClock(), webhook_url=settings.webhook_url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
