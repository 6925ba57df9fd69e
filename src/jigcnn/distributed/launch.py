"""`python -m jigcnn.distributed.launch -n N [--port P] -- COMMAND...`: N cooperating processes on this machine.

Each process gets ``JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT``, ``JAX_NUM_PROCESSES=N`` and
``JAX_PROCESS_ID=i`` (read by :func:`jigcnn.distributed.initialize`, so ``python -m jigcnn.train``
needs no flags), and ``{process_id}`` / ``{num_processes}`` / ``{coordinator}`` in COMMAND are
replaced (``--out run_{process_id}.json``). The port is a free one chosen now unless ``--port``
names one. Each line a process prints is forwarded with a ``[p<i>]`` prefix. When a process
fails, the others are stopped (SIGTERM, then SIGKILL after ``--grace`` seconds) and its status
is returned; 0 when all succeed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

PROG = "python -m jigcnn.distributed.launch"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (bound to 0, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _forward(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, b""):
        out.write(f"{prefix}{line.decode(errors='replace')}")
        out.flush()
    stream.close()


def launch(command: list[str], n: int, *, port: int | None = None, host: str = "127.0.0.1", grace: float = 5.0,
           env: dict | None = None, out=None, timeout: float | None = None) -> int:
    """Run ``command`` as ``n`` processes of one run (see the module docstring); returns the exit status."""
    if n < 1:
        raise ValueError(f"-n must be >= 1, got {n}")
    if not command:
        raise ValueError("no command given (put it after --)")
    out = sys.stdout if out is None else out
    port = free_port(host) if port is None else port
    coordinator = f"{host}:{port}"
    procs, threads = [], []
    for i in range(n):
        e = dict(os.environ if env is None else env)
        e.update({"JAX_COORDINATOR_ADDRESS": coordinator, "JAX_NUM_PROCESSES": str(n), "JAX_PROCESS_ID": str(i),
                  "PYTHONUNBUFFERED": "1"})
        argv = [a.replace("{process_id}", str(i)).replace("{num_processes}", str(n))
                .replace("{coordinator}", coordinator) for a in command]
        p = subprocess.Popen(argv, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        t = threading.Thread(target=_forward, args=(p.stdout, f"[p{i}] ", out), daemon=True)
        t.start()
        threads.append(t)
    status, failed = 0, None
    start = time.monotonic()
    try:
        while True:
            codes = [p.poll() for p in procs]
            bad = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                failed, status = bad[0]
                break
            if all(c == 0 for c in codes):
                break
            if timeout is not None and time.monotonic() - start > timeout:
                failed, status = None, 124
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        status = 130
    if status:
        _stop([p for p in procs if p.poll() is None], grace)
        how = f"was killed by {_signal_name(-status)}" if status < 0 else f"exited with status {status}"
        who = f"process {failed} {how}" if failed is not None else \
            f"timed out after {timeout:g} s" if status == 124 else "interrupted"
        print(f"{PROG}: {who}; stopped the others", file=sys.stderr, flush=True)
    for t in threads:
        t.join(timeout=2)
    return status if status >= 0 else 128 - status


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _stop(procs, grace: float) -> None:
    for p in procs:
        with _suppress():
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with _suppress():
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (ProcessLookupError, PermissionError))


def main(argv=None) -> int:
    """The command line; returns the exit status of the run (the first failing process's, else 0)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" in argv:
        cut = argv.index("--")
        mine, command = argv[:cut], argv[cut + 1:]
    else:
        mine, command = argv, []
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--num-processes", type=int, required=True, help="number of processes, >= 1")
    ap.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    ap.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL (default: 5)")
    ap.add_argument("--timeout", type=float, default=None, help="stop every process after this many seconds")
    args = ap.parse_args(mine)
    if args.num_processes < 1:
        ap.error(f"-n must be >= 1, got {args.num_processes}")
    if not command:
        ap.error("no command: put it after --, e.g. -n 2 -- python -m jigcnn.train --net lenet5")
    return launch(command, args.num_processes, port=args.port, grace=args.grace, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
