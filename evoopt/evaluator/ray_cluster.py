"""Connecting to Ray: a private local instance by default, an existing cluster only when asked.

* No address: ``ray.init(address="local")`` always starts a new instance sized to this machine.
  It never attaches to a cluster left running by ``ray start`` or named by ``RAY_ADDRESS``
  (ignored, with a warning: ``--address auto`` joins it).
* An address (``HOST:PORT`` of a head, or ``auto``: the cluster ``ray start`` left on this
  machine, or ``RAY_ADDRESS`` when set) joins that cluster. A ``HOST:PORT`` that nothing answers
  on fails within seconds, before Ray's own ~20 s of retries.

Token authentication (Ray >= 2.52; the default for new local instances since 2.59): Ray reads
``RAY_AUTH_MODE`` and warns on every start while it is unset. evoopt sets it the way Ray's docs
describe, unless the user already did: ``token`` for its own local instance (Ray creates
``~/.ray/auth_token`` if missing), and ``token`` when joining a cluster if this machine has a
token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, Ray's own order). A
cluster that wants a token this machine lacks gives one error saying how to copy it here.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

AUTH_MODE_VAR = "RAY_AUTH_MODE"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")
REACHABLE_TIMEOUT_S = 5.0

# The folder holding this evoopt package: put on the workers' PYTHONPATH (see start_local_ray).
_IMPORT_ROOT = os.path.realpath(Path(__file__).resolve().parents[2])
_QUIET: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}

TOKEN_HELP = ("copy the cluster's token to this machine: run `ray get-auth-token` on the head "
              "and save its output in ~/.ray/auth_token here (or set RAY_AUTH_TOKEN to it, or "
              "RAY_AUTH_TOKEN_PATH to a file holding it)")


def ensure_ray(address: str | None, runtime_env: dict | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a private local instance when it is None.

    ``runtime_env`` is the job's Ray runtime environment (a local ``working_dir`` folder is
    uploaded to every worker; Ray accepts a local folder at the job level only). Returns True
    if this call initialised Ray (the caller then shuts it down), False if Ray was already
    initialised in this process (``ValueError`` then, when a ``runtime_env`` was asked for: it
    cannot be added to a running job). Raises ``ConnectionError`` with a message fit for a
    user when a cluster cannot be joined, ``ValueError`` for a malformed address.
    """
    loaded = sys.modules.get("ray")
    if loaded is not None and loaded.is_initialized():
        if runtime_env:
            raise ValueError("Ray is already running in this process, so the task files cannot "
                             "be shipped to its workers (a Ray runtime_env is set when Ray "
                             "starts): call ray.shutdown() first, or let evoopt start Ray")
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    configure_token_auth(joining=bool(address))
    extra = {"runtime_env": runtime_env} if runtime_env else {}
    if address:
        join_cluster(address, **extra)
    else:
        start_local_ray(**extra)
    return True


def configure_token_auth(joining: bool) -> None:
    """Set ``RAY_AUTH_MODE=token`` (see the module docstring) unless the user set the variable.

    Ray reads the variable once, when it is first imported: set later, the processes Ray starts
    would see it and this one not, and they could not talk. So once Ray is imported this leaves
    it unset and Ray applies its own default (with its warning).
    """
    if AUTH_MODE_VAR in os.environ or "ray._raylet" in sys.modules:
        return
    if not joining or local_token_source():
        os.environ[AUTH_MODE_VAR] = "token"


def start_local_ray(**init: Any) -> None:
    """Start a new Ray instance for this process only (never an existing one)."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        log.warning("RAY_ADDRESS=%s is ignored: evoopt starts its own Ray instance unless "
                    "given --address (--address auto joins the cluster RAY_ADDRESS names)",
                    os.environ["RAY_ADDRESS"])
    # Workers put the driver's cwd on sys.path and inherit its environment: when this checkout
    # is neither installed nor the cwd, put it on PYTHONPATH (cheaper than a runtime_env).
    if os.path.realpath(os.getcwd()) != _IMPORT_ROOT:
        parts = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if _IMPORT_ROOT not in parts:
            os.environ["PYTHONPATH"] = os.pathsep.join([_IMPORT_ROOT, *filter(None, parts)])
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, **_QUIET,
             **init)


def local_token_source() -> str | None:
    """Where Ray would read this machine's auth token from (its documented order), or None."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    path = DEFAULT_TOKEN_PATH.expanduser()
    try:
        return str(path) if path.read_text().strip() else None
    except OSError:
        return None


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as (host, port); ValueError naming the expected form."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Ray address {address!r}: expected HOST:PORT of the cluster's head "
                         "(e.g. 10.0.0.5:6379) or 'auto'")
    return host, int(port)


def check_reachable(host: str, port: int, timeout_s: float = REACHABLE_TIMEOUT_S) -> None:
    """Raise ConnectionError unless something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConnectionError(
            f"no Ray cluster answers at {host}:{port} ({reason}): start one there with "
            f"`ray start --head --port={port}`, or leave out --address to use a local "
            "Ray instance") from None


def join_cluster(address: str, **init: Any) -> None:
    """``ray.init`` on an existing cluster, with the token set up and errors that say what to do."""
    import ray
    from ray.exceptions import AuthenticationError

    target = (os.environ.get("RAY_ADDRESS") or address) if address == "auto" else address
    if target != "auto" and "://" not in target:
        check_reachable(*parse_address(target))
    token = local_token_source()
    try:
        ray.init(address=address, **_QUIET, **init)
    except AuthenticationError:
        raise ConnectionError(f"the Ray cluster at {target} needs an authentication token and "
                              f"none was found on this machine: {TOKEN_HELP}") from None
    except ConnectionError as e:
        if target == "auto" and "Could not find any running Ray instance" in str(e):
            raise ConnectionError("--address auto: no Ray cluster is running on this machine "
                                  "(start one with `ray start --head`)") from None
        hint = (f"if it uses token authentication, check that this machine's token ({token}) is "
                "the cluster's (`ray get-auth-token` on the head prints it) and that "
                f"{AUTH_MODE_VAR} is not 'disabled' here" if token else
                f"no Ray token was found on this machine; if the cluster uses token "
                f"authentication, {TOKEN_HELP}")
        raise ConnectionError(f"could not join the Ray cluster at {target}: {hint}") from None
