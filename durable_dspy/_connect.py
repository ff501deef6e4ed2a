"""Connecting to Temporal: explicit arguments, then Temporal's environment configuration, else the embedded server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.client import Client, Plugin
from temporalio.envconfig import ClientConfigProfile


def connect_config(
    address: str | None = None, *, namespace: str | None = None, profile: str | None = None
) -> dict[str, Any] | None:
    """``Client.connect`` keyword arguments from ``temporalio.envconfig`` (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
    TEMPORAL_API_KEY, TLS settings, profiles of the Temporal config file), with explicit arguments overriding.

    Returns None when no address is configured anywhere: the caller should use the embedded dev server.
    """
    loaded = ClientConfigProfile.load(profile=profile)
    config: dict[str, Any] = dict(loaded.to_client_connect_config())
    if address is not None:
        config["target_host"] = address
    if namespace is not None:
        config["namespace"] = namespace
    if not config.get("target_host"):
        return None
    return config


async def connect(
    address: str | None = None,
    *,
    namespace: str | None = None,
    profile: str | None = None,
    plugins: Sequence[Plugin] = (),
    **payloads: Any,
) -> Client:
    """Connect a client with the durable_dspy plugin (pydantic payloads) added.

    ``payloads`` are DurableDSPyPlugin's ``compression=``, ``encryption=`` and ``external_storage=``: a client
    needs the same ones as the workers.

    Example:
        >>> client = await durable_dspy.connect("localhost:7233")
        >>> prediction = await RAG.run(client, question="What is DSPy?")
    """
    from ._plugin import DurableDSPyPlugin

    config = connect_config(address, namespace=namespace, profile=profile)
    if config is None:
        raise ValueError(
            "No Temporal address: pass address=..., set TEMPORAL_ADDRESS, or configure a profile in the Temporal "
            "config file. (durable_dspy.serve() starts an embedded dev server when none is configured.)"
        )
    plugins = list(plugins)
    if not any(isinstance(p, DurableDSPyPlugin) for p in plugins):
        plugins.append(DurableDSPyPlugin(**payloads))
    elif payloads:
        raise TypeError("Pass compression=, encryption= and external_storage= to your DurableDSPyPlugin instead.")
    return await Client.connect(**config, plugins=plugins)
