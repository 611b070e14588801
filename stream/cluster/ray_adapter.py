"""The adapter around Ray: connecting (one clear line when the cluster cannot be reached), making the
worker actor class, and telling Ray's errors apart. Nothing else in the app imports ``ray``."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from typing import Any

from stream.errors import UserError

__all__ = ["connect", "disconnect", "gather", "is_worker_death", "is_worker_unavailable", "worker_actor"]

log = logging.getLogger(__name__)

CONNECT_PROBE_S = 5.0  # a TCP probe of host:port before ray.init, which may otherwise retry for a minute


def connect(address: str) -> bool:
    """Connect this process to the Ray cluster at ``address`` (auto, host:port or ray://host:port), with
    the workers' output shown here (``log_to_driver``); a ``UserError`` naming the address when it
    cannot. False: it was connected already (whoever connected it disconnects)."""
    import ray

    if ray.is_initialized():
        return False
    _probe(address)
    try:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray's own words, first line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cluster {address}: cannot connect to the Ray cluster ({first})") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    log.info("cluster %s: %d node(s), %s CPU(s)", address, len(nodes), ray.cluster_resources().get("CPU", 0))
    return True


def disconnect() -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.shutdown()


def _probe(address: str) -> None:
    """host:port or ray://host:port must accept a TCP connection within a few seconds."""
    match = re.fullmatch(r"(?:ray://)?(.+):(\d+)", address)
    if address == "auto" or match is None:
        return
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=CONNECT_PROBE_S):
            pass
    except OSError as exc:
        raise UserError(
            f"cluster {address}: cannot reach the Ray head ({exc.strerror or exc}); "
            "start it with `ray start --head` or fix cluster.address / --cluster"
        ) from None


def worker_actor(cls: type, *, cpus: float, gpus: float, max_restarts: int, name: str) -> Any:
    """``cls`` as a Ray actor class: reserving ``cpus``/``gpus``, restarted up to ``max_restarts``
    times when its process dies (calls in flight then fail: the head calls ``run`` again), spread
    over the nodes, answering ``status``/``stop`` while ``run`` goes on."""
    import ray

    return ray.remote(cls).options(
        num_cpus=cpus,
        num_gpus=gpus,
        max_restarts=max_restarts,
        max_task_retries=0,
        max_concurrency=8,  # run, status/stop/pid, and the web poller's latest (one per stream) and view_status
        scheduling_strategy="SPREAD",
        name=name,
    )


def gather(refs: list[Any], timeout_s: float) -> list[Any]:
    """The results of ``refs`` waited for together for at most ``timeout_s``: each a value, or the
    exception its call raised (``TimeoutError`` for one that did not answer in time)."""
    import ray

    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    done = set(ready)
    out: list[Any] = []
    for ref in refs:
        if ref not in done:
            out.append(TimeoutError(f"no answer within {timeout_s:g} s"))
            continue
        try:
            out.append(ray.get(ref, timeout=0))
        except Exception as exc:
            out.append(exc)
    return out


def is_worker_death(exc: BaseException) -> bool:
    """The actor's process died (or is restarting): not an error of the pipeline it ran."""
    from ray.exceptions import RayActorError

    return isinstance(exc, RayActorError)


def is_worker_unavailable(exc: BaseException) -> bool:
    """A call that failed because the actor is restarting or slow to answer (try again), not dead for good."""
    from ray.exceptions import ActorUnavailableError, GetTimeoutError

    return isinstance(exc, ActorUnavailableError | GetTimeoutError)
