"""Which wandb mode a run uses and whose account: `resolve_mode`, `has_api_key`, `default_entity`.

`logger.mode` null means auto: "online" when an API key is available (env `WANDB_API_KEY`, an identity token
file, or a netrc entry for the W&B host), else "offline"; an explicit env `WANDB_MODE` beats auto and a `mode`
in the config beats both. Reading credentials touches files only, never the network.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlsplit

from icl_gd.errors import ConfigError
from icl_gd.tracking.naming import DEFAULTS

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
_ENV_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # old spellings wandb still accepts
# wandb's default server and the same one under its older name (wandb >= 0.31 defaults to the Forge address and
# reads a netrc entry for either)
_DEFAULT_HOSTS = {"api.forge.coreweave.com", "api.wandb.ai"}


def resolve_mode(cfg_mode: str | None) -> str:
    """The wandb mode to use: the config's, else env WANDB_MODE, else online iff an API key is available."""
    if cfg_mode is not None:
        mode = str(cfg_mode).lower()
        if mode not in MODES:
            raise ConfigError(f"logger.mode={cfg_mode!r} is not one of {list(MODES)} or null (auto)")
        return mode
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    env_mode = _ENV_MODE_ALIASES.get(env_mode, env_mode)
    if env_mode in MODES:
        return env_mode
    if env_mode:
        log.warning("ignoring WANDB_MODE=%r (not one of %s)", os.environ["WANDB_MODE"], list(MODES))
    return "online" if has_api_key() else "offline"


def has_api_key() -> bool:
    """Whether wandb would find credentials: env WANDB_API_KEY / WANDB_IDENTITY_TOKEN_FILE, or a netrc entry.

    Reads files only (no network) and never fails: an unreadable netrc counts as no key.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    hosts = {urlsplit(os.environ.get("WANDB_BASE_URL", "")).netloc} - {""}
    if not hosts or hosts & _DEFAULT_HOSTS:
        hosts |= _DEFAULT_HOSTS
    for path in _netrc_paths():
        try:
            rc = netrc.netrc(str(path))
        except Exception:  # FileNotFoundError, parse or permission errors
            continue
        if any((creds := rc.authenticators(h)) and creds[2] for h in sorted(hosts)):
            return True
    return False


def default_entity() -> str | None:
    """The logged-in user's default W&B entity (asks the server), None when it cannot be had."""
    try:
        import wandb

        return wandb.Api(timeout=DEFAULTS["init_timeout_s"]).default_entity
    except Exception as e:  # no key, no network
        log.warning("W&B: no default entity (%s: %s)", type(e).__name__, e)
        return None


def _netrc_paths() -> list[Path]:
    # the order wandb itself uses: $NETRC, then ~/.netrc, then ~/_netrc
    if env := os.environ.get("NETRC"):
        return [Path(env).expanduser()]
    return [Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()]
