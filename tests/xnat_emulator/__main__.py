"""``python -m xnat_emulator --root DIR --port N`` (run from ``tests/``) for manual use."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

from .server import XnatEmulator

LOG = logging.getLogger("xnat_emulator")


def _user(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise argparse.ArgumentTypeError("users are given as NAME:PASSWORD")
    return user, password


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="xnat_emulator", description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="state folder (created)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--user", type=_user, action="append", default=[],
                        help="NAME:PASSWORD, repeatable (default admin:admin)")
    parser.add_argument("--cert", type=Path, help="TLS certificate (PEM)")
    parser.add_argument("--key", type=Path, help="TLS private key (PEM)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    users = dict(args.user) or {"admin": "admin"}
    emulator = XnatEmulator(args.root, users, host=args.host, port=args.port,
                            certfile=args.cert, keyfile=args.key)
    with emulator:
        LOG.info("serving %s as users %s; Ctrl-C stops", emulator.url, ", ".join(users))
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            LOG.info("stopping")


if __name__ == "__main__":
    main()
