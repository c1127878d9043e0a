#!/usr/bin/env python3
"""End-to-end benchmark of Spooky against Caddy and direct nginx (run by benches/e2e.sh).

Starts nginx HTTP/1.1 backends, two HTTP/3 static servers (benches/src/bin/h3server.rs),
Spooky (mio and tokio runtimes), Caddy (reverse_proxy and file_server, both HTTP/3), runs the
workloads with `loadgen` pinned to one core and the servers to the other, alternating the
systems round by round, and writes docs/benchmarks.md.

Only the Python standard library is used. Every process started here is recorded with its
PID in WORK/pids (read by the EXIT trap of benches/e2e.sh) and stopped by PID at the end.

Configuration is read from E2E_* environment variables; see benches/e2e.sh for the list.
"""

import datetime
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import string
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# --------------------------------------------------------------------------------------------
# Settings


def env_num(name, default, kind=float):
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        sys.exit(f"e2e: {name}={value!r} is not a number")


QUICK = os.environ.get("E2E_QUICK", "") not in ("", "0")
ROUNDS = env_num("E2E_ROUNDS", 1 if QUICK else 3, int)
DURATION = env_num("E2E_DURATION", 3.0 if QUICK else 10.0)
WARMUP = env_num("E2E_WARMUP", 1.0 if QUICK else 2.0)
BIG_REQUESTS = env_num("E2E_BIG_REQUESTS", 2 if QUICK else 8, int)
IDLE_CONNECTIONS = env_num("E2E_IDLE_CONNECTIONS", 2000 if QUICK else 10000, int)
IDLE_HOLD = env_num("E2E_IDLE_HOLD", 3.0 if QUICK else 5.0)
PORT_BASE = env_num("E2E_PORT_BASE", 18000, int)
LOADGEN_CPU = os.environ.get("E2E_LOADGEN_CPU", "0")
SERVER_CPU = os.environ.get("E2E_SERVER_CPU", "1")
ALL_WORKLOADS = ["throughput", "16k", "latency", "100m", "h3", "halfload", "idle"]
WORKLOADS = [w for w in os.environ.get("E2E_WORKLOADS", ",".join(ALL_WORKLOADS)).split(",") if w]
OUT = os.environ.get("E2E_OUT", os.path.join(ROOT, "docs", "benchmarks.md"))
RESULTS = os.environ.get("E2E_RESULTS", os.path.join(ROOT, "target", "e2e", "results.json"))
# This machine is shared: other builds and tests run in other containers on the same two cores,
# invisible except through /proc/stat. Before each run, wait (bounded) until the cores are
# quiet; rerun a run during which much else ran. Both are limited by a total time budget.
QUIET_SHARE = env_num("E2E_QUIET_SHARE", 0.10)
QUIET_WAIT = env_num("E2E_QUIET_WAIT", 5.0 if QUICK else 20.0)
MAX_FOREIGN = env_num("E2E_MAX_FOREIGN", 0.20)
RETRIES = env_num("E2E_RETRIES", 0 if QUICK else 1, int)
NOISE_BUDGET = env_num("E2E_NOISE_BUDGET", 60.0 if QUICK else 360.0)
WORK = os.environ.get("E2E_WORKDIR", "")
COMMAND = os.environ.get("E2E_COMMAND", "benches/e2e.sh")
# benches/e2e.sh copies the binaries here, so that builds running meanwhile cannot swap them.
BIN = os.environ.get("E2E_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
SPOOKY = os.path.join(BIN, "spooky")
LOADGEN = os.path.join(BIN, "loadgen")
H3SERVER = os.path.join(BIN, "h3server")

# Shapes (connections x streams). HTTP/1.1 opens connections x streams connections.
SHAPES = {
    "throughput": {"h3": (32, 4), "h1": (128, 1)},
    "16k": {"h3": (16, 4), "h1": (64, 1)},
    "latency": {"h3": (1, 1), "h1": (1, 1)},
    "100m": {"h3": (1, 1), "h1": (1, 1)},
    "h3": {"h3": (32, 4), "h1": (128, 1)},
    "h3-latency": {"h3": (1, 1), "h1": (1, 1)},
    # Open loop: the pool of senders (ample for half the closed-loop maximum).
    "halfload": {"h3": (32, 4), "h1": (128, 1)},
}

PORTS = {
    "nginx-a": PORT_BASE + 1,
    "nginx-b": PORT_BASE + 2,
    "spooky-mio": PORT_BASE + 10,
    "spooky-tokio": PORT_BASE + 11,
    "spooky-mio-h3": PORT_BASE + 12,
    "spooky-tokio-h3": PORT_BASE + 13,
    "spooky-mio-idle": PORT_BASE + 14,
    "spooky-tokio-idle": PORT_BASE + 15,
    "caddy": PORT_BASE + 20,
    "caddy-files": PORT_BASE + 21,
    "caddy-idle": PORT_BASE + 22,
    "h3server-a": PORT_BASE + 31,
    "h3server-b": PORT_BASE + 32,
}

TITLES = {
    "spooky-mio": "Spooky (mio, 1 shard)",
    "spooky-tokio": "Spooky (tokio)",
    "caddy": "Caddy reverse_proxy",
    "nginx-a": "nginx A direct (HTTP/1.1)",
    "nginx-b": "nginx B direct (HTTP/1.1)",
    "caddy-files": "Caddy file_server direct (HTTP/3)",
    "h3server-a": "h3server direct (HTTP/3, from memory)",
    "spooky-mio-h3": "Spooky (mio) -> 2 x h3server",
    "spooky-tokio-h3": "Spooky (tokio) -> 2 x h3server",
    "spooky-mio-idle": "Spooky (mio, 1 shard)",
    "spooky-tokio-idle": "Spooky (tokio)",
    "caddy-idle": "Caddy reverse_proxy",
}


def log(message):
    stamp = time.strftime("%H:%M:%S")
    print(f"[e2e {stamp}] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Processes


class Processes:
    """Every process this script starts, by name; PIDs also go to WORK/pids for the trap."""

    def __init__(self, work):
        self.work = work
        self.procs = {}  # name -> Popen
        self.extra = {}  # name -> [pid] (nginx workers)
        self.pidfile = os.path.join(work, "pids")
        self.logs = {}

    def _note_pid(self, pid, name):
        with open(self.pidfile, "a") as f:
            f.write(f"{pid} {name}\n")

    def start(self, name, argv, env=None, cpu=SERVER_CPU):
        logfile = os.path.join(self.work, "logs", f"{name}.log")
        os.makedirs(os.path.dirname(logfile), exist_ok=True)
        out = open(logfile, "ab")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        # taskset execs the program: the PID is the program's.
        proc = subprocess.Popen(
            ["taskset", "-c", cpu] + argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=self.work,
        )
        out.close()
        self.procs[name] = proc
        self.logs[name] = logfile
        self._note_pid(proc.pid, name)
        return proc

    def pid(self, name):
        proc = self.procs.get(name)
        return proc.pid if proc and proc.poll() is None else None

    def alive(self, name):
        return self.pid(name) is not None

    def add_extra(self, name, pid):
        self.extra.setdefault(name, []).append(pid)
        self._note_pid(pid, f"{name}-child")

    def log_tail(self, name, lines=15):
        try:
            with open(self.logs[name], "rb") as f:
                data = f.read()[-8000:].decode("utf-8", "replace")
            return "\n".join(data.strip().splitlines()[-lines:])
        except (KeyError, OSError):
            return ""

    def stop(self, name):
        proc = self.procs.pop(name, None)
        extra = self.extra.pop(name, [])
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for pid in extra:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def task_ticks():
    """(user + nice + system, total) ticks summed over the cores."""
    task = total = 0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                v = [int(x) for x in line.split()[1:9]]
                task += v[0] + v[1] + v[2]
                total += sum(v)
    return task, total


class Quiet:
    """Waits for the machine to be quiet, within a total budget for the whole run."""

    def __init__(self):
        self.spent = 0.0
        self.waits = 0

    def left(self):
        return max(0.0, NOISE_BUDGET - self.spent)

    def wait(self):
        """Returns the share of the cores busy with tasks in the last half second."""
        started = time.monotonic()
        deadline = started + min(QUIET_WAIT, self.left())
        while True:
            a = task_ticks()
            time.sleep(0.5)
            b = task_ticks()
            share = (b[0] - a[0]) / max(1, b[1] - a[1])
            if share <= QUIET_SHARE or time.monotonic() >= deadline:
                break
        waited = time.monotonic() - started
        if waited > 1.0:
            self.spent += waited - 0.5
            self.waits += 1
        return share


def wait_tcp(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------
# The load generator


class Loadgen:
    def __init__(self, procs, cert):
        self.procs = procs
        self.cert = cert
        self.commands = {}  # (workload, system) -> command line (first round)

    def argv(self, url, shape=(1, 1), http1=False, duration=None, warmup=None, requests=None,
             rate=None, watch=(), extra=()):
        c, s = shape
        args = [LOADGEN, url, "-c", str(c), "-s", str(s), "-t", "1"]
        if http1:
            args.append("--http1")
        else:
            args += ["--ca", self.cert]
        if duration is not None:
            args += ["-d", f"{duration:g}s"]
        if warmup is not None:
            args += ["-w", f"{warmup:g}s"]
        if requests is not None:
            args += ["-n", str(requests)]
        if rate is not None:
            args += ["--rate", f"{rate:.0f}"]
        for pid in watch:
            args += ["--watch-pid", str(pid)]
        args += list(extra)
        args.append("--json")
        return args

    def run(self, args, timeout):
        """Runs loadgen pinned to the load generator's core; returns (report or None, error)."""
        argv = ["taskset", "-c", LOADGEN_CPU] + args
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        self.procs._note_pid(proc.pid, "loadgen")
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
            return None, f"loadgen did not finish within {timeout:.0f} s"
        err_text = err.decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            return None, f"loadgen exited with {proc.returncode}: {err_text[-500:]}"
        try:
            return json.loads(out.decode().strip().splitlines()[-1]), None
        except (ValueError, IndexError):
            return None, f"loadgen printed no JSON: {out[-300:]!r} {err_text[-300:]}"

    def probe(self, url, http1=False, timeout=15.0):
        """Waits until one request to `url` succeeds (bounded)."""
        deadline = time.monotonic() + timeout
        last = "not tried"
        while time.monotonic() < deadline:
            args = self.argv(url, http1=http1, requests=1, duration=3,
                             extra=["--connect-timeout", "1s", "--grace", "1s"])
            report, error = self.run(args, timeout=10)
            if report and report.get("requests") == 1:
                return None
            last = error or f"probe answered {json.dumps(report)[:300]}"
            time.sleep(0.3)
        return last


def display_cmd(argv, work):
    """A command line for the report, with the work directory and build paths shortened."""
    text = " ".join(shlex.quote(a) for a in argv)
    text = text.replace(BIN + "/", "target/release/")
    return text.replace(work + "/bin/", "target/release/").replace(work, "$WORK")


# --------------------------------------------------------------------------------------------
# Systems


class Bench:
    def __init__(self, work):
        self.work = work
        self.procs = Processes(work)
        self.cert = os.path.join(work, "cert.pem")
        self.key = os.path.join(work, "key.pem")
        self.data = os.path.join(work, "data")
        self.loadgen = Loadgen(self.procs, self.cert)
        self.unavailable = {}  # system -> reason
        self.results = []  # every measurement
        self.notes = []  # odd things seen
        self.quiet = Quiet()
        self.retried = 0

    # ---- setup

    def render(self, template, target, **values):
        with open(os.path.join(HERE, template)) as f:
            text = string.Template(f.read()).substitute(**values)
        path = os.path.join(self.work, target)
        with open(path, "w") as f:
            f.write(text)
        return path

    def prepare(self):
        os.makedirs(self.data, exist_ok=True)
        with open(os.path.join(self.data, "16k"), "wb") as f:
            f.write(b"x" * 16384)
        with open(os.path.join(self.data, "100m"), "wb") as f:
            block = b"x" * (1 << 20)
            for _ in range(100):
                f.write(block)
        if not os.path.exists(self.cert):
            subprocess.run([SPOOKY, "gen-cert", "--dir", self.work, "--force"], check=True,
                           stdout=subprocess.DEVNULL)

    def url(self, system, path):
        port = PORTS[system]
        if system.startswith("nginx"):
            return f"http://127.0.0.1:{port}{path}"
        return f"https://127.0.0.1:{port}{path}"

    def start_nginx(self, name):
        prefix = os.path.join(self.work, name)
        for sub in ("", "tmp", "logs"):
            os.makedirs(os.path.join(prefix, sub), exist_ok=True)
        conf = self.render("nginx.conf.in", f"{name}.conf", prefix=prefix, port=PORTS[name],
                           data=self.data)
        proc = self.procs.start(name, ["nginx", "-p", prefix + "/", "-c", conf])
        if not wait_tcp(PORTS[name]):
            return f"nginx did not listen on {PORTS[name]}: {self.procs.log_tail(name)}"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not children(proc.pid):
            time.sleep(0.05)
        workers = children(proc.pid)
        if len(workers) != 1:
            return f"expected one nginx worker, found {workers}"
        self.procs.add_extra(name, workers[0])
        return None

    def worker_pid(self, name):
        """The process that does the work: nginx's worker, otherwise the process itself."""
        if name.startswith("nginx"):
            workers = self.procs.extra.get(name, [])
            return workers[0] if workers else None
        return self.procs.pid(name)

    def start_h3server(self, name):
        self.procs.start(name, [H3SERVER, "--port", str(PORTS[name]), "--cert", self.cert,
                                "--key", self.key])
        return self.loadgen.probe(self.url(name, "/"))

    def spooky_config(self, name, kind, backends, client_idle="30s", max_connections=100000):
        if backends == "h1":
            lines = [f'  - {{ id: nginx-a, address: "127.0.0.1:{PORTS["nginx-a"]}" }}',
                     f'  - {{ id: nginx-b, address: "127.0.0.1:{PORTS["nginx-b"]}" }}']
        else:
            lines = []
            for b in ("h3server-a", "h3server-b"):
                lines.append(f'  - id: {b}\n    address: "127.0.0.1:{PORTS[b]}"\n'
                             f'    protocol: http3\n    tls: {{ ca: {self.cert} }}')
        return self.render("spooky.yaml.in", f"{name}.yaml", port=PORTS[name], cert=self.cert,
                           key=self.key, backends="\n".join(lines), client_idle=client_idle,
                           max_connections=max_connections, kind=kind)

    def start_spooky(self, name, kind, backends="h1", **config):
        path = self.spooky_config(name, kind, backends, **config)
        self.procs.start(name, [SPOOKY, "run", "-c", path, "--runtime", kind],
                         env={"RUST_LOG": "warn"})
        error = self.loadgen.probe(self.url(name, "/"))
        if error and not self.procs.alive(name):
            error = f"exited: {self.procs.log_tail(name)}"
        return error

    def start_caddy(self, name, template, **values):
        home = os.path.join(self.work, name)
        os.makedirs(home, exist_ok=True)
        conf = self.render(template, f"{name}.Caddyfile", port=PORTS[name], cert=self.cert,
                           key=self.key, storage=os.path.join(home, "storage"), **values)
        env = {"HOME": home, "XDG_DATA_HOME": os.path.join(home, "data"),
               "XDG_CONFIG_HOME": os.path.join(home, "config")}
        self.procs.start(name, ["caddy", "run", "--config", conf, "--adapter", "caddyfile"],
                         env=env)
        error = self.loadgen.probe(self.url(name, "/100m" if name == "caddy-files" else "/"))
        if error and not self.procs.alive(name):
            error = f"exited: {self.procs.log_tail(name)}"
        return error

    def start_system(self, name):
        if name in self.unavailable or self.procs.alive(name):
            return
        if name == "spooky-mio":
            error = self.start_spooky(name, "mio")
        elif name == "spooky-tokio":
            error = self.start_spooky(name, "tokio")
        elif name == "spooky-mio-h3":
            error = self.start_spooky(name, "mio", backends="h3")
        elif name == "spooky-tokio-h3":
            error = self.start_spooky(name, "tokio", backends="h3")
        elif name == "caddy":
            error = self.start_caddy(name, "Caddyfile.proxy.in", backend_a=PORTS["nginx-a"],
                                     backend_b=PORTS["nginx-b"])
        elif name == "caddy-files":
            error = self.start_caddy(name, "Caddyfile.files.in", data=self.data)
        else:
            raise ValueError(name)
        if error:
            log(f"{name} is not available: {error}")
            self.unavailable[name] = error
            self.procs.stop(name)

    def start_backends(self):
        for name in ("nginx-a", "nginx-b"):
            error = self.start_nginx(name)
            if error:
                raise SystemExit(f"e2e: {name}: {error}")
        for name in ("h3server-a", "h3server-b"):
            error = self.start_h3server(name)
            if error:
                log(f"{name} is not available: {error}")
                self.unavailable[name] = error
        # Check the bodies once.
        for path, size in (("/", 13), ("/16k", 16384), ("/100m", 100 << 20)):
            for name in ("nginx-a", "h3server-a"):
                if name in self.unavailable:
                    continue
                report, error = self.loadgen.run(
                    self.loadgen.argv(self.url(name, path), http1=name.startswith("nginx"),
                                      requests=1, duration=10), timeout=30)
                if not report or report["body_bytes"] != size:
                    raise SystemExit(f"e2e: {name}{path} should have a {size}-byte body: "
                                     f"{error or report}")

    # ---- measuring

    def measure(self, workload, system, rnd, path, shape_key=None, requests=None, rate=None,
                label=None, rate_of=None):
        """One loadgen run against `system`; appends the result and returns it."""
        label = label or system
        target = system
        if system in self.unavailable:
            return None
        http1 = system.startswith("nginx")
        pid = self.worker_pid(system)
        if pid is None:
            self.unavailable[system] = f"not running ({self.procs.log_tail(system)})"
            log(f"{system} is not running any more")
            return None
        watch = [pid] + self.backend_pids(system)
        shape = SHAPES[shape_key or workload]["h1" if http1 else "h3"]
        if requests is not None:
            # No warm-up: the CPU readings then cover exactly the measured downloads.
            args = self.loadgen.argv(self.url(target, path), shape, http1, duration=120,
                                     warmup=0, requests=requests, watch=watch,
                                     extra=["--grace", "5s"])
            timeout = 200
        else:
            args = self.loadgen.argv(self.url(target, path), shape, http1, duration=DURATION,
                                     warmup=WARMUP, rate=rate, watch=watch)
            timeout = WARMUP + DURATION + 60
        key = (workload, label)
        if key not in self.loadgen.commands:
            self.loadgen.commands[key] = display_cmd(["taskset", "-c", LOADGEN_CPU] + args,
                                                     self.work)
        best = None
        for attempt in range(RETRIES + 1):
            quiet_before = self.quiet.wait()
            started = time.monotonic()
            reset_peak_rss(pid)
            result = self.attempt(args, timeout, workload, system, label, rnd, pid, rate,
                                  rate_of, requests)
            result["attempt"] = attempt
            result["load_before"] = quiet_before
            foreign = result.get("foreign_share")
            if best is None or (foreign or 0) < (best.get("foreign_share") or 0):
                best = result
            if (foreign is None or foreign <= MAX_FOREIGN or attempt == RETRIES
                    or result["error"] or not result["alive_after"]
                    or self.quiet.left() <= 0):
                break
            self.retried += 1
            self.quiet.spent += time.monotonic() - started
            log(f"  {workload} {label} r{rnd}: {foreign * 100:.0f}% of the CPU went to other "
                "processes; running it again")
        self.results.append(best)
        if best["error"]:
            self.notes.append(f"{workload} / {label} round {rnd}: {best['error']}")
        time.sleep(0.3)
        return best

    def attempt(self, args, timeout, workload, system, label, rnd, pid, rate, rate_of,
                requests):
        report, error = self.loadgen.run(args, timeout)
        alive = self.procs.alive(system) if not system.startswith("nginx") else pid_alive(pid)
        result = {"workload": workload, "system": label, "sut": system, "round": rnd,
                  "report": report, "error": error, "alive_after": alive, "rate": rate,
                  "rate_of": rate_of}
        if report:
            watched = report.get("watched") or []
            me = watched[0] if watched else {}
            result["cpu_s"] = me.get("cpu_s")
            result["hwm_kb"] = me.get("hwm_kb")
            busy = report.get("cpu_busy") or []
            result["cpu_busy"] = busy
            task = report.get("cpu_task") or []
            ours = (report.get("loadgen_cpu_s") or 0) + sum(w.get("cpu_s") or 0 for w in watched)
            window = report.get("duration_s") or 0
            if task and window > 0 and requests is None:
                # Other builds and tests share this machine: task time on the cores that
                # neither the generator nor the system under test (with its backends) used.
                result["foreign_share"] = max(0.0, sum(task) * window - ours) / (len(task) *
                                                                                 window)
        if error:
            log(f"  {workload} {label} round {rnd}: ERROR {error}")
        else:
            r = report
            extra = f", {r['mbps'] * 8 / 1000:.2f} Gbit/s" if workload == "100m" else ""
            foreign = result.get("foreign_share")
            log(f"  {workload:<10} {label:<28} r{rnd}: {r['rps']:>10.1f} req/s{extra}  "
                f"p50 {r['p50_us']} us  p99 {r['p99_us']} us  errors {r['errors']}"
                + (f"  late {r.get('late')}" if rate else "")
                + (f"  other load {foreign * 100:.0f}%" if foreign is not None else ""))
        if not alive:
            msg = f"{system} died during {workload} round {rnd}: {self.procs.log_tail(system)}"
            log(msg)
            self.notes.append(msg)
            self.unavailable[system] = msg
        return result

    def backend_pids(self, system):
        """The backends' working processes (their CPU counts as ours, not as foreign load)."""
        if system.startswith("spooky") and system.endswith("-h3"):
            names = ["h3server-a", "h3server-b"]
        elif system.startswith("spooky") or system == "caddy":
            names = ["nginx-a", "nginx-b"]
        else:
            names = []
        return [p for p in (self.worker_pid(n) for n in names) if p]

    # ---- the plan

    def rotate(self, systems, rnd):
        k = rnd % len(systems)
        return systems[k:] + systems[:k]

    def run_rounds(self):
        proxies = ["spooky-mio", "spooky-tokio", "caddy", "caddy-files", "spooky-mio-h3",
                   "spooky-tokio-h3"]
        for rnd in range(ROUNDS):
            log(f"round {rnd + 1} of {ROUNDS}")
            for p in proxies:
                self.start_system(p)
            if "throughput" in WORKLOADS:
                for s in self.rotate(["spooky-mio", "spooky-tokio", "caddy", "nginx-a",
                                      "nginx-b"], rnd):
                    self.measure("throughput", s, rnd, "/")
            if "16k" in WORKLOADS:
                for s in self.rotate(["spooky-mio", "spooky-tokio", "caddy", "nginx-a",
                                      "nginx-b"], rnd):
                    self.measure("16k", s, rnd, "/16k")
            if "latency" in WORKLOADS:
                for s in self.rotate(["spooky-mio", "spooky-tokio", "caddy", "nginx-a"], rnd):
                    self.measure("latency", s, rnd, "/")
            if "100m" in WORKLOADS:
                for s in self.rotate(["spooky-mio", "spooky-tokio", "caddy", "caddy-files",
                                      "h3server-a", "nginx-a"], rnd):
                    self.measure("100m", s, rnd, "/100m", requests=BIG_REQUESTS)
            if "h3" in WORKLOADS:
                for s in self.rotate(["spooky-mio-h3", "spooky-tokio-h3", "h3server-a"], rnd):
                    self.measure("h3", s, rnd, "/")
                for s in self.rotate(["spooky-mio-h3", "spooky-tokio-h3", "h3server-a"], rnd):
                    self.measure("h3-latency", s, rnd, "/")
            for p in proxies:
                self.procs.stop(p)

    def max_rps(self, system):
        values = [r["report"]["rps"] for r in self.results
                  if r["workload"] == "throughput" and r["sut"] == system and r["report"]]
        return statistics.median(values) if values else None

    def run_halfload(self):
        proxies = ["spooky-mio", "spooky-tokio", "caddy"]
        rates = {p: self.max_rps(p) for p in proxies}
        if not any(rates.values()):
            self.notes.append("half load: no throughput results to derive rates from")
            return
        for rnd in range(ROUNDS):
            log(f"half load, round {rnd + 1} of {ROUNDS}")
            for p in proxies:
                self.start_system(p)
            runs = []
            for p in proxies:
                if rates[p]:
                    runs.append((p, p, rates[p] / 2, p))
                    runs.append(("nginx-a", f"nginx-a @ {p} rate", rates[p] / 2, p))
            for system, label, rate, rate_of in self.rotate(runs, rnd):
                self.measure("halfload", system, rnd, "/", rate=rate, label=label,
                             rate_of=rate_of)
            for p in proxies:
                self.procs.stop(p)

    def run_idle(self):
        for name, kind in (("spooky-mio-idle", "mio"), ("spooky-tokio-idle", "tokio"),
                           ("caddy-idle", "caddy")):
            if kind == "caddy":
                error = self.start_caddy(name, "Caddyfile.proxy.in", backend_a=PORTS["nginx-a"],
                                         backend_b=PORTS["nginx-b"])
            else:
                # The QUIC idle timeout must outlast opening everything plus the hold.
                error = self.start_spooky(name, kind, client_idle="5m",
                                          max_connections=max(100000, 2 * IDLE_CONNECTIONS))
            if error:
                self.unavailable[name] = error
                self.notes.append(f"idle / {name}: not available: {error}")
                self.procs.stop(name)
                continue
            pid = self.procs.pid(name)
            self.quiet.wait()
            rss_before = proc_status_kb(pid, "VmRSS")
            args = self.loadgen.argv(self.url(name, "/"), watch=[pid],
                                     extra=["--idle-connections", str(IDLE_CONNECTIONS),
                                            "--hold", f"{IDLE_HOLD:g}s"])
            self.loadgen.commands[("idle", name)] = display_cmd(
                ["taskset", "-c", LOADGEN_CPU] + args, self.work)
            log(f"idle: {IDLE_CONNECTIONS} connections to {name}")
            report, error = self.loadgen.run(args, timeout=IDLE_HOLD + 240)
            result = {"workload": "idle", "system": name, "sut": name, "round": 0,
                      "report": report, "error": error, "rss_before_kb": rss_before,
                      "alive_after": self.procs.alive(name)}
            if report:
                w = (report.get("watched") or [{}])[0]
                log(f"  idle {name}: {report['established']} established in "
                    f"{report['connect_s']:.1f} s, RSS {w.get('rss_kb')} kB "
                    f"(before {rss_before} kB), peak {w.get('hwm_kb')} kB, "
                    f"{report['alive_after_hold']} alive after the hold")
            else:
                log(f"  idle {name}: ERROR {error}")
                self.notes.append(f"idle / {name}: {error}")
            self.results.append(result)
            self.procs.stop(name)


# --------------------------------------------------------------------------------------------
# The report


def sh(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    info = {}
    lscpu = sh(["lscpu"])
    m = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    info["cpu"] = m.group(1).strip() if m else platform.processor()
    info["cores"] = os.cpu_count()
    hyp = re.search(r"^Hypervisor vendor:\s*(.+)$", lscpu, re.M)
    info["hypervisor"] = hyp.group(1).strip() if hyp else None
    info["kernel"] = platform.release()
    try:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        info["ram"] = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        info["ram"] = "?"
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?([^"\n]+)', f.read(), re.M)
        info["os"] = m.group(1) if m else "?"
    except OSError:
        info["os"] = "?"
    info["nginx"] = sh(["sh", "-c", "nginx -v 2>&1"]).replace("nginx version: nginx/", "")
    info["caddy"] = sh(["caddy", "version"]).split()[0] if sh(["caddy", "version"]) else "?"
    info["rustc"] = sh(["rustc", "--version"])
    rev = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    info["git"] = rev + (" (with uncommitted changes)" if dirty else "")
    return info


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_rps(v):
    if v is None:
        return "–"
    return f"{v:,.0f}"


def fmt_us(v):
    if v is None:
        return "–"
    if v >= 100000:
        return f"{v / 1000:,.0f} ms"
    return f"{v / 1000:.2f} ms"


def fmt_mb(kb):
    return "–" if kb is None else f"{kb / 1024:.1f} MiB"


def fmt_pct(v):
    return "–" if v is None else f"{v * 100:.0f}%"


def summarize(results, workload, label):
    rows = [r for r in results if r["workload"] == workload and r["system"] == label]
    ok = [r for r in rows if r["report"]]
    if not rows:
        return None
    rep = [r["report"] for r in ok]
    cpu10k = []
    for r in ok:
        if r.get("cpu_s") is not None and r["report"]["requests"] > 0:
            cpu10k.append(r["cpu_s"] / r["report"]["requests"] * 10000)
    gen, sut, core = [], [], []
    for r in ok:
        window = r["report"].get("proc_interval_s") or r["report"].get("duration_s") or 0
        if window > 0 and r["report"].get("loadgen_cpu_s") is not None:
            gen.append(r["report"]["loadgen_cpu_s"] / window)
        if window > 0 and r.get("cpu_s") is not None:
            sut.append(r["cpu_s"] / window)
        busy = r.get("cpu_busy") or []
        if len(busy) > int(SERVER_CPU):
            core.append(busy[int(SERVER_CPU)])
    return {
        "rounds": len(rows),
        "failed": len(rows) - len(ok),
        "rps": med([x["rps"] for x in rep]),
        "rps_all": [x["rps"] for x in rep],
        "mbps": med([x["mbps"] for x in rep]),
        "p50": med([x["p50_us"] for x in rep]),
        "p90": med([x["p90_us"] for x in rep]),
        "p99": med([x["p99_us"] for x in rep]),
        "max": max([x["max_us"] for x in rep], default=None),
        "errors": sum(x["errors"] for x in rep),
        "errors_by_kind": {k: sum(x["errors_by_kind"].get(k, 0) for x in rep)
                           for k in ("connect", "status", "stream", "connection")},
        "status_codes": merge_codes(x["status_codes"] for x in rep),
        "late": sum(x.get("late") or 0 for x in rep),
        "cancelled": sum(x.get("cancelled") or 0 for x in rep),
        "connects": sum(x.get("connects") or 0 for x in rep),
        "cpu10k": med(cpu10k),
        "hwm_kb": max([r["hwm_kb"] for r in ok if r.get("hwm_kb")], default=None),
        "busy_gen": med(gen),
        "busy_srv": med(sut),
        "busy_core": med(core),
        "foreign": med([r.get("foreign_share") for r in ok]),
        "target_rps": med([x.get("target_rps") for x in rep]),
        "run_errors": [r["error"] for r in rows if r["error"]],
    }


def merge_codes(dicts):
    out = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def per_round_ratio(results, workload, a, b):
    ratios = []
    for rnd in sorted({r["round"] for r in results}):
        ra = [r for r in results if r["workload"] == workload and r["system"] == a
              and r["round"] == rnd and r["report"]]
        rb = [r for r in results if r["workload"] == workload and r["system"] == b
              and r["round"] == rnd and r["report"]]
        if ra and rb and rb[0]["report"]["rps"] > 0:
            ratios.append(ra[0]["report"]["rps"] / rb[0]["report"]["rps"])
    return ratios


WORKLOAD_TEXT = {
    "throughput": ("Throughput: 13-byte response",
                   "GET `/` (body `hello world!\\n`, 13 bytes). HTTP/3: 32 connections × 4 "
                   "streams, closed loop; nginx direct: 128 keep-alive HTTP/1.1 connections."),
    "16k": ("16 KiB response",
            "GET `/16k`. HTTP/3: 16 connections × 4 streams; nginx direct: 64 connections."),
    "latency": ("Latency: 1 connection, 1 stream",
                "GET `/` one request at a time on one connection (closed loop)."),
    "100m": ("100 MiB download",
             "GET `/100m`, one connection, one request at a time; each row is the median of "
             "the rounds, each round %s downloads (no warm-up). CPU is per download."),
    "h3": ("HTTP/3 backends: 13-byte response",
           "Spooky in front of two `h3server` processes (quinn + h3, bodies from memory, "
           "`benches/src/bin/h3server.rs`) over HTTP/3; 32 connections × 4 streams. "
           "`h3server direct` is the same server without the proxy."),
    "h3-latency": ("HTTP/3 backends: 1 connection, 1 stream", "GET `/`, one request at a time."),
}


def table(results, workload, labels, big=False):
    head = ["system", "req/s", "rounds (req/s)"]
    if big:
        head += ["Gbit/s"]
    elif workload in ("16k",):
        head += ["MB/s"]
    head += ["p50", "p90", "p99", "max", "errors", "CPU s / 10k req", "peak RSS",
             "proxy CPU", "server core", "loadgen CPU", "other load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in labels:
        s = summarize(results, workload, label)
        if not s:
            continue
        title = TITLES.get(label, label)
        if s["rps"] is None:
            why = "; ".join(s["run_errors"])[:200] or "no result"
            lines.append(f"| {title} | failed: {why} |" + " |" * (len(head) - 2))
            continue
        rounds = " / ".join(f"{v:,.0f}" if v >= 100 else f"{v:.2f}" for v in s["rps_all"])
        rps = fmt_rps(s["rps"]) if s["rps"] >= 100 else f"{s['rps']:.2f}"
        row = [title, rps, rounds]
        if big:
            row.append(f"{s['mbps'] * 8 / 1000:.2f}")
        elif workload == "16k":
            row.append(f"{s['mbps']:,.0f}")
        errors = str(s["errors"])
        if s["errors"]:
            kinds = ", ".join(f"{k} {v}" for k, v in s["errors_by_kind"].items() if v)
            codes = ", ".join(f"{k}: {v}" for k, v in s["status_codes"].items())
            errors += f" ({kinds}{'; ' + codes if codes else ''})"
        if s["failed"]:
            errors += f"; {s['failed']} run(s) failed"
        cpu = "–" if s["cpu10k"] is None else f"{s['cpu10k']:.2f}"
        if big and s["cpu10k"] is not None:
            cpu = f"{s['cpu10k'] / 10000:.2f} per download"
        row += [fmt_us(s["p50"]), fmt_us(s["p90"]), fmt_us(s["p99"]), fmt_us(s["max"]), errors,
                cpu, fmt_mb(s["hwm_kb"]), fmt_pct(s["busy_srv"]), fmt_pct(s["busy_core"]),
                fmt_pct(s["busy_gen"]), fmt_pct(s["foreign"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def keep_tail(path):
    """The "Micro benchmarks" and "Profile" sections of an existing report, kept as they are."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"^## Micro benchmarks\b.*", text, re.M | re.S)
    if not m:
        m = re.search(r"^## Profile\b.*", text, re.M | re.S)
    return m.group(0).rstrip() + "\n" if m else None


DEFAULT_TAIL = """## Micro benchmarks

_To be filled in by the core engineers: criterion results of `cargo bench -p spooky-benches`
(QPACK, frames, balancer, core datagrams). This section is kept as it is when
`benches/e2e.sh` regenerates the rest of this page._

## Profile

_To be filled in by the core engineers: where Spooky spends its CPU under the throughput
workload (for example `perf record -g` of the `spooky` process while the loadgen command of the
throughput table runs). This section is kept as it is when `benches/e2e.sh` regenerates the
rest of this page._
"""


def write_report(bench, info, started, finished):
    R = bench.results
    out = []
    w = out.append
    mode = "quick mode (`E2E_QUICK=1`)" if QUICK else "full mode"
    w("# Benchmarks\n")
    w("End-to-end numbers from `benches/e2e.sh`: Spooky (mio and tokio runtimes) against Caddy "
      "as an HTTP/3 reverse proxy and against the nginx backends measured directly. "
      "Generated by the script; the sections \"Micro benchmarks\" and \"Profile\" at the end "
      "are kept when it runs again.\n")
    w("## How this was measured\n")
    w(f"- Date: {started:%Y-%m-%d %H:%M} – {finished:%H:%M} UTC, {mode}: {ROUNDS} round(s), "
      f"{DURATION:g} s measured after {WARMUP:g} s of warm-up per run, systems alternating "
      "within each round (the order rotates every round).")
    w(f"- Machine: {info['cpu']}, {info['cores']} cores"
      + (f" ({info['hypervisor']} VM)" if info.get("hypervisor") else "")
      + f", {info['ram']} RAM, Linux {info['kernel']}, {info['os']}.")
    w(f"- Software: Spooky {info['git']} (release build), {info['rustc']}; "
      f"nginx {info['nginx']}; Caddy {info['caddy']}.")
    w(f"- Command: `{COMMAND}`")
    w(f"- Pinning: `loadgen` (one tokio thread) on CPU {LOADGEN_CPU}; every server, proxy and "
      f"backend on CPU {SERVER_CPU} (`taskset`). Everything on 127.0.0.1.")
    w("- Backends: two nginx 1.22 processes (`worker_processes 1`, keep-alive, `access_log "
      "off`, `sendfile on`) serving `/` (13 bytes, `return 200`), `/16k` and `/100m` (files). "
      "Spooky and Caddy balance round-robin over both.")
    w("- Spooky: `runtime: { kind: mio, shards: 1 }` or `kind: tokio` (one core either way), "
      "log level warn, otherwise defaults (see `benches/e2e/spooky.yaml.in`). Caddy: the "
      "Caddyfile of `../shared/PEERS.md` with `keepalive_idle_conns_per_host 1024` "
      "(`benches/e2e/Caddyfile.proxy.in`).")
    w("- Columns: req/s is the median over the rounds (each round's value follows); latency "
      "percentiles are medians over the rounds, max is the highest of any round; CPU s / 10k "
      "req is user + system CPU of the proxy process over the measured window (for direct "
      "rows: the nginx worker, Caddy or h3server) per 10,000 responses; peak RSS is the "
      "proxy's VmHWM, reset before each run (`/proc/PID/clear_refs`); proxy CPU and loadgen "
      "CPU are the CPU time of the proxy (or direct server) and of the load generator as a "
      "share of one core over the window; server core is how busy the servers' core was in "
      "all (proxy, backends, kernel network processing, anything else): near 100% it was the "
      "bottleneck; other load is the share of both cores' time spent running tasks other than loadgen, the "
      "system under test and its backends.")
    foreign = med([r.get("foreign_share") for r in R])
    if foreign is not None:
        w(f"- Other load on the machine: this host is shared with other builds and tests, "
          "which run in other containers on the same two cores. Before each run the script "
          f"waited (at most {QUIET_WAIT:g} s) for the cores to be quiet, and ran a run again "
          f"(at most {RETRIES} time(s)) when more than {MAX_FOREIGN * 100:.0f}% of the CPU "
          f"went elsewhere, within a total budget of {NOISE_BUDGET:g} s "
          f"({bench.quiet.spent:.0f} s used, {bench.quiet.waits} waits, {bench.retried} "
          f"reruns). Other load was {foreign * 100:.0f}% in the median run and "
          f"{max(r.get('foreign_share') or 0 for r in R) * 100:.0f}% at most. Compare ratios "
          "within a round rather than absolute numbers.")
    w("")

    # ---- targets
    tp = {s: summarize(R, "throughput", s) for s in ("spooky-mio", "spooky-tokio", "caddy",
                                                    "nginx-a", "nginx-b")}
    big = {s: summarize(R, "100m", s) for s in ("spooky-mio", "spooky-tokio", "caddy",
                                               "caddy-files", "h3server-a", "nginx-a")}
    half = {}
    for r in R:
        if r["workload"] == "halfload":
            half.setdefault(r["system"], None)
    half = {k: summarize(R, "halfload", k) for k in half}
    idle = [r for r in R if r["workload"] == "idle"]

    def rps(s):
        return s["rps"] if s and s["rps"] else None

    targets = []
    mio, tokio, caddy = rps(tp["spooky-mio"]), rps(tp["spooky-tokio"]), rps(tp["caddy"])
    r_mc = mio / caddy if mio and caddy else None
    r_mt = mio / tokio if mio and tokio else None
    pr_mc = per_round_ratio(R, "throughput", "spooky-mio", "caddy")
    pr_mt = per_round_ratio(R, "throughput", "spooky-mio", "spooky-tokio")

    def verdict(value, ok):
        if value is None:
            return "not measured"
        return "**met**" if ok else "**missed**"

    targets.append(("Spooky-mio ≥ 2× Caddy req/s, 13-byte responses",
                    f"{r_mc:.2f}×" if r_mc else "–", verdict(r_mc, r_mc and r_mc >= 2)))
    targets.append(("Spooky-mio ≥ 1.3× Spooky-tokio req/s, 13-byte responses",
                    f"{r_mt:.2f}×" if r_mt else "–", verdict(r_mt, r_mt and r_mt >= 1.3)))
    added = None
    h_mio, h_base = half.get("spooky-mio"), half.get("nginx-a @ spooky-mio rate")
    if h_mio and h_base and h_mio["p99"] is not None and h_base["p99"] is not None:
        added = (h_mio["p99"] - h_base["p99"]) / 1000
    targets.append(("Added p99 latency < 1 ms at half load (Spooky-mio vs nginx direct, same "
                    "rate)", f"{added:+.2f} ms" if added is not None else "–",
                    verdict(added, added is not None and added < 1.0)))
    share = None
    if rps(big["spooky-mio"]) and rps(big["caddy-files"]):
        share = big["spooky-mio"]["mbps"] / big["caddy-files"]["mbps"]
    targets.append(("100 MiB download through Spooky-mio ≥ 80% of a direct HTTP/3 server "
                    "(Caddy file_server)", f"{share * 100:.0f}%" if share else "–",
                    verdict(share, share and share >= 0.8)))
    idle_mio = next((r for r in idle if r["system"] == "spooky-mio-idle" and r["report"]), None)
    idle_rss = None
    if idle_mio:
        idle_rss = (idle_mio["report"].get("watched") or [{}])[0].get("rss_kb")
    ok_idle = (idle_rss is not None and idle_rss < 500 * 1024
               and idle_mio["report"]["alive_after_hold"] >= IDLE_CONNECTIONS)
    targets.append((f"RSS with {IDLE_CONNECTIONS:,} idle QUIC connections < 500 MB "
                    "(Spooky-mio, 1 shard)",
                    f"{idle_rss / 1024:.0f} MiB "
                    f"({idle_mio['report']['alive_after_hold']:,} connections open)"
                    if idle_rss else "–",
                    verdict(idle_rss, ok_idle)))
    w("## Targets\n")
    w("| target | measured | result |")
    w("|---|---|---|")
    for t in targets:
        w(f"| {t[0]} | {t[1]} | {t[2]} |")
    w("")
    if IDLE_CONNECTIONS != 10000:
        w(f"The idle-connection target is defined for 10,000 connections; this run held "
          f"{IDLE_CONNECTIONS:,}.\n")

    # ---- headline ratios
    w("## Headline ratios (13-byte throughput)\n")
    w("| ratio | of the medians | per round |")
    w("|---|---|---|")
    for name, val, pr in (("Spooky-mio / Caddy", r_mc, pr_mc),
                          ("Spooky-mio / Spooky-tokio", r_mt, pr_mt)):
        w(f"| {name} | {f'{val:.2f}' if val else '–'} | "
          f"{' / '.join(f'{x:.2f}' for x in pr) or '–'} |")
    tok_c = per_round_ratio(R, "throughput", "spooky-tokio", "caddy")
    if tokio and caddy:
        w(f"| Spooky-tokio / Caddy | {tokio / caddy:.2f} | "
          f"{' / '.join(f'{x:.2f}' for x in tok_c) or '–'} |")
    cm, ct = tp["spooky-mio"], tp["spooky-tokio"]
    if cm and ct and cm["cpu10k"] and ct["cpu10k"]:
        w(f"| CPU per request, Spooky-tokio / Spooky-mio (above 1: mio is cheaper) | "
          f"{ct['cpu10k'] / cm['cpu10k']:.2f} | |")
    if mio and rps(tp["nginx-a"]):
        w(f"| Spooky-mio / nginx direct (HTTP/1.1, no TLS) | {mio / rps(tp['nginx-a']):.2f} | |")
    w("")
    if share is not None or big.get("spooky-mio"):
        w("100 MiB download as a share of the direct HTTP/3 server (Caddy `file_server`): "
          + ", ".join(f"{TITLES[s]} {big[s]['mbps'] / big['caddy-files']['mbps'] * 100:.0f}%"
                      for s in ("spooky-mio", "spooky-tokio", "caddy", "h3server-a")
                      if rps(big.get(s)) and rps(big.get("caddy-files"))) + ".\n")

    # ---- tables
    order = {
        "throughput": ["spooky-mio", "spooky-tokio", "caddy", "nginx-a", "nginx-b"],
        "16k": ["spooky-mio", "spooky-tokio", "caddy", "nginx-a", "nginx-b"],
        "latency": ["spooky-mio", "spooky-tokio", "caddy", "nginx-a"],
        "100m": ["spooky-mio", "spooky-tokio", "caddy", "caddy-files", "h3server-a", "nginx-a"],
        "h3": ["spooky-mio-h3", "spooky-tokio-h3", "h3server-a"],
        "h3-latency": ["spooky-mio-h3", "spooky-tokio-h3", "h3server-a"],
    }
    letter = {"throughput": "a", "16k": "b", "latency": "c", "100m": "d", "h3": "e",
              "h3-latency": "e"}
    for wl, labels in order.items():
        if not any(r["workload"] == wl for r in R):
            continue
        title, text = WORKLOAD_TEXT[wl]
        if wl == "100m":
            text = text % BIG_REQUESTS
        w(f"## ({letter[wl]}) {title}\n")
        w(text + "\n")
        w(table(R, wl, labels, big=(wl == "100m")))
        w("")

    # ---- half load
    if half:
        w("## (f) Latency added at half load\n")
        w("Open loop (`loadgen --rate R`): requests start on a fixed schedule whatever the "
          "responses do, and latency counts from the scheduled start (no coordinated "
          "omission). R is half of the system's median 13-byte throughput from (a); nginx A is "
          "measured directly (HTTP/1.1) at the same rate as the baseline. Pool of senders: 32 "
          "connections × 4 streams (HTTP/3) or 128 connections (HTTP/1.1). \"late\" counts "
          "requests that started more than 1 ms after their scheduled time (all senders "
          "busy).\n")
        w("| system | rate (req/s) | achieved | p50 | p90 | p99 | max | errors | late | "
          "CPU s / 10k req | proxy CPU | server core | loadgen CPU | other load |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for label in ("spooky-mio", "nginx-a @ spooky-mio rate", "spooky-tokio",
                      "nginx-a @ spooky-tokio rate", "caddy", "nginx-a @ caddy rate"):
            s = half.get(label)
            if not s or s["rps"] is None:
                continue
            cpu = "–" if s["cpu10k"] is None else f"{s['cpu10k']:.2f}"
            w(f"| {TITLES.get(label, label)} | {fmt_rps(s['target_rps'])} | {fmt_rps(s['rps'])} "
              f"| {fmt_us(s['p50'])} | {fmt_us(s['p90'])} | {fmt_us(s['p99'])} | "
              f"{fmt_us(s['max'])} | {s['errors']} | {s['late']} | {cpu} | "
              f"{fmt_pct(s['busy_srv'])} | {fmt_pct(s['busy_core'])} | {fmt_pct(s['busy_gen'])} | "
              f"{fmt_pct(s['foreign'])} |")
        w("")
        w("| proxy | added p50 | added p99 |")
        w("|---|---|---|")
        for p in ("spooky-mio", "spooky-tokio", "caddy"):
            a, b = half.get(p), half.get(f"nginx-a @ {p} rate")
            if a and b and a["p50"] is not None and b["p50"] is not None:
                w(f"| {TITLES[p]} | {(a['p50'] - b['p50']) / 1000:+.2f} ms | "
                  f"{(a['p99'] - b['p99']) / 1000:+.2f} ms |")
        w("")
        w("The difference includes the client side of HTTP/3 (QUIC and TLS in `loadgen`), "
          "which the HTTP/1.1 baseline does not pay.\n")

    # ---- idle
    if idle:
        w("## (g) Memory with idle connections\n")
        w(f"`loadgen --idle-connections {IDLE_CONNECTIONS}` opens that many QUIC connections "
          "(100 per client UDP socket, 256 handshakes at a time), completes one `GET /` on "
          f"each, holds them all open for {IDLE_HOLD:g} s and then reads the server's RSS. "
          "Spooky runs with `timeouts.client_idle: 5m` so nothing times out during the hold.\n")
        w("| system | established | requests ok | open after the hold | time to open | "
          "RSS before | RSS with all open | per connection | peak RSS |")
        w("|---|---|---|---|---|---|---|---|---|")
        for r in idle:
            rep = r["report"]
            title = TITLES.get(r["system"], r["system"])
            if not rep:
                w(f"| {title} | failed: {(r['error'] or '')[:200]} | | | | | | | |")
                continue
            wd = (rep.get("watched") or [{}])[0]
            rss, before = wd.get("rss_kb"), r.get("rss_before_kb")
            per = ((rss - before) / max(1, rep["established"])
                   if rss is not None and before is not None else None)
            w(f"| {title} | {rep['established']:,} of {rep['requested']:,} | "
              f"{rep['requests_ok']:,} | {rep['alive_after_hold']:,} | "
              f"{rep['connect_s']:.1f} s | {fmt_mb(before)} | {fmt_mb(rss)} | "
              f"{'–' if per is None else f'{per:.1f} KiB'} | {fmt_mb(wd.get('hwm_kb'))} |")
        w("")

    # ---- observations
    w("## Observations\n")
    obs = observations(bench, R)
    for o in obs:
        w(f"- {o}")
    if not has_problems(bench, R):
        w("- No errors; every system stayed up through every run.")
    w("")

    # ---- commands
    w("## Reproducing\n")
    w("```sh\n" + COMMAND + "\n```\n")
    w("Settings (environment variables): `E2E_QUICK=1` (1 round × 3 s, 2,000 idle "
      "connections), `E2E_ROUNDS`, `E2E_DURATION` (seconds measured), `E2E_WARMUP`, "
      "`E2E_BIG_REQUESTS` (100 MiB downloads per run), `E2E_IDLE_CONNECTIONS`, "
      "`E2E_IDLE_HOLD`, `E2E_WORKLOADS` (comma-separated subset of "
      f"`{','.join(ALL_WORKLOADS)}`), `E2E_PORT_BASE`, `E2E_LOADGEN_CPU`, "
      "`E2E_SERVER_CPU`, `E2E_OUT` (this file), `E2E_KEEP_WORKDIR=1`. Raw results: "
      "`target/e2e/results.json`.\n")
    w("The load generator command of each row (first round; `$WORK` is the script's temporary "
      "directory with the certificate, and the PIDs are those of that run):\n")
    w("```text")
    for (wl, label), cmd in bench.loadgen.commands.items():
        w(f"# {wl} / {label}")
        w(cmd)
    w("```\n")

    tail = keep_tail(OUT) or DEFAULT_TAIL
    text = "\n".join(out).rstrip() + "\n\n" + tail
    os.makedirs(os.path.dirname(os.path.abspath(OUT)), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)


def observations(bench, R):
    obs = []
    # How the cost splits when the servers' core is the bottleneck.
    for s_name in ("spooky-mio", "spooky-tokio", "caddy"):
        s = summarize(R, "throughput", s_name)
        if s and s["busy_core"] is not None and s["busy_core"] >= 0.95 and s["busy_srv"]:
            obs.append(f"throughput / {TITLES[s_name]}: the servers' core was "
                       f"{s['busy_core'] * 100:.0f}% busy; the proxy itself used "
                       f"{s['busy_srv'] * 100:.0f}% of it, the two nginx backends and the "
                       "kernel's loopback processing the rest. req/s therefore measures the "
                       "whole chain on one core; CPU s / 10k req is the proxy's own cost.")
    cm, ct = summarize(R, "throughput", "spooky-mio"), summarize(R, "throughput", "spooky-tokio")
    if cm and ct and cm["rps"] and ct["rps"] and cm["cpu10k"] and ct["cpu10k"]:
        obs.append(f"mio vs tokio: with 13-byte responses the mio runtime served "
                   f"{cm['rps'] / ct['rps']:.2f}× the requests of the tokio runtime at "
                   f"{cm['cpu10k'] / ct['cpu10k']:.2f}× its CPU per request "
                   f"({cm['cpu10k']:.3f} vs {ct['cpu10k']:.3f} s / 10k); with 1 connection × 1 "
                   "stream mio is the faster one (table c). Profile the throughput command "
                   f"for both: `{bench.loadgen.commands.get(('throughput', 'spooky-mio'), '?')}`.")
    b_mio, b_h3 = summarize(R, "100m", "spooky-mio"), summarize(R, "100m", "h3server-a")
    if b_mio and b_h3 and b_mio["mbps"] and b_h3["mbps"]:
        obs.append(f"100 MiB: Caddy's file_server (quic-go) is slow here, so the 80% target is "
                   f"easy against it; against the quinn-based h3server serving from memory "
                   f"Spooky-mio reaches {b_mio['mbps'] / b_h3['mbps'] * 100:.0f}% "
                   f"({b_mio['mbps'] * 8 / 1000:.2f} vs {b_h3['mbps'] * 8 / 1000:.2f} Gbit/s).")
    maxima = [summarize(R, wl, l)["max"] for wl in ("latency",)
              for l in ("spooky-mio", "spooky-tokio", "caddy", "nginx-a")
              if summarize(R, wl, l) and summarize(R, wl, l)["max"]]
    if maxima and min(maxima) > 2000:
        obs.append(f"Every system, nginx direct included, has a maximum latency of "
                   f"{min(maxima) / 1000:.1f}–{max(maxima) / 1000:.1f} ms in the 1 × 1 "
                   "latency runs: occasional stalls of the machine (a VM) or of the generator, "
                   "not of the proxy.")
    for name, why in bench.unavailable.items():
        obs.append(f"`{name}` could not be measured: {why.strip()[:400]}")
    for wl in ("throughput", "16k", "latency", "100m", "h3", "h3-latency", "halfload"):
        labels = sorted({r["system"] for r in R if r["workload"] == wl})
        for label in labels:
            s = summarize(R, wl, label)
            if s and s["errors"]:
                kinds = ", ".join(f"{k} {v}" for k, v in s["errors_by_kind"].items() if v)
                codes = ", ".join(f"{k}: {v}" for k, v in s["status_codes"].items())
                obs.append(f"{wl} / {TITLES.get(label, label)}: {s['errors']} errors over "
                           f"{s['rounds']} run(s) ({kinds}{'; status ' + codes if codes else ''})"
                           f"; command: `{bench.loadgen.commands.get((wl, label), '?')}`")
            if s and s["cancelled"]:
                obs.append(f"{wl} / {TITLES.get(label, label)}: {s['cancelled']} requests still "
                           "in flight when the run ended (cancelled).")
            if s and wl == "halfload" and s["late"] > 0.01 * (s["rps"] or 0) * DURATION * max(
                    1, s["rounds"]):
                obs.append(f"half load / {TITLES.get(label, label)}: {s['late']} requests "
                           "started more than 1 ms behind schedule (every sender busy: the "
                           "system fell behind the offered rate, or the generator did).")
            if s and s["busy_gen"] is not None and s["busy_gen"] > 0.9 and wl in (
                    "throughput", "16k", "h3") and (s["busy_srv"] or 0) < 0.9:
                obs.append(f"{wl} / {TITLES.get(label, label)}: loadgen used "
                           f"{s['busy_gen'] * 100:.0f}% of its core while the server used "
                           f"{fmt_pct(s['busy_srv'])} of its own: this number is probably "
                           "limited by the client, not by the server.")
    for r in R:
        if r["workload"] == "idle" and r["report"] and (
                r["report"]["established"] < r["report"]["requested"]
                or r["report"]["alive_after_hold"] < r["report"]["established"]
                or r["report"]["request_errors"]):
            rep = r["report"]
            obs.append(f"idle / {TITLES.get(r['system'], r['system'])}: {rep['established']:,} "
                       f"of {rep['requested']:,} connections established "
                       f"({rep['connect_errors']} failed within the 5 s connect timeout), "
                       f"{rep['request_errors']} first requests failed, "
                       f"{rep['alive_after_hold']:,} still open after the hold; command: "
                       f"`{bench.loadgen.commands.get(('idle', r['system']), '?')}`")
        if not r.get("alive_after", True):
            obs.append(f"{r['sut']} was not running after {r['workload']} round {r['round']}.")
    obs.extend(n for n in bench.notes if n not in " ".join(obs))
    return obs


def has_problems(bench, R):
    """Errors, failed runs, systems that were unavailable or died, idle connections lost."""
    if bench.unavailable or bench.notes:
        return True
    for r in R:
        rep = r["report"]
        if r["error"] or not r.get("alive_after", True) or not rep:
            return True
        if r["workload"] == "idle":
            if (rep["established"] < rep["requested"] or rep["request_errors"]
                    or rep["alive_after_hold"] < rep["established"]):
                return True
        elif rep["errors"] or rep.get("cancelled"):
            return True
    return False


SAVED_SETTINGS = ["QUICK", "ROUNDS", "DURATION", "WARMUP", "BIG_REQUESTS", "IDLE_CONNECTIONS",
                  "IDLE_HOLD", "LOADGEN_CPU", "SERVER_CPU", "QUIET_SHARE", "QUIET_WAIT",
                  "MAX_FOREIGN", "RETRIES", "NOISE_BUDGET", "COMMAND"]


def report_only(path):
    """Writes the report again from a results file of an earlier run (E2E_REPORT_ONLY)."""
    with open(path) as f:
        saved = json.load(f)
    globals().update(saved.get("settings", {}))
    bench = Bench.__new__(Bench)
    bench.results = saved["results"]
    bench.unavailable = saved["unavailable"]
    bench.notes = saved["notes"]
    bench.loadgen = Loadgen.__new__(Loadgen)
    bench.loadgen.commands = {(w, l): c for w, l, c in saved["commands"]}
    bench.quiet = Quiet()
    bench.quiet.spent, bench.quiet.waits, bench.retried = saved["quiet"]
    write_report(bench, saved["machine"], datetime.datetime.fromisoformat(saved["started"]),
                 datetime.datetime.fromisoformat(saved["finished"]))
    log(f"wrote {OUT} from {path}")


def main():
    if os.environ.get("E2E_REPORT_ONLY"):
        report_only(os.environ["E2E_REPORT_ONLY"])
        return
    if not WORK or not os.path.isdir(WORK):
        sys.exit("e2e: E2E_WORKDIR must name an existing directory (benches/e2e.sh makes one)")
    for path in (SPOOKY, LOADGEN, H3SERVER):
        if not os.access(path, os.X_OK):
            sys.exit(f"e2e: {path} is missing; build with cargo build --release -p spooky "
                     "-p spooky-benches")
    unknown = set(WORKLOADS) - set(ALL_WORKLOADS)
    if unknown:
        sys.exit(f"e2e: unknown workloads {sorted(unknown)}; use {ALL_WORKLOADS}")
    started = datetime.datetime.now(datetime.timezone.utc)
    bench = Bench(WORK)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        log(f"work directory {WORK}; {'quick' if QUICK else 'full'} mode, {ROUNDS} round(s) × "
            f"{DURATION:g} s (+{WARMUP:g} s warm-up); workloads {','.join(WORKLOADS)}")
        log(f"load average before: {open('/proc/loadavg').read().strip()}")
        info = machine()
        bench.prepare()
        bench.start_backends()
        bench.run_rounds()
        if "halfload" in WORKLOADS:
            bench.run_halfload()
        if "idle" in WORKLOADS:
            bench.run_idle()
        finished = datetime.datetime.now(datetime.timezone.utc)
        log(f"load average after: {open('/proc/loadavg').read().strip()}")
        os.makedirs(os.path.dirname(os.path.abspath(RESULTS)), exist_ok=True)
        with open(RESULTS, "w") as f:
            json.dump({"machine": info, "results": bench.results, "unavailable":
                       bench.unavailable, "notes": bench.notes,
                       "commands": [[k[0], k[1], v] for k, v in bench.loadgen.commands.items()],
                       "quiet": [bench.quiet.spent, bench.quiet.waits, bench.retried],
                       "started": started.isoformat(), "finished": finished.isoformat(),
                       "settings": {k: globals()[k] for k in SAVED_SETTINGS}},
                      f, indent=1)
        write_report(bench, info, started, finished)
        log(f"wrote {OUT} and {RESULTS}")
    finally:
        bench.procs.stop_all()


if __name__ == "__main__":
    main()
