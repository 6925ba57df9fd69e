"""Several cooperating processes on JAX's distributed runtime: one call to join, consistency checks, lost peers.

:func:`initialize` is the one call a program makes, first, before any JAX computation::

    import jigcnn.distributed
    jigcnn.distributed.initialize(coordinator="host0:1234", num_processes=2, process_id=0)   # or from the env
    # fit(...) is now data parallel over every process's devices; cross_validate spreads its folds

It reads its arguments, else the environment variables clusters set (JAX's own
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``), else, on a Slurm-like
scheduler (``SLURM_JOB_ID``, Open MPI's ``OMPI_COMM_WORLD_SIZE``...), JAX's own auto-detection
(``jax.distributed.initialize()`` without arguments); with none of them the program stays one
process. Everything is read at the call, nothing at import.

Every wait is bounded: joining (``timeout``), the check that every process was started with the
same configuration (:func:`check_consistent`), the gathering of results (:func:`gather_json`),
and the detection of a process that died (JAX's heartbeat, ``heartbeat_timeout``; a collective
whose peer died fails at once with gloo). :func:`failure_guard` turns such a failure into a
:class:`ProcessLostError` naming the lost process(es).

This module imports only :mod:`jigcnn.errors` (and JAX, inside functions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from typing import Any

from jigcnn.errors import UserError

#: Environment variables read by :func:`initialize` (JAX's own names).
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
#: Variables whose presence means a scheduler JAX can auto-detect (Slurm, Open MPI, MPICH/PMI).
CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")

DEFAULT_TIMEOUT = 60  # s: joining, and each consistency check / gathering wait
DEFAULT_HEARTBEAT = 20  # s: a silent process is declared dead after this
DEFAULT_SHUTDOWN = 10  # s: the shutdown barrier at exit


class DistributedError(UserError):
    """A multi-process run is misconfigured: coordinator unreachable, a bad id, processes started differently."""


class ProcessLostError(RuntimeError):
    """Another process of the run died or stopped answering; ``.lost`` lists the process ids known lost."""

    def __init__(self, message: str, lost=()):
        super().__init__(message)
        self.lost = tuple(lost)


@dataclasses.dataclass(frozen=True)
class Info:
    """This process's place in the run: ``process_id`` of ``num_processes`` (1: a single process)."""

    process_id: int = 0
    num_processes: int = 1
    coordinator: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def multiprocess(self) -> bool:
        """Whether several processes cooperate."""
        return self.num_processes > 1


_STATE: dict[str, Any] = {"info": None, "peers": {}, "counters": {}}


def _int_arg(value, name: str, low: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise DistributedError(f"{name} must be a whole number >= {low}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DistributedError(f"{name} must be a whole number >= {low}, got {value!r}")
    if value < low:
        raise DistributedError(f"{name} must be >= {low}, got {value}")
    return value


def check_coordinator(address) -> str:
    """``address`` if it is ``HOST:PORT`` (port 1..65535); a DistributedError naming it otherwise."""
    if not isinstance(address, str) or ":" not in address:
        raise DistributedError(f"coordinator must be HOST:PORT (e.g. 127.0.0.1:1234), got {address!r}")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise DistributedError(f"coordinator must be HOST:PORT with a port in 1..65535, got {address!r}")
    return address


def info() -> Info:
    """This process's :class:`Info` (one process when :func:`initialize` was not called or found nothing)."""
    got = _STATE["info"]
    if got is not None:
        return got
    import jax

    n = jax.process_count()
    return Info(jax.process_index(), n) if n > 1 else Info()


def is_multiprocess() -> bool:
    """Whether this process is one of several cooperating ones."""
    return info().multiprocess


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
               timeout: float = DEFAULT_TIMEOUT, heartbeat_timeout: int = DEFAULT_HEARTBEAT,
               shutdown_timeout: int = DEFAULT_SHUTDOWN, auto_detect: bool = True) -> Info:
    """Join a multi-process run (arguments, else ``JAX_*`` variables, else a scheduler's); call it first.

    ``coordinator``: ``HOST:PORT`` of process 0's coordination service; ``num_processes`` N,
    ``process_id`` in ``0..N-1``. Missing ones are read from ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``; when none is set anywhere and a scheduler is
    detected (:data:`CLUSTER_ENV`), ``jax.distributed.initialize()`` detects them; when none is set
    and there is no scheduler, the program stays one process (returns ``Info()``). ``timeout``
    (s) bounds joining; ``heartbeat_timeout`` (s): a process silent that long is declared dead and
    the others stop; CPU collectives go through gloo. Returns this process's :class:`Info`.
    Calling it again with the same values returns the same Info; other values are refused.
    """
    timeout = _seconds(timeout, "timeout")
    heartbeat_timeout = max(1, int(round(_seconds(heartbeat_timeout, "heartbeat_timeout"))))
    mode, coordinator, n, i = resolve(coordinator, num_processes, process_id, auto_detect=auto_detect)
    if mode == "auto":
        return _join(None, None, None, timeout, heartbeat_timeout, shutdown_timeout)
    if mode == "single":
        _STATE["info"] = _STATE["info"] or Info(0, 1, coordinator, timeout)
        return _STATE["info"]
    return _join(coordinator, n, i, timeout, heartbeat_timeout, shutdown_timeout)


def _seconds(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DistributedError(f"{name} must be a number of seconds > 0, got {value!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise DistributedError(f"{name} must be a number of seconds > 0, got {value!r}")
    return value


def resolve(coordinator=None, num_processes=None, process_id=None, *, auto_detect: bool = True, env=None):
    """What :func:`initialize` would do, checked but not done: ``(mode, coordinator, n, i)``.

    ``mode``: "single" (one process), "auto" (a scheduler's variables: JAX detects the rest) or
    "join" (``coordinator``, ``n`` processes, this one ``i``). Missing arguments are read from
    ``env`` (default ``os.environ``, read now). A bad or incomplete combination raises a
    :class:`DistributedError` naming the argument and its value.
    """
    env = os.environ if env is None else env
    coordinator = coordinator if coordinator is not None else env.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else env.get(ENV_NUM_PROCESSES) or None
    process_id = process_id if process_id is not None else env.get(ENV_PROCESS_ID) or None
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if not any(given):
        if auto_detect and any(v in env for v in CLUSTER_ENV):
            return "auto", None, None, None
        return "single", None, 1, 0
    n = _int_arg(num_processes, "num_processes (--num-processes / JAX_NUM_PROCESSES)", 1) \
        if num_processes is not None else None
    i = _int_arg(process_id, "process_id (--process-id / JAX_PROCESS_ID)", 0) if process_id is not None else None
    if coordinator is not None:
        check_coordinator(coordinator)
    if i is not None and n is not None and i >= n:
        raise DistributedError(f"process_id {i} is out of range for {n} process(es): use 0..{n - 1}")
    if n == 1 and i in (None, 0):
        return "single", coordinator, 1, 0
    missing = [name for name, g in zip(("coordinator (--coordinator / JAX_COORDINATOR_ADDRESS)",
                                        "num_processes (--num-processes / JAX_NUM_PROCESSES)",
                                        "process_id (--process-id / JAX_PROCESS_ID)"), given) if not g]
    if missing:
        raise DistributedError(f"a multi-process run needs the coordinator, the number of processes and this "
                               f"process's id; missing: {', '.join(missing)}")
    return "join", coordinator, n, i


def _join(coordinator, n, i, timeout, heartbeat_timeout, shutdown_timeout) -> Info:
    """jax.distributed.initialize with bounded waits; then every process's identity is exchanged."""
    import jax

    old = _STATE["info"]
    if old is not None and old.multiprocess:
        if (coordinator, n, i) in ((old.coordinator, old.num_processes, old.process_id), (None, None, None)):
            return old
        raise DistributedError(f"already joined as process {old.process_id} of {old.num_processes} "
                               f"(coordinator {old.coordinator}); cannot join again as {i} of {n} ({coordinator})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = f"the coordinator {coordinator}" if coordinator else "the scheduler's coordinator"
    hint = ("is process 0 running, is the address right and the port open?" if i else
            "is the port free, and did every other process start?")
    print(f"jigcnn.distributed: process {i if i is not None else '?'} of {n or '?'} joining {where} "
          f"(timeout {timeout:g} s)", file=sys.stderr, flush=True)
    # JAX's runtime terminates the process when joining times out (a C++ fatal error, no exception to catch):
    # a watchdog says why first, one line, and exits with status 2 before JAX's own deadline (timeout + 10 s)
    joined = threading.Event()

    def watchdog():
        if not joined.wait(timeout):
            print(f"jigcnn.distributed: error: process {'?' if i is None else i} of {n or '?'} could not join "
                  f"{where} within {timeout:g} s "
                  f"({hint})", file=sys.stderr, flush=True)
            os._exit(2)

    threading.Thread(target=watchdog, name="jigcnn-join-watchdog", daemon=True).start()
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=i,
                                   initialization_timeout=max(1, int(round(timeout))) + 10,
                                   heartbeat_timeout_seconds=int(heartbeat_timeout),
                                   shutdown_timeout_seconds=int(shutdown_timeout))
    except Exception as e:  # noqa: BLE001 - every failure to join is reported the same way
        raise DistributedError(f"process {'?' if i is None else i} of {n or '?'} could not join {where} within "
                               f"{timeout:g} s ({hint}): "
                               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        joined.set()
    got = Info(jax.process_index(), jax.process_count(), coordinator, timeout)
    if n is not None and got.num_processes != n:
        raise DistributedError(f"expected {n} processes but the runtime reports {got.num_processes}")
    _STATE["info"] = got
    _exchange_identities(got)
    return got


def _client():
    from jax._src import distributed as _d  # the coordination service's key-value store (no public door)

    client = _d.global_state.client
    if client is None:
        raise DistributedError("jigcnn.distributed.initialize() has not joined a multi-process run")
    return client


def _kv_set(key: str, value: str) -> None:
    _client().key_value_set(key, value)


def _kv_get(key: str, timeout: float, waiting_for: int, what: str) -> str:
    """The value of ``key``, waited for at most ``timeout`` s; DistributedError naming the process otherwise."""
    try:
        return _client().blocking_key_value_get(key, max(1, int(timeout * 1000)))
    except Exception as e:  # noqa: BLE001
        text = str(e)
        if "DEADLINE" in text.upper() or "timed out" in text.lower():
            lost = lost_processes()
            state = f"it is lost ({_describe(waiting_for)})" if waiting_for in lost else "it is alive but late"
            raise DistributedError(f"process {info().process_id}: process {waiting_for} did not reach {what} "
                                   f"within {timeout:g} s; {state} (did it fail earlier? see its output)") from None
        raise ProcessLostError(f"process {info().process_id}: the coordination service failed while waiting for "
                               f"process {waiting_for} at {what}: {text.splitlines()[0] if text else e!r}",
                               lost_processes()) from None


def _exchange_identities(me: Info) -> None:
    """Each process publishes (host, pid); every process reads all (a second process with one id is refused)."""
    ident = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
    key = f"jigcnn/identity/{me.process_id}"
    try:
        _kv_set(key, ident)
    except Exception as e:  # noqa: BLE001 - the store refuses a key set twice
        raise DistributedError(f"process id {me.process_id} was given to two processes (its identity is already "
                               f"registered: {e}); give each process its own --process-id") from None
    for p in range(me.num_processes):
        _STATE["peers"][p] = json.loads(_kv_get(f"jigcnn/identity/{p}", me.timeout, p, "the start"))


def _describe(p: int) -> str:
    peer = _STATE["peers"].get(p)
    return f"host {peer['host']} pid {peer['pid']}" if peer else "unknown host"


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def lost_processes(timeout: float | None = None) -> list[int]:
    """The ids of the run's processes known to be dead: on this host by their pid, elsewhere by the heartbeat."""
    me = info()
    if not me.multiprocess:
        return []
    host = socket.gethostname()
    lost, remote = [], []
    for p in range(me.num_processes):
        peer = _STATE["peers"].get(p)
        if p == me.process_id:
            continue
        if peer and peer["host"] == host:
            if not _pid_alive(int(peer["pid"])):
                lost.append(p)
        else:
            remote.append(p)
    if remote:
        try:
            live = _client().get_live_nodes(list(range(me.num_processes)))
            lost += [p for p in remote if p not in live]
        except Exception:  # noqa: BLE001 - the coordinator itself is gone
            if 0 in remote:
                lost.append(0)
    return sorted(lost)


FAILURE_SIGNS = ("gloo", "connection reset", "connection closed", "coordination", "unavailable", "heartbeat",
                 "barrier", "socket closed", "broken pipe")


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` looks like a collective or the coordination service failing (a peer died)."""
    text = str(exc).lower()
    return any(s in text for s in FAILURE_SIGNS)


def raise_if_lost(exc: BaseException, what: str = "training") -> None:
    """In a multi-process run, raise a :class:`ProcessLostError` naming the lost process when ``exc`` is a peer failure."""
    me = info()
    if not me.multiprocess or isinstance(exc, (ProcessLostError, UserError)) or not is_peer_failure(exc):
        return
    first = _first_line(exc)
    print(f"jigcnn.distributed: process {me.process_id} of {me.num_processes}: a collective operation failed "
          f"during {what} ({first}); looking for the lost process", file=sys.stderr, flush=True)
    lost = []
    deadline = time.monotonic() + 5.0
    while not lost and time.monotonic() < deadline:  # a killed peer is reaped within moments
        lost = lost_processes()
        if not lost:
            time.sleep(0.2)
    who = (", ".join(f"process {p} ({_describe(p)})" for p in lost) if lost
           else "another process (it stopped answering)")
    raise ProcessLostError(
        f"process {me.process_id} of {me.num_processes}: lost {who} during {what}; the run stops "
        f"(restart all {me.num_processes} processes with --resume / resume=True to continue from the last "
        f"checkpoint). The collective's error: {first}", lost) from exc


def exit_lost(exc: BaseException, prog: str = "jigcnn", status: int = 3) -> None:
    """Print ``prog: error: <exc>`` (one line) and end this process now with ``status``, skipping JAX's shutdown.

    After a lost process the runtime's shutdown barrier would wait for the dead peer and JAX's
    heartbeat would then terminate the process with a C++ fatal error; a program that caught a
    :class:`ProcessLostError` calls this instead of returning (``python -m jigcnn.train`` does).
    """
    print(f"{prog}: error: {str(exc).splitlines()[0] if str(exc) else repr(exc)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


def _first_line(exc: BaseException, limit: int = 240) -> str:
    """The error's first line without XLA's repeated ``Error dispatching computation:`` prefixes, shortened."""
    text = str(exc).splitlines()[0] if str(exc) else repr(exc)
    text = re.sub(r"(Error dispatching computation: )+", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def failure_guard(what: str = "training"):
    """In a multi-process run, turn a collective failure in the block into a :class:`ProcessLostError` naming the lost process."""
    try:
        yield
    except Exception as e:  # noqa: BLE001
        raise_if_lost(e, what)
        raise


def _next(name: str) -> int:
    n = _STATE["counters"].get(name, 0)
    _STATE["counters"][name] = n + 1
    return n


def config_digest(payload: Any) -> str:
    """SHA-256 of a JSON-able payload (sorted keys): what :func:`check_consistent` compares."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=repr).encode()).hexdigest()


def check_consistent(what: str, payload: dict, timeout: float | None = None) -> None:
    """Refuse to go on unless every process passed the same ``payload`` (a dict) here; a no-op for one process.

    Each process publishes the hash and the payload under a per-call key; each then reads every
    other's (at most ``timeout`` s each) and raises a :class:`DistributedError` naming the first
    process and the keys that differ.
    """
    me = info()
    if not me.multiprocess:
        return
    timeout = me.timeout if timeout is None else timeout
    call = _next(f"check/{what}")
    digest = config_digest(payload)
    base = f"jigcnn/check/{what}/{call}"
    _kv_set(f"{base}/{me.process_id}", json.dumps({"digest": digest, "payload": payload}, sort_keys=True,
                                                  default=repr))
    for p in range(me.num_processes):
        if p == me.process_id:
            continue
        other = json.loads(_kv_get(f"{base}/{p}", timeout, p, f"the {what} check"))
        if other["digest"] != digest:
            mine = json.loads(json.dumps(payload, sort_keys=True, default=repr))
            theirs = other["payload"]
            keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            detail = "; ".join(f"{k}: {_short(mine.get(k, '<absent>'))} here vs {_short(theirs.get(k, '<absent>'))} "
                               f"in process {p}" for k in keys[:4])
            raise DistributedError(f"process {me.process_id}: process {p} was started with another {what} "
                                   f"({detail}); start every process with the same arguments and data")


def _short(v, n: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def gather_json(what: str, value: Any, timeout: float | None = None, poll: float = 5.0) -> list:
    """Every process's ``value`` (JSON-able), in process order; waits while the others are alive (``timeout``: at most).

    ``timeout`` None waits as long as every other process is alive (checked every ``poll`` s):
    a lost process ends the wait with a :class:`ProcessLostError` naming it.
    """
    me = info()
    if not me.multiprocess:
        return [value]
    call = _next(f"gather/{what}")
    base = f"jigcnn/gather/{what}/{call}"
    _kv_set(f"{base}/{me.process_id}", json.dumps(value, default=repr))
    out = []
    start = time.monotonic()
    for p in range(me.num_processes):
        if p == me.process_id:
            out.append(json.loads(json.dumps(value, default=repr)))
            continue
        while True:
            try:
                got = _client().blocking_key_value_get(f"{base}/{p}", int(poll * 1000))
                break
            except Exception as e:  # noqa: BLE001
                if "deadline" not in str(e).lower() and "timed out" not in str(e).lower():
                    raise ProcessLostError(f"process {me.process_id}: the coordination service failed while "
                                           f"waiting for process {p}'s {what}: {str(e).splitlines()[0]}",
                                           lost_processes()) from None
                lost = lost_processes()
                if p in lost:
                    raise ProcessLostError(f"process {me.process_id}: lost process {p} ({_describe(p)}) while "
                                           f"waiting for its {what}", lost) from None
                if timeout is not None and time.monotonic() - start > timeout:
                    raise DistributedError(f"process {me.process_id}: process {p} did not deliver its {what} "
                                           f"within {timeout:g} s") from None
        out.append(json.loads(got))
    return out


def barrier(name: str, timeout: float | None = None) -> None:
    """Wait until every process reached ``barrier(name)`` (at most ``timeout`` s); a no-op for one process."""
    gather_json(f"barrier-{name}", None, timeout)


__all__ = ["DistributedError", "ProcessLostError", "Info", "initialize", "info", "is_multiprocess",
           "check_coordinator", "resolve", "check_consistent", "config_digest", "gather_json", "barrier", "lost_processes",
           "failure_guard", "raise_if_lost", "exit_lost", "is_peer_failure", "CLUSTER_ENV"]
