"""Whether the Hugging Face libraries must stay offline: one reading of the environment for every caller,
and whether the hub can be reached at all (:func:`hub_unreachable`).

The rule: offline when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value
(1/true/yes/on, any case, surrounding spaces ignored). Either one is enough, as each library
honours its own; an unset, empty or false value (0/false/no/off) leaves the other to decide."""
from __future__ import annotations

import functools
import os
import socket

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = ("1", "true", "yes", "on")


def offline_setting() -> str | None:
    """The first of :data:`OFFLINE_VARIABLES` set to a true value, as ``NAME=value`` (for error
    messages), or None when neither is."""
    for name in OFFLINE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.lower() in _TRUE:
            return f"{name}={value}"
    return None


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to 1/true/yes/on: read files
    from the local cache only, never ask the hub."""
    return offline_setting() is not None


@functools.lru_cache(maxsize=1)
def hub_unreachable(timeout: float = 3.0) -> str:
    """Why the Hugging Face hub (``HF_ENDPOINT``, default huggingface.co) cannot be reached from
    here, or "" when a TCP connection to it opens within ``timeout`` seconds. Asked once per process."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"the Hugging Face hub ({host}) is unreachable: {exc.strerror or type(exc).__name__}"
    return ""
