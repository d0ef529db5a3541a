"""A real one-node SLURM cluster on this machine, for tests (and for humans).

Recipe: /work/shared/notes/local-slurm.md (Debian 12, Slurm 22.05, munge, run as root).

    python -m tests.slurm_cluster start|stop|status

Tests use the session-scoped fixture::

    from tests.slurm_cluster import slurm_cluster  # noqa: F401

    def test_something(slurm_cluster, tmp_path):
        ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
        ex.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=5)

The fixture skips (with the reason) where a cluster cannot be started: not root, or the
packages `slurmctld slurmd slurm-client munge` are missing. Where it can (CI: root on Debian),
it runs for real, and a failure to bring the node to `idle` is an error with the daemons' log tails.

Everything the cluster writes lives under one scratch folder (``$GRAINSWEEP_SLURM_DIR``, default
``/tmp/grainsweep-slurm``): pid files, logs, slurmctld state, slurmd spool. The only files written
outside it are ``/etc/slurm/slurm.conf`` (a foreign one is backed up and restored by ``stop``) and,
where none exists, the munge key (``mungekey -c``), which is kept.

Daemons are stopped by pid (the pid files in the scratch folder), never by name; munged is stopped
only when this module started it (a munged that was already answering is reused and left alone).
A cluster left running by an earlier (crashed) run is stopped before a new one starts. A session
holds ``<scratch>/session.lock`` (flock) while its cluster runs, so a second concurrent session on the
same machine waits for it (up to ``$GRAINSWEEP_SLURM_LOCK_TIMEOUT`` s, default 600) rather than
stopping a cluster in use. Jobs still queued/running are cancelled before the daemons stop.

slurm.conf settings beyond the recipe, and why:
  * Node line from ``slurmd -C`` (real CPUs/sockets/cores/threads and RealMemory): a node that
    advertises more than slurmd finds is drained ("Low RealMemory", "Low socket*core*thread count").
  * ``SlurmctldHost=H(127.0.0.1)`` and ``NodeAddr=127.0.0.1``: no dependence on the host name
    resolving (fresh CI machines, containers).
  * ``SchedulerParameters=sched_interval=2,bf_interval=1,kill_invalid_depend``: the main scheduler
    and backfill run every 1-2 s instead of 60 s / 30 s, so array tasks, dependent jobs and requeued
    jobs start within seconds; ``kill_invalid_depend`` cancels a job whose dependency can never be
    satisfied (e.g. afterok on a failed job) instead of leaving it pending forever.
  * ``AuthInfo=cred_expire=10``: a requeued job (submitit's preemption/timeout path: ``scontrol
    requeue``) is held PENDING with Reason=BeginTime for cred_expire + 1 s before it may run again;
    the default 120 s would make every requeue test wait two minutes. (It is also the lifetime of a
    job-step launch credential; 10 s is plenty on one machine.)
  * ``KillWait=5``: 5 s (not 30 s) between SIGTERM and SIGKILL on scancel/time limit: faster teardown.
  * ``MinJobAge=300``: finished jobs stay visible to squeue/scontrol for 5 min (there is no
    accounting database, so sacct cannot tell their fate afterwards).
  * ``JobRequeue=1``: batch jobs are requeueable (submitit's preemption/timeout handling calls
    ``scontrol requeue``).
  * ``MailProg=/bin/true``: no mailer is installed.
  * ``ProctrackType=proctrack/linuxproc`` + ``TaskPlugin=task/none`` (from the recipe): no cgroups
    needed, which containers (gVisor here) and plain VMs without delegated cgroups may lack.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SCRATCH = Path(os.environ.get("GRAINSWEEP_SLURM_DIR", "/tmp/grainsweep-slurm"))
SLURM_CONF = Path("/etc/slurm/slurm.conf")
CONF_MARKER = "# written by grainsweep tests/slurm_cluster.py"
PARTITION = "debug"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
MUNGE_PIDFILE = Path("/run/munge/munged.pid")
MUNGE_KEY = Path("/etc/munge/munge.key")
REQUIRED_TOOLS = ("slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol", "scancel", "munged", "munge",
                  "unmunge")
# pid file name in the scratch folder -> expected /proc/<pid>/comm, in the order they are stopped
DAEMONS = (("slurmd.pid", "slurmd"), ("slurmctld.pid", "slurmctld"), ("munged.pid", "munged"))


class ClusterError(RuntimeError):
    pass


@dataclasses.dataclass
class SlurmCluster:
    """What the fixture yields."""

    scratch: Path  # all cluster state, logs, pid files
    partition: str  # the only partition (also the default one)
    hostname: str  # the node's name (NodeName)
    cpus: int  # CPUs of the node
    conf_path: Path = SLURM_CONF
    lock_fd: int | None = dataclasses.field(default=None, repr=False)  # session lock (see _acquire_lock)

    @property
    def jobs_dir(self) -> Path:
        """A local folder visible to jobs (same machine) for submitit folders and job outputs."""
        path = self.scratch / "jobs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_tail(self, lines: int = 30) -> str:
        return _log_tails(self.scratch, lines)

    def job_state(self, job_id: str) -> tuple[str, str]:
        """(JobState, Reason) from scontrol, e.g. ("PENDING", "Dependency"); ("", "") if unknown."""
        return job_state(job_id)


# --------------------------------------------------------------------------- helpers


def _run(cmd: list[str], timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"<cannot read: {e}>"


def _log_tails(scratch: Path, lines: int = 30) -> str:
    out = []
    for name in ("slurmctld.log", "slurmd.log", "slurmctld.stderr", "slurmd.stderr", "munged.stderr"):
        path = scratch / name
        if path.exists():
            out.append(f"--- {path} (last {lines} lines) ---\n{_tail(path, lines)}")
    return "\n".join(out) or f"<no logs under {scratch}>"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except (OSError, IndexError):
        return True


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop_pid(pid: int, name: str, timeout: float = 15, send: bool = True) -> None:
    """SIGTERM the process if it is still `name` (unless send=False: already sent), wait for it to go,
    SIGKILL after `timeout` seconds."""
    if not _pid_alive(pid) or _comm(pid) != name:
        return
    if send:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid) or _comm(pid) != name:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _munge_works() -> bool:
    try:
        cred = _run(["munge", "-n"], timeout=10)
        if cred.returncode != 0:
            return False
        return subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, text=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def hostname() -> str:
    return socket.gethostname().split(".")[0]


def skip_reason() -> str | None:
    """Why a cluster cannot be started here, or None if it can."""
    if sys.platform != "linux":
        return f"a local SLURM cluster needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "starting a local SLURM cluster needs root (munged, slurmctld, slurmd, /etc/slurm/slurm.conf)"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:
        return (f"SLURM/munge tools missing: {', '.join(missing)} "
                "(apt-get install -y slurmctld slurmd slurm-client munge)")
    return None


def _which(tool: str) -> str:
    return shutil.which(tool) or str(Path("/usr/sbin", tool))


def job_field(job_id: str, name: str) -> str:
    """One field (JobState, Reason, Restarts, Dependency, ...) of `scontrol show job`; '' when unknown."""
    res = _run(["scontrol", "-o", "show", "job", str(job_id)])
    if res.returncode != 0:
        return ""
    for line in res.stdout.splitlines()[:1]:
        for tok in line.split():
            if tok.startswith(name + "="):
                return tok.split("=", 1)[1]
    return ""


def job_state(job_id: str) -> tuple[str, str]:
    """(JobState, Reason) of a job from `scontrol show job`, ("", "") when slurmctld forgot it."""
    return job_field(job_id, "JobState"), job_field(job_id, "Reason")


def wait_for(predicate, timeout: float, what: str, debug=lambda: "", poll_s: float = 0.5):
    """The first truthy value of `predicate()`, polled every `poll_s`; fails the test (with `debug()`) after
    `timeout` seconds. Needs pytest."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{debug()}")


# --------------------------------------------------------------------------- config


def node_config() -> str:
    """The node's hardware as slurmd sees it (`slurmd -C`), e.g. 'CPUs=2 Boards=1 ... RealMemory=24105'."""
    res = _run([_which("slurmd"), "-C"], timeout=30)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("NodeName=")), None)
    if res.returncode != 0 or line is None:
        raise ClusterError(f"`slurmd -C` failed (rc {res.returncode}): {res.stdout}\n{res.stderr}")
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    parts = [tok for tok in line.split() if tok.split("=", 1)[0] in keep]
    return " ".join(parts)


def _cpus_of(node_line: str) -> int:
    for tok in node_line.split():
        if tok.startswith("CPUs="):
            return int(tok[5:])
    return os.cpu_count() or 1


def slurm_conf_text(scratch: Path, host: str, node_line: str) -> str:
    d = scratch
    return f"""{CONF_MARKER}; scratch folder {d}
# One-node test cluster: see tests/slurm_cluster.py for why each non-recipe setting is here.
ClusterName=grainsweep
SlurmctldHost={host}(127.0.0.1)
AuthType=auth/munge
# a requeued job waits cred_expire (default 120 s) before it may start again
AuthInfo=cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmdSpoolDir={d}/spool
StateSaveLocation={d}/state
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmUser=root
SlurmdUser=root
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
JobRequeue=1
# timing knobs (defaults: sched_interval=60, bf_interval=30, KillWait=30)
SchedulerParameters=sched_interval=2,bf_interval=1,kill_invalid_depend
KillWait=5
MinJobAge=300
NodeName={host} NodeAddr=127.0.0.1 {node_line} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


# --------------------------------------------------------------------------- munge


def _ensure_munge(scratch: Path) -> None:
    """Make sure a munged answers on the default socket; start one (and remember its pid) if none does."""
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        res = _run(["mungekey", "-c", "-k", str(MUNGE_KEY)], timeout=30)
        if res.returncode != 0:
            raise ClusterError(f"mungekey -c failed: {res.stderr}")
    for path in (MUNGE_KEY.parent, MUNGE_KEY, Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
        if path != MUNGE_KEY:
            path.mkdir(parents=True, exist_ok=True)
        shutil.chown(path, "munge", "munge")
    MUNGE_KEY.chmod(0o400)
    if _munge_works():  # a munged (system service, other run) already answers: reuse, never stop it
        return
    # stale socket / pid file from a dead munged would make the new one refuse to start
    old = _read_pid(MUNGE_PIDFILE)
    if old is None or not _pid_alive(old) or _comm(old) != "munged":
        for stale in (MUNGE_SOCKET, Path(str(MUNGE_SOCKET) + ".lock"), MUNGE_PIDFILE):
            stale.unlink(missing_ok=True)
    with open(scratch / "munged.stderr", "ab") as err:
        res = subprocess.run(["runuser", "-u", "munge", "--", _which("munged")], stdout=err, stderr=err,
                             timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not _munge_works():
        time.sleep(0.2)
    if not _munge_works():
        raise ClusterError(f"munged did not come up (rc {res.returncode}):\n{_tail(scratch / 'munged.stderr', 20)}\n"
                           f"{_tail(Path('/var/log/munge/munged.log'), 20)}")
    pid = _read_pid(MUNGE_PIDFILE)
    if pid is not None:
        (scratch / "munged.pid").write_text(f"{pid}\n")


# --------------------------------------------------------------------------- start / stop


def _cancel_all_jobs(timeout: float = 20) -> None:
    """Cancel every job of the (test) cluster so that no slurmstepd/job process outlives slurmd."""
    res = _run(["squeue", "-h", "-o", "%A"], timeout=15)
    ids = sorted(set(res.stdout.split())) if res.returncode == 0 else []
    if not ids:
        return
    _run(["scancel", *ids], timeout=15)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = _run(["squeue", "-h", "-t", "PD,R,CG,S,CF,RQ,RS,SE,SO,ST", "-o", "%A"], timeout=15)
        if res.returncode != 0 or not res.stdout.strip():
            return
        time.sleep(0.5)


def stop(scratch: Path = SCRATCH) -> list[str]:
    """Stop the daemons recorded in the scratch folder's pid files (by pid). Returns what was stopped."""
    stopped = []
    pids = {name: _read_pid(scratch / pidfile) for pidfile, name in DAEMONS}
    if pids["slurmctld"] and _pid_alive(pids["slurmctld"]) and _comm(pids["slurmctld"]) == "slurmctld":
        try:
            _cancel_all_jobs()
        except (OSError, subprocess.TimeoutExpired):
            pass
    # slurmd and slurmctld together (each takes ~2 s to exit), then munged
    for group in (("slurmd", "slurmctld"), ("munged",)):
        alive = [(pids[n], n) for n in group if pids[n] is not None and _pid_alive(pids[n]) and _comm(pids[n]) == n]
        for pid, name in alive:
            os.kill(pid, signal.SIGTERM)
        for pid, name in alive:
            _stop_pid(pid, name, send=False)  # waits; SIGKILL if still there after 15 s
            stopped.append(f"{name} (pid {pid})")
    for pidfile, _ in DAEMONS:
        (scratch / pidfile).unlink(missing_ok=True)
    backup = SLURM_CONF.with_name("slurm.conf.grainsweep-backup")
    if backup.exists():
        backup.replace(SLURM_CONF)
    return stopped


def status(scratch: Path = SCRATCH) -> dict[str, int | None]:
    """{daemon: pid or None} for the daemons recorded in the scratch folder."""
    out = {}
    for pidfile, name in DAEMONS:
        pid = _read_pid(scratch / pidfile)
        out[name] = pid if pid is not None and _pid_alive(pid) and _comm(pid) == name else None
    return out


def _node_state(host: str) -> str:
    res = _run(["sinfo", "-h", "-N", "-n", host, "-o", "%T"], timeout=15)
    return res.stdout.strip().lower() if res.returncode == 0 else ""


def _acquire_lock(scratch: Path, timeout: float) -> int:
    """flock scratch/session.lock so that two concurrent sessions on one machine take turns (they would
    share /etc/slurm/slurm.conf and ports 6817/6818) instead of stopping each other's cluster."""
    fd = os.open(scratch / "session.lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                os.close(fd)
                raise ClusterError(f"another session (pid {holder or '?'}) holds {scratch / 'session.lock'} "
                                   f"and its cluster; waited {timeout:.0f} s") from None
            time.sleep(1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release(cluster: SlurmCluster) -> None:
    if cluster.lock_fd is not None:
        os.close(cluster.lock_fd)  # closing drops the flock
        cluster.lock_fd = None


def start(scratch: Path = SCRATCH, timeout: float = 90, lock_timeout: float | None = None) -> SlurmCluster:
    """Start munged (if needed), slurmctld and slurmd; return once the node is idle.

    Holds scratch/session.lock until `release(cluster)` (or process exit); a concurrent session waits
    for it up to `lock_timeout` s (default $GRAINSWEEP_SLURM_LOCK_TIMEOUT or 600).
    """
    reason = skip_reason()
    if reason:
        raise ClusterError(reason)
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    if lock_timeout is None:
        lock_timeout = float(os.environ.get("GRAINSWEEP_SLURM_LOCK_TIMEOUT", "600"))
    lock_fd = _acquire_lock(scratch, lock_timeout)
    try:
        cluster = _start_locked(scratch, timeout)
    except BaseException:
        os.close(lock_fd)
        raise
    cluster.lock_fd = lock_fd
    return cluster


def _start_locked(scratch: Path, timeout: float) -> SlurmCluster:
    stop(scratch)  # a cluster left by an earlier run (pid files)
    for port in (6817, 6818):
        if _port_open(port):
            raise ClusterError(f"port {port} is in use by a process this module did not start (another slurmctld/"
                               f"slurmd?); stop it first (pid files under {scratch} name none running)")
    # fresh state: no jobs from an earlier run, no stale node state
    for sub in ("state", "spool"):
        shutil.rmtree(scratch / sub, ignore_errors=True)
        (scratch / sub).mkdir(parents=True)
    for log in ("slurmctld.log", "slurmd.log", "slurmctld.stderr", "slurmd.stderr", "munged.stderr"):
        (scratch / log).unlink(missing_ok=True)

    host = hostname()
    node_line = node_config()
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    if SLURM_CONF.exists() and CONF_MARKER not in SLURM_CONF.read_text(errors="replace"):
        SLURM_CONF.replace(SLURM_CONF.with_name("slurm.conf.grainsweep-backup"))
    SLURM_CONF.write_text(slurm_conf_text(scratch, host, node_line))

    cluster = SlurmCluster(scratch=scratch, partition=PARTITION, hostname=host, cpus=_cpus_of(node_line))
    try:
        _ensure_munge(scratch)
        for daemon in ("slurmctld", "slurmd"):
            with open(scratch / f"{daemon}.stderr", "ab") as err:
                # -i: ignore unreadable state; the daemons fork into the background themselves
                args = [_which(daemon)] + (["-i"] if daemon == "slurmctld" else [])
                res = subprocess.run(args, stdout=err, stderr=err, stdin=subprocess.DEVNULL, timeout=60)
            if res.returncode != 0:
                raise ClusterError(f"{daemon} exited with {res.returncode}")
            pidfile = scratch / f"{daemon}.pid"
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _read_pid(pidfile) is None:
                time.sleep(0.1)
            if _read_pid(pidfile) is None:
                raise ClusterError(f"{daemon} wrote no pid file {pidfile}")
        _wait_idle(cluster, timeout)
    except BaseException as e:
        tails = _log_tails(scratch)
        stop(scratch)
        if isinstance(e, ClusterError):
            raise ClusterError(f"{e}\n{tails}") from None
        raise
    return cluster


def _wait_idle(cluster: SlurmCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    resumed_at = 0.0
    state = ""
    while time.monotonic() < deadline:
        for name, pid in status(cluster.scratch).items():
            if name != "munged" and pid is None:
                raise ClusterError(f"{name} died while waiting for the node to become idle")
        state = _node_state(cluster.hostname)
        if state == "idle":
            return
        # after a restart the node may come back down/drained: resume it (at most every 5 s)
        if any(s in state for s in ("down", "drain", "fail")) and time.monotonic() - resumed_at > 5:
            _run(["scontrol", "update", f"nodename={cluster.hostname}", "state=resume"], timeout=15)
            resumed_at = time.monotonic()
        time.sleep(0.3)
    reason = _run(["sinfo", "-h", "-R"], timeout=15).stdout.strip()
    raise ClusterError(f"node {cluster.hostname} not idle after {timeout:.0f} s (state {state!r}, reason {reason!r})")


# --------------------------------------------------------------------------- pytest fixture

try:
    import pytest
except ImportError:  # the CLI works without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    # Several test modules import the fixture, so pytest may hold one FixtureDef per module: share one
    # cluster per process (reference count) instead of restarting it for each module.
    _SHARED: dict = {"cluster": None, "users": 0}

    @pytest.fixture(scope="session")
    def slurm_cluster():
        """A running one-node cluster for the whole test session; stopped (by pid) at the end."""
        reason = skip_reason()
        if reason:
            pytest.skip(reason)
        cluster = _SHARED["cluster"]
        if cluster is None or status(cluster.scratch)["slurmctld"] is None:
            if cluster is not None:
                release(cluster)
            try:
                cluster = _SHARED["cluster"] = start(SCRATCH)
            except ClusterError as e:
                pytest.fail(f"could not start the local SLURM cluster: {e}", pytrace=False)
        _SHARED["users"] += 1
        try:
            yield cluster
        finally:
            _SHARED["users"] -= 1
            if _SHARED["users"] == 0:
                _SHARED["cluster"] = None
                try:
                    stop(cluster.scratch)
                finally:
                    release(cluster)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.slurm_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--dir", type=Path, default=SCRATCH, help=f"scratch folder (default {SCRATCH})")
    args = parser.parse_args(argv)
    if args.command == "start":
        try:
            c = start(args.dir)
        except ClusterError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"cluster up: node {c.hostname} ({c.cpus} CPUs) idle, partition {c.partition}, scratch {c.scratch}")
        print(f"stop it with: python -m tests.slurm_cluster stop --dir {c.scratch}")
    elif args.command == "stop":
        stopped = stop(args.dir)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    else:
        st = status(args.dir)
        for name, pid in st.items():
            print(f"{name}: {'running, pid %d' % pid if pid else 'not running (from ' + str(args.dir) + ')'}")
        if st["slurmctld"]:
            print(_run(["sinfo"], timeout=15).stdout.rstrip())
            print(_run(["squeue"], timeout=15).stdout.rstrip())
        return 0 if st["slurmctld"] and st["slurmd"] else 3
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. `status | head`
        sys.exit(0)
