"""Run a bot module against the fake Discord (tests only).

Usage::

    python tests/e2e/launcher.py --discord http://127.0.0.1:PORT -m MODULE [args...]

discord.py hardcodes two hosts that matter: the REST base (``discord.http.Route.BASE``, also
used by interaction/webhook followups in ``discord/webhook/async_.py``) and the gateway
(``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``: ``Client.connect`` does not call
``GET /gateway/bot``, it connects to ``wss://gateway.discord.gg/`` and later to READY's
``resume_gateway_url``). Both are pointed at the fake before the module runs, as is the CDN
base of ``discord.Asset`` so nothing can reach the real Discord. The bot itself has no test
switch: it is run unmodified with ``runpy``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import discord.asset
import discord.gateway
import discord.http
import yarl

REPO_ROOT = Path(__file__).resolve().parents[2]


def redirect_discord(base_url: str) -> None:
    """Point discord.py's REST, gateway and CDN hosts at ``base_url`` (the fake Discord)."""
    base = yarl.URL(base_url.rstrip("/"))
    discord.http.Route.BASE = f"{base}/api/v10"
    ws_scheme = "wss" if base.scheme == "https" else "ws"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base.with_scheme(ws_scheme).with_path(
        "/gateway/"
    )
    discord.asset.Asset.BASE = str(base)


def main(argv: list[str] | None = None) -> None:
    """Parse ``--discord URL -m MODULE [args...]``, redirect discord.py, run the module."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--discord", required=True, help="base URL of the fake Discord")
    parser.add_argument("-m", dest="module", required=True, help="module to run as __main__")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the module")
    ns = parser.parse_args(argv)
    redirect_discord(ns.discord)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    sys.argv = [ns.module, *ns.args]
    runpy.run_module(ns.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
