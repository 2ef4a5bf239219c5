#!/usr/bin/env python3
"""The driver of bench/run: starts upstreams and proxies on loopback, measures, writes one table.

Not meant to be run by hand (bench/run installs the tools, builds the binaries, starts the test
API server and passes everything in). Standard library and PyYAML only.

Parts (see bench/README.md):
  1  throughput and latency: direct, switchyard-router, HAProxy, nginx; same upstreams, 90/10
  2  weight change under load: 100/0 <-> 0/100 flips (router via the API server, HAProxy via
     its runtime API, nginx via reload)
  3  rollback end to end: `switchyard rollback` with 1 and 3 router replicas
  4  scale: criterion (table build, pick), router RSS and start with N functions, one weight
     change with the largest N loaded
  7  automated canary: first failing response -> abort write -> last canary response, with 1
     and 3 routers; router CPU per request with and without a rollout in progress
"""

import argparse
import contextlib
import base64
import http.client
import json
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

import yaml

LOOPBACK = "127.0.0.1"
GROUP = "/apis/switchyard.dev/v1alpha1"
KEEP_MARKER = "<!-- kept across runs: everything below is written by people, not by bench/run -->"
STARTED = []
SCALE_NS = "switchyard-bench-scale"
ACK_WAIT_S = 3  # part 4: how long one change's acknowledgement is waited for (after traffic)
SCALE_CHANGES = 6  # part 4: weight changes with the largest fleet loaded
SCALE_CHANGE_WAIT_S = 15  # part 4: how long one change may take to reach traffic  # Popen objects this driver started; stopped by pid at exit


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def now_ns():
    return time.time_ns()


def free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def uptime_load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def start(cmd, log_path, cpus=None, env=None):
    if cpus is not None:
        cmd = ["taskset", "-c", cpus] + cmd
    out = open(log_path, "ab")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    STARTED.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(STARTED):
        stop(p, timeout=5)


def tree(pid):
    """pid and its descendants (nginx master and workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


CLK = os.sysconf("SC_CLK_TCK")


def cpu_split(pids):
    """(user, system) CPU seconds of these processes, all threads."""
    user = system = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (OSError, IndexError):
            pass
    return user / CLK, system / CLK


def cpu_seconds(pids):
    return sum(cpu_split(pids))


def core_busy(core):
    """(busy, total) jiffies of one core since boot, from /proc/stat (idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                return sum(v) - v[3] - v[4], sum(v)
    return 0, 0


def rss_mib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def http_get(port, path="/", headers=None, timeout=2):
    c = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def wait_for(what, check, timeout=30, interval=0.02):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = check()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}: {last}")


def pct(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(q / 100 * len(v) + 0.5)) - 1))
    return v[k]


def ms(ns):
    return f"{ns / 1e6:.1f}"


# ------------------------------------------------------------------------------ Kubernetes


class Kube:
    """Just enough of a Kubernetes client: bearer token, CA, JSON; one connection per thread."""

    def __init__(self, kubeconfig, work):
        cfg = yaml.safe_load(open(kubeconfig))
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        url = urllib.parse.urlparse(cluster["server"])
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"bench: the API server must be on loopback, not {url.hostname}")
        self.host, self.port = url.hostname, url.port
        self.token = user["token"]
        ca = os.path.join(work, "ca.crt")
        if "certificate-authority-data" in cluster:
            open(ca, "wb").write(base64.b64decode(cluster["certificate-authority-data"]))
        else:
            ca = cluster["certificate-authority"]
        self.ctx = ssl.create_default_context(cafile=ca)
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=30)
            self.local.c = c
        return c

    def call(self, method, path, body=None, ctype="application/json", ok=(200, 201)):
        text = self.call_raw(method, path, body, ctype, ok)
        return json.loads(text) if text else None

    def call_text(self, method, path):
        return self.call_raw(method, path).decode(errors="replace")

    def call_raw(self, method, path, body=None, ctype="application/json", ok=(200, 201)):
        for attempt in range(3):
            c = self.conn()
            try:
                headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
                data = None
                if body is not None:
                    data = body if isinstance(body, bytes) else json.dumps(body).encode()
                    headers["Content-Type"] = ctype
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                text = r.read()
            except (OSError, http.client.HTTPException):
                c.close()
                self.local.c = None
                if attempt == 2:
                    raise
                continue
            if r.status not in ok:
                raise RuntimeError(f"{method} {path}: {r.status} {text[:300]!r}")
            return text

    def ensure_crds(self, crds_yaml):
        for doc in yaml.safe_load_all(open(crds_yaml)):
            if not doc:
                continue
            name = doc["metadata"]["name"]
            self.call("PATCH",
                      f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                      "?fieldManager=switchyard-bench&force=true",
                      body=json.dumps(doc).encode(), ctype="application/apply-patch+yaml")
        wait_for("the CRDs", lambda: self.call("GET", f"{GROUP}/functions?limit=1") is not None)

    def namespace(self, prefix):
        name = f"{prefix}-{os.getpid()}-{int(time.time()) % 100000}"
        self.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        return name

    def clean(self, ns):
        for kind in ("functions", "functionversions"):
            try:
                self.call("DELETE", f"{GROUP}/namespaces/{ns}/{kind}", ok=(200, 202))
            except Exception as e:  # noqa: BLE001
                log(f"cleaning {kind} of {ns}: {e}")
        if ns.startswith(SCALE_NS):
            return  # no namespace controller here: a deleted namespace stays Terminating for good
        try:
            self.call("DELETE", f"/api/v1/namespaces/{ns}", ok=(200, 202))
        except Exception as e:  # noqa: BLE001
            log(f"deleting namespace {ns}: {e}")

    def create_version(self, ns, fn, version, endpoint, ok=(200, 201)):
        name = f"{fn}-{version.replace('.', '-')}"
        self.call("POST", f"{GROUP}/namespaces/{ns}/functionversions", {
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "FunctionVersion",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"function": fn, "version": version, "endpoint": endpoint},
        }, ok=ok)

    def create_function(self, ns, fn, traffic, ok=(200, 201)):
        self.call("POST", f"{GROUP}/namespaces/{ns}/functions", {
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "Function",
            "metadata": {"name": fn, "namespace": ns},
            "spec": {"traffic": [{"version": v, "weight": w} for v, w in traffic]},
        }, ok=ok)

    def delete_function(self, ns, fn):
        for path in [f"functions/{fn}"] + [f"functionversions/{fn}-{v}" for v in ("1-0-0", "1-1-0", "1-2-0")]:
            try:
                self.call("DELETE", f"{GROUP}/namespaces/{ns}/{path}", ok=(200, 202, 404))
            except Exception as e:  # noqa: BLE001
                log(f"deleting {ns}/{path}: {e}")

    def set_traffic(self, ns, fn, traffic):
        """Returns the Function's new (metadata.generation, metadata.resourceVersion as an int)."""
        meta = self.call("PATCH", f"{GROUP}/namespaces/{ns}/functions/{fn}",
                         {"spec": {"traffic": [{"version": v, "weight": w} for v, w in traffic]}},
                         ctype="application/merge-patch+json")["metadata"]
        return meta["generation"], int(meta["resourceVersion"])

    def report(self, ns, replica):
        """A router replica's RouterReport (docs/protocol.md), or None."""
        try:
            return self.call("GET", f"{GROUP}/namespaces/{ns}/routerreports/{replica}")
        except RuntimeError:
            return None

    def write_counts(self):
        """{(verb, resource): count} of the API server's requests so far (its /metrics)."""
        text = self.call_text("GET", "/metrics")
        out = {}
        for m in re.finditer(r'^apiserver_request_total\{([^}]*)\} (\S+)$', text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("verb") in ("PATCH", "POST", "PUT", "APPLY", "DELETE", "UPDATE", "CREATE"):
                key = (labels.get("verb"), labels.get("resource", ""))
                out[key] = out.get(key, 0) + float(m.group(2))
        return out


# ------------------------------------------------------------------------------ processes


class Env:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        self.kube = Kube(a.kubeconfig, a.work) if a.kubeconfig else None
        self.namespaces = []
        self.upstream = None
        self.u1 = self.u2 = None

    def path(self, name):
        return os.path.join(self.work, name)

    def scale_namespace(self, ns, keep):
        """A scale namespace, kept between runs with --keep-scale (creating 40,000 objects takes
        minutes); returns the names of the complete functions it already holds. Their endpoints
        may name an earlier run's upstream ports: only the measured function is requested.
        Returns (the namespace used, those names): one an earlier run deleted stays Terminating
        for good on the test API server (no namespace controller), so a fresh name replaces it."""
        try:
            phase = self.kube.call("GET", f"/api/v1/namespaces/{ns}").get("status", {}).get("phase")
        except RuntimeError:
            phase = None
        if phase == "Terminating":
            ns = f"{ns}-{os.getpid()}"
        try:
            self.kube.call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        except RuntimeError as e:
            if " 409 " not in str(e):
                raise
        if not keep:
            self.namespaces.append(ns)
        fns = self.kube.call("GET", f"{GROUP}/namespaces/{ns}/functions")["items"]
        fvs = self.kube.call("GET", f"{GROUP}/namespaces/{ns}/functionversions")["items"]
        count = {}
        for v in fvs:
            count[v["spec"]["function"]] = count.get(v["spec"]["function"], 0) + 1
        return ns, {f["metadata"]["name"] for f in fns if count.get(f["metadata"]["name"]) == 3}

    def ns(self, prefix):
        n = self.kube.namespace(prefix)
        self.namespaces.append(n)
        return n

    # -- upstream: one nginx process (1 worker, core 1), two listeners, one per version
    def start_upstream(self):
        self.u1, self.u2 = free_port(), free_port()
        conf = self.path("upstream.conf")
        open(conf, "w").write(f"""
worker_processes 1;
daemon off;
pid {self.path('upstream.pid')};
error_log {self.path('upstream.error.log')} warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path {self.work}/u_body; proxy_temp_path {self.work}/u_proxy;
  fastcgi_temp_path {self.work}/u_fcgi; uwsgi_temp_path {self.work}/u_uwsgi; scgi_temp_path {self.work}/u_scgi;
  server {{ listen {LOOPBACK}:{self.u1} backlog=4096; location / {{ default_type text/plain; return 200 "1.0.0\\n"; }} }}
  server {{ listen {LOOPBACK}:{self.u2} backlog=4096; location / {{ default_type text/plain; return 200 "2.0.0\\n"; }} }}
}}
""")
        self.upstream = start(["nginx", "-c", conf, "-p", self.work], self.path("upstream.log"), cpus="1")
        wait_for("the upstreams", lambda: http_get(self.u1)[0] == 200 and http_get(self.u2)[0] == 200)

    # -- nginx as the proxy under test
    def nginx_conf(self, port, w1, w2):
        def server(p, w):
            return f"server {LOOPBACK}:{p} down;" if w == 0 else f"server {LOOPBACK}:{p} weight={w};"
        return f"""
worker_processes 1;
daemon off;
pid {self.path('proxy-nginx.pid')};
error_log {self.path('proxy-nginx.error.log')} warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path {self.work}/n_body; proxy_temp_path {self.work}/n_proxy;
  fastcgi_temp_path {self.work}/n_fcgi; uwsgi_temp_path {self.work}/n_uwsgi; scgi_temp_path {self.work}/n_scgi;
  upstream versions {{
    {server(self.u1, w1)}
    {server(self.u2, w2)}
    keepalive 512;
    keepalive_requests 1000000;
  }}
  server {{
    listen {LOOPBACK}:{port} backlog=4096;
    location / {{
      proxy_pass http://versions;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

    def start_nginx(self, w1=90, w2=10):
        port = free_port()
        conf = self.path("proxy-nginx.conf")
        open(conf, "w").write(self.nginx_conf(port, w1, w2))
        p = start(["nginx", "-c", conf, "-p", self.work], self.path("proxy-nginx.log"), cpus="0")
        wait_for("nginx", lambda: http_get(port, "/bench")[0] == 200)
        return Target("nginx", port, p, conf=conf)

    # -- HAProxy: weighted backends, runtime API on a unix socket
    def haproxy_conf(self, port, sock):
        return f"""
global
  nbthread 1
  maxconn 8000
  stats socket {sock} mode 600 level admin
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend fe
  bind {LOOPBACK}:{port} backlog 4096
  default_backend versions
backend versions
  balance roundrobin
  server v1 {LOOPBACK}:{self.u1} weight 90
  server v2 {LOOPBACK}:{self.u2} weight 10
"""

    def start_haproxy(self):
        port = free_port()
        sock = self.path("haproxy.sock")
        conf = self.path("haproxy.cfg")
        open(conf, "w").write(self.haproxy_conf(port, sock))
        p = start(["haproxy", "-db", "-f", conf], self.path("haproxy.log"), cpus="0")
        wait_for("haproxy", lambda: http_get(port, "/bench")[0] == 200)
        return Target("HAProxy", port, p, sock=sock)

    # -- the router on a local store directory (a fixed configuration, written by the CLI)
    def start_store_router(self, replica):
        store = self.path("store")
        flag = f"dir:{store}"
        for args in (["deploy", "bench", "1.0.0", "--endpoint", f"http://{LOOPBACK}:{self.u1}", "--no-wait"],
                     ["deploy", "bench", "2.0.0", "--endpoint", f"http://{LOOPBACK}:{self.u2}", "--no-wait"],
                     ["traffic", "bench", "1.0.0=90", "2.0.0=10", "--no-wait"]):
            r = subprocess.run([self.a.cli, "--store", flag, *args], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"switchyard --store {flag} {' '.join(args)}: {r.stderr.strip()}")
        return self.start_router(None, replica, extra=("--store", flag))

    # -- the router, following the test API server
    def start_router(self, ns, replica, cpus="0", extra=()):
        port, admin = free_port(), free_port()
        cmd = [self.a.router, "--listen", f"{LOOPBACK}:{port}", "--admin", f"{LOOPBACK}:{admin}",
               "--replica-name", replica, "--grace-period", "1", *extra]
        if ns:
            cmd += ["-n", ns, "--kubeconfig", self.a.kubeconfig]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        p = start(cmd, self.path(f"router-{replica}.log"), cpus=cpus, env=env)
        t0 = time.monotonic()

        def ready():
            if p.poll() is not None:
                raise SystemExit(f"bench: the router exited ({p.returncode}); see {self.path(f'router-{replica}.log')}")
            return http_get(admin, "/readyz")[0] == 200
        wait_for(f"router {replica} /readyz", ready, timeout=120)
        t = Target("switchyard-router", port, p, admin=admin, replica=replica)
        t.ready_s = time.monotonic() - t0
        return t


def supports_store(binary):
    try:
        return "--store" in subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return False


class Target:
    def __init__(self, name, port, proc, **kw):
        self.name, self.port, self.proc = name, port, proc
        self.__dict__.update(kw)


def probe(env, targets, out, duration, rate=0, header=None, path="/bench", stop_file=None):
    cmd = [env.a.probe, "--out", out, "--duration", str(duration), "--path", path]
    if rate:
        cmd += ["--rate", str(rate)]
    if header:
        cmd += ["--header", header]
    if stop_file:
        cmd += ["--stop-file", stop_file]
    cmd += [f"{LOOPBACK}:{port}={conns}" for port, conns in targets]
    return start(cmd, out + ".log", cpus="1")


def read_probe(out):
    rows = []
    with open(out) as f:
        for line in f:
            t, tgt, ver, status = line.split()
            if "@" in ver:
                ver = ver.split("@", 1)[1]
            rows.append((int(t), int(tgt), ver, status))
    rows.sort()
    return rows


# ------------------------------------------------------------------------------ part 1


def wrk(env, port, conns, seconds):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
           "-s", os.path.join(env.a.bench_dir, "wrk-report.lua"), f"http://{LOOPBACK}:{port}/bench"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"BENCHJSON (\{.*\})", out)
    if not m:
        raise RuntimeError(f"wrk printed no report: {out[-500:]}")
    return json.loads(m.group(1))


def split_of(env, port, n_seconds=1.0):
    out = env.path(f"split-{port}.txt")
    p = probe(env, [(port, 4)], out, n_seconds)
    p.wait()
    STARTED.remove(p)
    rows = [r for r in read_probe(out) if r[3] == "200"]
    if not rows:
        return "no responses"
    v2 = sum(1 for r in rows if r[2] == "2.0.0")
    return f"{100 * v2 / len(rows):.1f}% to 2.0.0 of {len(rows)}"


def part1(env, targets, rounds, seconds, levels):
    """Alternating short rounds; medians per (target, concurrency)."""
    samples = {}
    for t in targets:  # warm-up: connection pools, page cache
        wrk(env, t.port, 32, 1)
    for r in range(rounds):
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for t in order:
            for c in levels:
                pids = tree(t.proc.pid) if t.proc else []
                (u0, s0), w0, k0 = cpu_split(pids), time.monotonic(), core_busy(1)
                res = wrk(env, t.port, c, seconds)
                (u1, s1), w1, k1 = cpu_split(pids), time.monotonic(), core_busy(1)
                # Core 1 runs wrk and the upstreams: near 100% busy, it (not the proxy) sets the pace.
                res["core1_pct"] = 100 * (k1[0] - k0[0]) / max(1, k1[1] - k0[1])
                c0, c1 = u0 + s0, u1 + s1
                n = max(1, res["requests"])
                res["cpu_pct"] = 100 * (c1 - c0) / (w1 - w0) if t.proc else None
                res["cpu_us_per_req"] = 1e6 * (c1 - c0) / n if t.proc else None
                res["user_us"] = 1e6 * (u1 - u0) / n
                res["sys_us"] = 1e6 * (s1 - s0) / n
                res["rss"] = rss_mib(pids) if t.proc else None
                res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
                res["errors"] = sum(res[k] for k in ("connect", "read", "write", "status", "timeout"))
                samples.setdefault((t.name, c), []).append(res)
                log(f"round {r + 1}/{rounds} {t.name} -c{c}: {res['rps']:.0f} req/s p99 {res['p99']} us")
    return samples


def part1_table(samples, targets, levels, rounds, seconds):
    med = lambda xs: statistics.median(xs)  # noqa: E731
    lines = [
        f"Medians of {rounds} alternating rounds of {seconds} s per target and concurrency "
        f"(wrk -t1, keep-alive, `GET /bench`). Proxy pinned to core 0 (`taskset -c 0`, one worker "
        "each: router `--threads 1`, nginx `worker_processes 1`, HAProxy `nbthread 1`); wrk and "
        "the upstreams on core 1. CPU is the proxy's user+system time over the run's wall time "
        "(100% = one core); RSS at the end of the run. Core 1 busy: the share of core 1 (wrk and "
        "the upstreams) not idle during the run, from `/proc/stat`; near 100%, the load generator "
        "and not the proxy sets the pace.",
        "",
        "| target | conns | req/s | p50 ms | p99 ms | p99.9 ms | proxy CPU % | proxy CPU µs/req (user + system) | proxy RSS MiB | core 1 busy % | errors | router req/s ÷ this |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in levels:
        router = samples.get(("switchyard-router", c))
        router_rps = med([s["rps"] for s in router]) if router else None
        for t in targets:
            ss = samples.get((t.name, c))
            if not ss:
                continue
            rps = med([s["rps"] for s in ss])
            cpu = [s["cpu_pct"] for s in ss if s["cpu_pct"] is not None]
            cpr = [s["cpu_us_per_req"] for s in ss if s["cpu_us_per_req"] is not None]
            rss = [s["rss"] for s in ss if s["rss"] is not None]
            ratio = "—" if t.name == "switchyard-router" or router_rps is None else f"{router_rps / rps:.2f}×"
            split = (f"{med(cpr):.1f} ({med([s['user_us'] for s in ss]):.1f} + {med([s['sys_us'] for s in ss]):.1f})"
                     if cpr else "—")
            lines.append(
                f"| {t.name} | {c} | {rps:,.0f} | {med([s['p50'] for s in ss]) / 1000:.2f} | "
                f"{med([s['p99'] for s in ss]) / 1000:.2f} | {med([s['p999'] for s in ss]) / 1000:.2f} | "
                f"{(f'{med(cpu):.0f}' if cpu else 'n/a (no proxy)')} | {split} | "
                f"{(f'{max(rss):.1f}' if rss else '—')} | {med([s['core1_pct'] for s in ss]):.0f} | "
                f"{sum(s['errors'] for s in ss)} | {ratio} |")
    return lines


# ------------------------------------------------------------------------------ part 6


def part6(env, md, section, notes, quick):
    """Shadow traffic's cost to the primary: the router (core 0, local store) serving `bench`
    from 1.0.0 while 0%, 10% or 100% of its requests are copied to 2.0.0 and compared."""
    with guarded(md, "part 6"):
        section("6. Shadow traffic: the primary with 0%, 10% and 100% copied")
        store = env.path("store-shadow")
        flag = f"dir:{store}"

        def sy(*args):
            r = subprocess.run([env.a.cli, "--store", flag, *args], capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"switchyard --store {flag} {' '.join(args)}: {r.stderr.strip()}")
            return r.stdout

        sy("deploy", "bench", "1.0.0", "--endpoint", f"http://{LOOPBACK}:{env.u1}", "--no-wait")
        sy("deploy", "bench", "2.0.0", "--endpoint", f"http://{LOOPBACK}:{env.u2}", "--no-wait")
        # A slow shadow: 200 ms per answer (the case), its own version.
        slow = Switchable("slow", delay=0.2)
        sy("deploy", "bench", "3.0.0", "--endpoint", f"http://{LOOPBACK}:{slow.port}", "--no-wait")
        sy("traffic", "bench", "1.0.0=100", "--no-wait")
        r = env.start_router(None, "bench-shadow", extra=("--store", flag))
        # Levels: percent copied to the fast 2.0.0, and "100 slow": everything to 3.0.0.
        levels = [0, 10, 100, "100 slow"]
        rounds, seconds, conns = (2, 3, 32) if quick else (5, 5, 32)
        samples = {lv: [] for lv in levels}
        copies = {lv: {"sent": 0, "compared": 0, "dropped": 0, "errors": 0} for lv in levels}

        def target(lv):
            return "3.0.0" if lv == "100 slow" else "2.0.0"

        def shadow_counts(version):
            status, _, body = http_get(r.admin, "/shadow")
            entries = json.loads(body).get("shadows", []) if status == 200 else []
            c = next((e for e in entries if e.get("version") == version), {})
            return {k: c.get(k, 0) for k in ("sent", "compared", "dropped", "errors")}
        try:
            wrk(env, r.port, conns, 1)  # warm-up
            for rnd in range(rounds):
                order = levels[rnd % len(levels):] + levels[:rnd % len(levels)]
                for lv in order:
                    # The CLI waits until the router serves the change (applied by 1/1 routers).
                    if lv:
                        sy("shadow", "bench", target(lv), "--percent", str(lv).split()[0])
                    else:
                        sy("shadow", "stop", "bench")
                    before = shadow_counts(target(lv))
                    pids = tree(r.proc.pid)
                    (u0, s0), w0 = cpu_split(pids), time.monotonic()
                    res = wrk(env, r.port, conns, seconds)
                    (u1, s1), w1 = cpu_split(pids), time.monotonic()
                    after = shadow_counts(target(lv))
                    n = max(1, res["requests"])
                    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
                    res["cpu_us_per_req"] = 1e6 * ((u1 + s1) - (u0 + s0)) / n
                    res["errors"] = sum(res[k] for k in ("connect", "read", "write", "status", "timeout"))
                    res["rss"] = rss_mib(pids)
                    samples[lv].append(res)
                    for k in copies[lv]:
                        copies[lv][k] += after[k] - before[k]
                    log(f"part 6 round {rnd + 1}/{rounds} shadow {lv}: {res['rps']:.0f} req/s "
                        f"p99 {res['p99']} us, copies {after['sent'] - before['sent']}")
        finally:
            stop(r.proc)
            slow.close()
        med = statistics.median

        def label(lv):
            return "100% slow (200 ms)" if lv == "100 slow" else f"{lv}%"
        base = samples[0]
        base_p99 = med([s["p99"] for s in base]) if base else None
        rows = [
            f"The router on a local store (`--store dir:PATH`), pinned to core 0 as in part 1; wrk "
            f"`-t1 -c{conns}` on core 1, `GET /bench` served by 1.0.0; the shadow copies go to 2.0.0 "
            f"(the same nginx, another listener: a fast shadow) and are compared (every one differs in "
            f"its body, `1.0.0` vs `2.0.0`, so each also keeps an example); `100% slow` copies everything "
            f"to 3.0.0, which answers after 200 ms (bench.py's threaded Python upstream). Medians of {rounds} rounds "
            f"of {seconds} s per level, levels alternating; the shadow is set with `switchyard shadow` "
            f"(`shadow stop` for 0%) before each run. Copies are counted at the router's `/shadow`.",
            "",
            "| shadow | req/s | p50 ms | p99 ms | p99 vs 0% | router CPU µs/req | router RSS MiB | copies sent | compared | dropped | shadow errors | client errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for lv in levels:
            ss = samples[lv]
            if not ss:
                rows.append(f"| {label(lv)} | not measured | | | | | | | | | | |")
                continue
            p99 = med([s["p99"] for s in ss])
            vs = "—" if lv == 0 or not base_p99 else f"{100 * (p99 - base_p99) / base_p99:+.1f}%"
            c = copies[lv]
            rows.append(
                f"| {label(lv)} | {med([s['rps'] for s in ss]):,.0f} | {med([s['p50'] for s in ss]) / 1000:.2f} | "
                f"{p99 / 1000:.2f} | {vs} | {med([s['cpu_us_per_req'] for s in ss]):.1f} | "
                f"{max(s['rss'] for s in ss):.1f} | {c['sent']:,} | {c['compared']:,} | {c['dropped']:,} | "
                f"{c['errors']:,} | {sum(s['errors'] for s in ss)} |")
        md += rows
        notes.append("part 6: a request chosen for a copy while the function's 16 copy slots are busy is not "
                     "copied and counts as dropped, never queued (docs/shadow.md): `copies sent` + `dropped` "
                     "is the chosen share")



# ------------------------------------------------------------------------------ part 2


def flips(env, name, port, flip, flips_n, interval, header, path, rate, conns):
    """Flips 100/0 <-> 0/100 `flips_n` times, `interval` apart, under paced probe load.

    Time to effect = last response of the old version after the change was issued, minus the
    moment it was issued (0 when no old-version response came after it)."""
    flip("1.0.0")
    time.sleep(max(0.5, interval))
    out = env.path(f"flips-{name}.txt")
    stop_file = out + ".stop"
    p = probe(env, [(port, conns)], out, flips_n * interval + 30, rate=rate, header=header,
              path=path, stop_file=stop_file)
    time.sleep(0.5)
    issued = []
    for i in range(flips_n):
        new = "2.0.0" if i % 2 == 0 else "1.0.0"
        t0 = now_ns()
        flip(new)
        t1 = now_ns()
        issued.append((t0, t1, new))
        time.sleep(max(0.0, interval - (t1 - t0) / 1e9))
    time.sleep(interval)
    open(stop_file, "w").close()
    p.wait()
    STARTED.remove(p)
    rows = read_probe(out)
    return analyse_flips(rows, issued, now_end=rows[-1][0] + 1 if rows else 0)


def analyse_flips(rows, issued, now_end, per_target=False):
    effects, unsettled, failed, total = [], 0, 0, 0
    t_first = issued[0][0]
    for r in rows:
        if r[0] >= t_first:
            total += 1
            if r[3] == "ERR" or not r[3].startswith("2"):
                failed += 1
    for i, (t0, _t1, new) in enumerate(issued):
        end = issued[i + 1][0] if i + 1 < len(issued) else now_end
        old_rows = [r for r in rows if t0 <= r[0] < end and r[3].startswith("2") and r[2] != new]
        if old_rows:
            last = max(r[0] for r in old_rows)
            if last >= end - (end - t0) * 0.1:
                unsettled += 1
            effects.append(last - t0)
        else:
            effects.append(0)
    return {"effects": effects, "unsettled": unsettled, "failed": failed, "total": total}


def flips_row(name, how, res):
    e = res["effects"]
    return (f"| {name} | {how} | {len(e)} | {ms(pct(e, 50))} | {ms(pct(e, 99))} | {ms(max(e))} | "
            f"{res['failed']} of {res['total']:,} | {res['unsettled']} |")


def haproxy_cmd(sock, cmd):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            out += b
    return out.decode()


# ------------------------------------------------------------------------------ part 3


def cli(env, ns, *args, check=True, timing=False):
    cmd = [env.a.cli, "--kubeconfig", env.a.kubeconfig, "-n", ns, *args]
    e = dict(os.environ, SWITCHYARD_TIMING="1") if timing else None
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=e)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return r


def confirmed_cli(env, ns, *args):
    """Runs the CLI with SWITCHYARD_TIMING=1 and returns (ns from start to its first stdout line —
    the one-line confirmation, printed once every live replica acknowledged —, ns to its exit,
    stdout + stderr). Work the CLI does after printing (the routers annotation) is not waited for
    by anyone, so the confirmation line is the clock."""
    cmd = [env.a.cli, "--kubeconfig", env.a.kubeconfig, "-n", ns, *args]
    e = dict(os.environ, SWITCHYARD_TIMING="1")
    t0 = now_ns()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    first = p.stdout.readline()
    t_line = now_ns()
    rest, err = p.communicate(timeout=120)
    t_exit = now_ns()
    if p.returncode != 0 or not first:
        raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {err.strip()[-400:]}")
    return t_line - t0, t_exit - t0, first + rest + err


def rollbacks(env, replicas, n):
    ns = env.ns(f"bench-rb{replicas}")
    # Versions first, routers after: a router that sees the Function before its FunctionVersion
    # (two watches) can refuse the generation, and `deploy` then fails (see RESULTS.md).
    cli(env, ns, "deploy", "rb", "1.0.0", "--endpoint", f"http://{LOOPBACK}:{env.u1}", "--no-wait")
    cli(env, ns, "deploy", "rb", "2.0.0", "--endpoint", f"http://{LOOPBACK}:{env.u2}", "--no-wait")
    routers = [env.start_router(ns, f"rb{replicas}-{i}", cpus=None) for i in range(replicas)]
    try:
        cli(env, ns, "promote", "rb", "2.0.0")
        out = env.path(f"rollback-{replicas}.txt")
        stop_file = out + ".stop"
        p = probe(env, [(r.port, 2) for r in routers], out, 600, rate=500,
                  header="x-switchyard-served-by", path="/rb", stop_file=stop_file)
        time.sleep(0.5)
        windows, acks, exits, printed, stages, traces = [], [], [], [], {}, []
        for k in range(n):
            t0 = now_ns()
            ack, exited, last_out = confirmed_cli(env, ns, "rollback", "rb", "--reason", f"bench {k}")
            acks.append(ack)
            exits.append(exited)
            last_out = last_out.strip()
            traces += [line for line in last_out.splitlines() if line.startswith("timing: from the write")]
            m = re.search(r"applied by \d+/\d+ routers in (\d+(?:\.\d+)?)\s*(ms|s)\b", last_out)
            if m:
                printed.append(float(m.group(1)) * (1000 if m.group(2) == "s" else 1))
            for stage, v in re.findall(r"(\w+)=(\d+(?:\.\d+)?)ms", last_out):
                stages.setdefault(stage, []).append(float(v))
            time.sleep(0.15)
            t2 = now_ns()
            windows.append((t0, t2))
            # 2.0.0 was rolled back from: going back to it is deliberate (issue 13's rule).
            cli(env, ns, "promote", "rb", "2.0.0", "--force")
            time.sleep(0.15)
        open(stop_file, "w").close()
        p.wait()
        STARTED.remove(p)
        rows = read_probe(out)
        traffic, failed, total = [], 0, 0
        for (t0, t2) in windows:
            win = [r for r in rows if t0 <= r[0] < t2]
            last_by_router = []
            for i in range(replicas):
                old = [r[0] for r in win if r[1] == i and r[3].startswith("2") and r[2] == "2.0.0"]
                last_by_router.append(max(old) - t0 if old else 0)
            traffic.append(max(last_by_router))
        for row in rows:
            if row[0] >= windows[0][0]:
                total += 1
                failed += row[3] == "ERR" or not row[3].startswith("2")
        return {"acks": acks, "exits": exits, "traffic": traffic, "printed": printed, "failed": failed,
                "total": total, "stages": stages, "sample_output": last_out, "traces": traces}
    finally:
        for rt in routers:
            stop(rt.proc)


def part8(env, n=20):
    """Part 8: where the time of one `switchyard rollback` goes, with two real router replicas
    acknowledging: p50 over `n` runs of the stages the CLI prints with `SWITCHYARD_TIMING=1`,
    plus process start and exit (wall clock minus the CLI's own total). Was the ignored test
    `cli::timing` (issue 4's closing note); timings are measured here, never asserted in tests.
    Returns the section's markdown lines."""
    ns = env.ns("bench-rbt")
    # Versions first, routers after (see `rollbacks`).
    cli(env, ns, "deploy", "hello", "1.0.0", "--endpoint", f"http://{LOOPBACK}:{env.u1}", "--no-wait")
    cli(env, ns, "deploy", "hello", "1.1.0", "--endpoint", f"http://{LOOPBACK}:{env.u2}", "--no-wait")
    cli(env, ns, "promote", "hello", "1.1.0", "--no-wait")
    routers = [env.start_router(ns, f"rbt-{i}", cpus=None) for i in ("a", "b")]
    try:
        cli(env, ns, "rollback", "hello")  # warm-up: both replicas acknowledged the generation
        stages = {}
        for _ in range(n):
            # Each timed rollback is a real change: an untimed promote first, forced because
            # the previous rollback left 1.1.0 (issue 13's rule).
            cli(env, ns, "promote", "hello", "1.1.0", "--force")
            t0 = now_ns()
            res = cli(env, ns, "rollback", "hello", timing=True)
            wall = (now_ns() - t0) / 1e6
            line = next((x for x in res.stderr.splitlines() if x.startswith("timing:")), None)
            if line is None:
                raise RuntimeError(f"no timing line in: {res.stderr.strip()[-300:]}")
            total = 0.0
            for name, v in re.findall(r"(\w+)=(\d+(?:\.\d+)?)ms", line):
                stages.setdefault(name, []).append(float(v))
                if name == "total":
                    total = float(v)
            stages.setdefault("process start+exit (wall − total)", []).append(wall - total)
            stages.setdefault("wall", []).append(wall)
    finally:
        for rt in routers:
            stop(rt.proc)
    rows = [f"`switchyard rollback hello` with two real router replicas (unpinned), p50 of {n} runs, "
            "each preceded by an untimed `promote --force`; stages as the CLI prints them with "
            "`SWITCHYARD_TIMING=1`, and process start+exit as wall clock minus the CLI's own total.",
            "", "| stage | p50 ms |", "|---|---|"]
    rows += [f"| {k} | {statistics.median(v):.1f} |" for k, v in stages.items()]
    return rows


# ------------------------------------------------------------------------------ part 4


def populate(env, ns, indices, threads=8):
    """Functions fn-<i> with versions 1.0.0 (0), 1.1.0 (90%), 1.2.0 (10%): the criterion fleet."""
    ep = [f"http://{LOOPBACK}:{env.u1}", f"http://{LOOPBACK}:{env.u1}", f"http://{LOOPBACK}:{env.u2}"]
    threads = max(1, min(threads, len(indices)))
    errors = []

    def work(k):
        try:
            for i in indices[k::threads]:
                fn = i if isinstance(i, str) else f"fn-{i}"
                for v, e in zip(("1.0.0", "1.1.0", "1.2.0"), ep):
                    env.kube.create_version(ns, fn, v, e, ok=(200, 201, 409))
                env.kube.create_function(ns, fn, [("1.0.0", 0), ("1.1.0", 900000), ("1.2.0", 100000)],
                                         ok=(200, 201, 409))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def criterion(env):
    """Runs the core table benchmark and reads criterion's median estimates (ns)."""
    args = ["cargo", "bench", "--quiet", "-p", "switchyard-core", "--bench", "table", "--",
            "--warm-up-time", "1", "--measurement-time", "2" if env.a.quick else "3", "--noplot"]
    r = subprocess.run(args, cwd=env.a.repo, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"cargo bench failed: {r.stderr[-800:]}")
    base = os.path.join(env.a.target_dir, "criterion")
    out = {}
    for group, ids in (("build", ("100", "1000", "10000")), ("lookup_and_pick", ("100", "1000", "10000")),
                       ("change_one", ("100", "1000", "10000")), ("pick_3_versions", ("",))):
        for i in ids:
            p = os.path.join(base, group, i, "new", "estimates.json")
            try:
                out[(group, i)] = json.load(open(p))["median"]["point_estimate"]
            except OSError:
                pass
    return out


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


# ------------------------------------------------------------------------------ part 5: profile


def strace_counts(env, target, seconds=3, conns=32):
    """Syscalls per request under wrk load (strace -c -f on the proxy's processes)."""
    out = env.path(f"strace-{target.name.split()[0]}.txt")
    pids = tree(target.proc.pid)
    cmd = ["strace", "-c", "-f", "-o", out]
    for p in pids:
        cmd += ["-p", str(p)]
    st = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    res = wrk(env, target.port, conns, seconds)
    st.send_signal(signal.SIGINT)
    st.wait(30)
    calls = {}
    for line in open(out):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total",):
            try:
                calls[f[-1]] = int(f[3])
            except ValueError:
                pass
    n = max(1, res["requests"])
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
    return sum(calls.values()) / n, ", ".join(f"{k} {v / n:.2f}" for k, v in top), n


def ctx_switches(pids):
    """(voluntary, involuntary, threads) summed over every thread of these processes."""
    vol = invol = threads = 0
    for p in pids:
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            invol += int(line.split()[1])
                threads += 1
            except OSError:
                pass
    return vol, invol, threads


def perf_top(env, target, seconds=5, conns=32, limit=25):
    data = env.path("perf.data")
    rec = subprocess.Popen(["perf", "record", "-F", "1999", "-o", data, "-p", str(target.proc.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    res = wrk(env, target.port, conns, seconds)
    rec.send_signal(signal.SIGINT)
    rec.wait(60)
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym",
                          "--percent-limit", "0.5"], capture_output=True, text=True).stdout
    lines = [l for l in rep.splitlines() if l.strip() and not l.startswith("#")][:limit]
    dso = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso"],
                         capture_output=True, text=True).stdout
    dso_lines = [l for l in dso.splitlines() if l.strip() and not l.startswith("#")][:8]
    return res, lines, dso_lines


def callgrind(env, name, cmd, port, ready, requests_s=6, run_env=None):
    """Instructions per request of one proxy, counted by callgrind (repeatable, unlike time):
    instrumentation is switched on only for a wrk -c8 run after a warm-up."""
    out = env.path(f"callgrind-{name}.out")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--instr-atstart=no", *cmd]
    p = start(cmd, env.path(f"callgrind-{name}.log"), cpus="0", env=run_env)
    wait_for(f"{name} under callgrind", ready, timeout=240, interval=0.5)
    wrk(env, port, 8, 2)  # warm the pools
    subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], capture_output=True)
    res = wrk(env, port, 8, requests_s)
    subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], capture_output=True)
    stop(p, timeout=60)
    ann = subprocess.run(["callgrind_annotate", "--inclusive=no", out], capture_output=True, text=True).stdout
    total = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", ann)
    total_ir = int(total.group(1).replace(",", "")) if total else None
    top = []
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            top.append((float(m.group(2)), m.group(3)[:150]))
        if len(top) >= 25:
            break
    incl = subprocess.run(["callgrind_annotate", "--inclusive=yes", out], capture_output=True, text=True).stdout
    itop = []
    for line in incl.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            itop.append((float(m.group(2)), m.group(3)[:150]))
        if len(itop) >= 60:
            break
    return res["requests"], total_ir, top, itop


def callgrind_router(env, ns):
    port, admin = free_port(), free_port()
    cmd = [env.a.router, "--listen", f"{LOOPBACK}:{port}", "--admin", f"{LOOPBACK}:{admin}", "-n", ns,
           "--kubeconfig", env.a.kubeconfig, "--replica-name", "bench-callgrind", "--grace-period", "1",
           "--startup-timeout", "120"]
    return callgrind(env, "router", cmd, port, lambda: http_get(admin, "/readyz", timeout=10)[0] == 200,
                     run_env=dict(os.environ, RUST_LOG="warn"))


def callgrind_peers(env):
    """Instructions per request of HAProxy and nginx in the same harness, for scale."""
    out = {}
    port = free_port()
    conf = env.path("callgrind-haproxy.cfg")
    open(conf, "w").write(env.haproxy_conf(port, env.path("callgrind-haproxy.sock")))
    r = callgrind(env, "haproxy", ["haproxy", "-db", "-f", conf], port,
                  lambda: http_get(port, "/bench")[0] == 200)
    out["HAProxy"] = r[1] / max(1, r[0]) if r[1] else None
    port = free_port()
    conf = env.path("callgrind-nginx.conf")
    open(conf, "w").write(env.nginx_conf(port, 90, 10).replace("proxy-nginx.pid", "callgrind-nginx.pid"))
    r = callgrind(env, "nginx", ["nginx", "-c", conf, "-p", env.work, "-g", "master_process off;"], port,
                  lambda: http_get(port, "/bench")[0] == 200)
    out["nginx"] = r[1] / max(1, r[0]) if r[1] else None
    return out


def part5(env, router, haproxy, nginx, router_ns):
    md = ["", "## 5. Profile of the router under load", "",
          f"Load average at start (`uptime`): {uptime_load()}", "",
          "Same setup as part 1 (proxy on core 0, wrk -t1 -c32 and the upstreams on core 1).", ""]
    md += ["### Syscalls per request (`strace -c -f` on the proxy during wrk -c32, 3 s; strace slows "
           "every proxy down, the counts per request are what matters)", "",
           "| proxy | syscalls / request | top calls / request |", "|---|---|---|"]
    for t in (router, haproxy, nginx):
        if t is None:
            continue
        try:
            per, top, n = strace_counts(env, t)
            md.append(f"| {t.name} | {per:.2f} | {top} |")
        except Exception as e:  # noqa: BLE001
            md.append(f"| {t.name} | not measured: {e} | |")
    md += ["", "### Threads and context switches per request (`/proc/<pid>/task/*/status` before and after "
           "wrk -c32, 3 s, no tracing)", "",
           "| proxy | threads | voluntary switches / request | involuntary / request |", "|---|---|---|---|"]
    for t in (router, haproxy, nginx):
        if t is None:
            continue
        pids = tree(t.proc.pid)
        v0, i0, nthreads = ctx_switches(pids)
        res = wrk(env, t.port, 32, 3)
        v1, i1, _ = ctx_switches(pids)
        n = max(1, res["requests"])
        md.append(f"| {t.name} | {nthreads} | {(v1 - v0) / n:.3f} | {(i1 - i0) / n:.3f} |")
    if router:
        res, lines, dso = perf_top(env, router)
        md += ["", f"### Where the router's CPU goes (`perf record -F 1999 -p <router>`, cpu-clock sampling, "
               f"wrk -c32 5 s, {res['requests'] / (res['duration_us'] / 1e6):,.0f} req/s during the recording)",
               "", "By binary/kernel:", "", "```"] + dso + ["```", "", "Top symbols (self time):", "", "```"] + lines + ["```"]
        if shutil_which("valgrind") and router_ns:
            try:
                reqs, total, top, itop = callgrind_router(env, router_ns)
                try:
                    peers = callgrind_peers(env)
                except Exception as e:  # noqa: BLE001
                    peers = {}
                    log(f"callgrind of the peers: {e}")
                md += ["", "### Instructions per request (`valgrind --tool=callgrind`, collection on only "
                       "during a wrk -c8 run after warm-up)", "",
                       f"{reqs:,} requests, {total:,} instructions in the router's threads: "
                       f"**{total / max(1, reqs):,.0f} instructions per request**." if total else "no total",
                       "", "Same harness, the peers: " + (", ".join(
                           f"{k} {v:,.0f}" if v else f"{k} not measured" for k, v in peers.items()) or "not measured")
                       + " instructions per request (user space, the whole process).",
                       "", "Router, self cost, top functions:", "", "```"]
                md += [f"{p:5.1f}%  {f}" for p, f in top] + ["```", "", "Inclusive cost (selected lines: the "
                                                              "first 60 by inclusive cost):", "", "```"]
                md += [f"{p:5.1f}%  {f}" for p, f in itop] + ["```"]
            except Exception as e:  # noqa: BLE001
                md += ["", f"callgrind: not measured: {e}"]
    return md


def shutil_which(name):
    import shutil
    return shutil.which(name)


# ------------------------------------------------------------------------------ main


@contextlib.contextmanager
def guarded(md, what):
    """A part that fails is reported as not measured, with the reason; the run goes on."""
    try:
        yield
    except Exception as e:  # noqa: BLE001
        log(f"{what} failed:\n{traceback.format_exc()}")
        md.extend(["", f"**{what}: not measured: {type(e).__name__}: {str(e)[:300]}**", ""])


# ------------------------------------------------------------------------------ part 7: canary


class Switchable:
    """A canary upstream on loopback (threads, keep-alive): `200 <label>`, or `500` from the
    moment `failing` is set; each answer after `delay` seconds."""

    def __init__(self, label, delay=0.0):
        import http.server
        outer = self
        self.failing = False
        body = label.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                if delay:
                    time.sleep(delay)
                self.send_response(500 if outer.failing else 200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def rollout_status(env, ns, fn):
    f = env.kube.call("GET", f"{GROUP}/namespaces/{ns}/functions/{fn}")
    return ((f.get("status") or {}).get("rollout")) or {}


def rfc3339_ns(s):
    import datetime
    return int(datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1e9)


# Limits for the measured rollouts: only the error rule may fire (a Python canary upstream is
# slower than nginx, so the latency rule is switched off by a 10 s allowance), and the first
# step (50%) is held for good, so the only way out is the abort being measured.
CANARY_FLAGS = ["--steps", "50,100", "--hold", "10m", "--max-wait", "20m", "--min-requests", "20",
                "--max-error-increase", "1", "--max-p99-increase", "10s", "--baseline", "1.0.0"]


def canary_aborts(env, replicas, n):
    """n rollouts of a canary that starts failing every request once its step is live, under a
    probe of 2 connections x 500 req/s per replica: from the first failing response to the
    abort written (status.rollout.updatedAt) and to the last canary response on traffic."""
    ns = env.ns(f"bench-cn{replicas}")
    canary = Switchable("1.1.0")
    routers = []
    try:
        cli(env, ns, "deploy", "cn", "1.0.0", "--endpoint", f"http://{LOOPBACK}:{env.u1}", "--no-wait")
        cli(env, ns, "deploy", "cn", "1.1.0", "--endpoint", f"http://{LOOPBACK}:{canary.port}", "--no-wait")
        routers = [env.start_router(ns, f"cn{replicas}-{i}", cpus=None) for i in range(replicas)]
        out = env.path(f"canary-{replicas}.txt")
        stop_file = out + ".stop"
        p = probe(env, [(r.port, 2) for r in routers], out, 900, rate=500,
                  header="x-switchyard-served-by", path="/cn", stop_file=stop_file)
        # A step is measured from each replica's published counters (its report's numbers):
        # start once every replica has published some.
        for r in routers:
            wait_for(f"numbers from {r.replica}", lambda r=r: ((env.kube.report(ns, r.replica) or {})
                                                               .get("status") or {}).get("numbers"))
        windows, aborts, reasons = [], [], []
        for k in range(n):
            canary.failing = False
            # Returns once every live router serves the first step (the CLI waits for them).
            cli(env, ns, "canary", "cn", "1.1.0", *CANARY_FLAGS, "--force")
            t0 = now_ns()
            canary.failing = True
            st = wait_for("the abort", lambda: (lambda s: s if s.get("phase") == "Aborted" else None)(
                rollout_status(env, ns, "cn")), timeout=60)
            aborts.append(rfc3339_ns(st["updatedAt"]))
            reasons.append(f"{st.get('actor')}: {st.get('reason')}")
            # Requests routed before the routers swapped in the abort finish within this.
            time.sleep(0.5)
            windows.append((t0, now_ns()))
            # The next rollout's step starts from the replicas' published counters: wait until
            # every report was read after this window, or this abort's last failures would
            # count in the next step.
            for r in routers:
                wait_for(f"fresh numbers from {r.replica}", lambda r=r: rfc3339_ns(
                    ((env.kube.report(ns, r.replica) or {}).get("status") or {})["numbers"]["at"])
                    > windows[-1][1])
        open(stop_file, "w").close()
        p.wait()
        STARTED.remove(p)
        rows = read_probe(out)
        to_write, to_traffic = [], []
        for (t0, t2), abort_ns in zip(windows, aborts):
            win = [r for r in rows if t0 <= r[0] < t2]
            # The probe logs a non-2xx answer's version as "-": every 500 here is the canary's
            # (the baseline is nginx answering 200; the router's own failures are 502-504).
            failing = [r[0] for r in win if r[3] == "500"]
            if not failing:
                continue
            first = min(failing)
            last_canary = max(r[0] for r in win if r[2] == "1.1.0" or r[3] == "500")
            to_write.append(abort_ns - first)
            to_traffic.append(last_canary - first)
        baseline_failed = sum(1 for r in rows if r[0] >= windows[0][0]
                              and (r[3] == "ERR" or not (r[3].startswith("2") or r[3] == "500")))
        total = sum(1 for r in rows if r[0] >= windows[0][0])
        return {"write": to_write, "traffic": to_traffic, "baseline_failed": baseline_failed,
                "total": total, "reason": reasons[-1] if reasons else ""}
    finally:
        for rt in routers:
            stop(rt.proc)
        canary.close()


def canary_cpu(env, seconds, rounds):
    """Router CPU per request (wrk -c32 on `GET /bench`, router on core 0), the same 90/10
    split without and with a rollout in progress (the decider and the fast abort running)."""
    ns = env.ns("bench-cncpu")
    cli(env, ns, "deploy", "bench", "1.0.0", "--endpoint", f"http://{LOOPBACK}:{env.u1}", "--no-wait")
    cli(env, ns, "deploy", "bench", "1.1.0", "--endpoint", f"http://{LOOPBACK}:{env.u2}", "--no-wait")
    router = env.start_router(ns, "cncpu-0")
    try:
        def measure():
            pids = tree(router.proc.pid)
            wrk(env, router.port, 32, 1)  # warm-up
            out = []
            for _ in range(rounds):
                c0 = cpu_seconds(pids)
                res = wrk(env, router.port, 32, seconds)
                c1 = cpu_seconds(pids)
                out.append((1e6 * (c1 - c0) / max(1, res["requests"]),
                            res["requests"] / (res["duration_us"] / 1e6)))
            return statistics.median(x for x, _ in out), statistics.median(y for _, y in out)
        cli(env, ns, "traffic", "bench", "1.0.0=90", "1.1.0=10")
        without = measure()
        cli(env, ns, "traffic", "bench", "1.0.0=100", "1.1.0=0")
        # 10% held for good: min requests out of reach, limits out of reach.
        cli(env, ns, "canary", "bench", "1.1.0", "--steps", "10,100", "--hold", "10m", "--max-wait", "20m",
            "--min-requests", "1000000000", "--max-error-increase", "100", "--max-p99-increase", "10s",
            "--baseline", "1.0.0", "--force")
        with_rollout = measure()
        phase = rollout_status(env, ns, "bench").get("phase")
        if phase != "Progressing":
            raise RuntimeError(f"the rollout was not in progress at the end (phase {phase}): "
                               "the measurement with a rollout does not stand")
        return without, with_rollout, phase
    finally:
        stop(router.proc)


def part7(env, quick):
    md = ["Time from a canary's first failing response to its abort, judged by the routers from live "
          "traffic (issue 15, docs/protocol.md \"The deciding replica\"). Function `cn`: baseline 1.0.0 "
          "(nginx), canary 1.1.0 (a Python upstream on loopback) started with `switchyard canary cn 1.1.0 "
          f"{' '.join(CANARY_FLAGS)}`; once the CLI returns (every router serves the 50% step) the canary "
          "answers 500 to everything. *To the abort write*: `status.rollout.updatedAt` of the abort (the "
          "router's clock) − the first 500 the probe saw; *to traffic*: the last canary response on any "
          "replica − the same. Probe: 2 connections × 500 req/s per replica. Routers unpinned (they share "
          "2 cores with the API server, etcd, the CLI and the probe).", "",
          "| router replicas | aborts | to the abort write p50 ms | p99 ms | max ms | to the last canary response p50 ms | p99 ms | max ms | failed baseline requests |",
          "|---|---|---|---|---|---|---|---|---|"]
    n = 10 if quick else 20
    notes = []
    for replicas in (1, 3):
        try:
            res = canary_aborts(env, replicas, n)
            w, t = res["write"], res["traffic"]
            if not w:
                raise RuntimeError("no abort was measured")
            md.append(f"| {replicas} | {len(w)} | {ms(pct(w, 50))} | {ms(pct(w, 99))} | {ms(max(w))} | "
                      f"{ms(pct(t, 50))} | {ms(pct(t, 99))} | {ms(max(t))} | {res['baseline_failed']} of {res['total']:,} |")
            notes.append(f"canary, {replicas} replica(s), last abort: {res['reason']}")
        except Exception as e:  # noqa: BLE001
            md.append(f"| {replicas} | — | not measured: {str(e)[:200]} | | | | | | |")
            log(f"canary aborts with {replicas}: {e}")
    md += ["", "What the anchors document as their fastest reaction (from their docs, not measured here): "
           "Flagger analyses every `interval` (minimum 10 s, default 60 s) over a 1-minute metrics window; "
           "Argo Rollouts' documented example aborts after four failed 5-minute measurements (15+ minutes); "
           "CodeDeploy rolls back on CloudWatch alarms of 1-minute periods.", ""]
    try:
        seconds, rounds = (3, 3) if quick else (5, 5)
        (cpu0, rps0), (cpu1, rps1), phase = canary_cpu(env, seconds, rounds)
        md += ["Router CPU per request (user + system, `/proc`), wrk -t1 -c32 `GET /bench`, router on core 0, "
               f"the same 90/10 split; medians of {rounds} rounds of {seconds} s.", "",
               "| | CPU µs per request | requests/s |", "|---|---|---|",
               f"| no rollout | {cpu0:.1f} | {rps0:,.0f} |",
               f"| a rollout in progress (phase {phase}) | {cpu1:.1f} | {rps1:,.0f} |"]
    except Exception as e:  # noqa: BLE001
        md.append(f"Router CPU per request with and without a rollout: not measured: {str(e)[:200]}")
        log(f"canary cpu: {e}")
    return md, notes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parts", default="1,2,3,4,5,7")
    ap.add_argument("--work", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--bench-dir", required=True)
    ap.add_argument("--target-dir", required=True)
    ap.add_argument("--router", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--probe", required=True)
    ap.add_argument("--kubeconfig")
    ap.add_argument("--out", required=True)
    ap.add_argument("--header-file", required=True)
    ap.add_argument("--skip-criterion", action="store_true")
    ap.add_argument("--keep-scale", action="store_true")
    a = ap.parse_args()
    parts = {int(p) for p in a.parts.split(",") if p}
    quick = a.quick
    env = Env(a)
    md = [open(a.header_file).read().rstrip(), ""]
    notes = []
    profile_md = []
    t_start = time.monotonic()

    def section(title):
        log(f"{title} (elapsed {time.monotonic() - t_start:.0f} s)")
        md.extend(["", f"## {title}", "", f"Load average at start (`uptime`): {uptime_load()}", ""])

    try:
        if env.kube:
            env.kube.ensure_crds(os.path.join(a.repo, "manifests", "crds.yaml"))
        env.start_upstream()

        # ---------------------------------------------------------------- 1
        targets = []
        router_ns = None
        router = api_router = haproxy = nginx = None
        if parts & {1, 2, 5}:
            direct = Target("direct (no proxy)", env.u1, None)
            targets.append(direct)
            if env.kube and os.path.exists(a.router):
                router_ns = env.ns("bench-tp")
                for v, port in (("1.0.0", env.u1), ("2.0.0", env.u2)):
                    env.kube.create_version(router_ns, "bench", v, f"http://{LOOPBACK}:{port}")
                    env.kube.create_version(router_ns, "flip", v, f"http://{LOOPBACK}:{port}")
                env.kube.create_function(router_ns, "bench", [("1.0.0", 900000), ("2.0.0", 100000)])
                env.kube.create_function(router_ns, "flip", [("1.0.0", 1000000), ("2.0.0", 0)])
                try:
                    api_router = env.start_router(router_ns, "bench-tp")
                except Exception as e:  # noqa: BLE001
                    notes.append(f"switchyard-router: not measured: it did not start: {str(e)[:300]}")
                router = api_router
                if api_router and supports_store(a.router) and supports_store(a.cli):
                    # The local store would be the simplest fixed configuration, but a router on it
                    # must not spend core 0 on its config source while it proxies: check it idles.
                    try:
                        store_router = env.start_store_router("bench-store")
                        time.sleep(1.0)
                        pids = [store_router.proc.pid]
                        c0, w0 = cpu_seconds(pids), time.monotonic()
                        time.sleep(3.0)
                        idle = 100 * (cpu_seconds(pids) - c0) / (time.monotonic() - w0)
                        if idle < 5:
                            router = store_router  # the API-server router stays for parts 2 and 5
                            notes.append(f"part 1: switchyard-router ran with `--store dir:PATH` (local store; "
                                         f"{idle:.0f}% CPU when idle)")
                        else:
                            stop(store_router.proc)
                            notes.append(f"part 1: switchyard-router followed the test API server (a fixed "
                                         f"Function, unchanged during the runs), not `--store dir:PATH`: on the "
                                         f"local store it used {idle:.0f}% of a core while idle (see the findings)")
                    except Exception as e:  # noqa: BLE001
                        notes.append(f"part 1: the router on a local store did not start ({str(e)[:200]}); "
                                     "it followed the test API server instead")
                elif api_router:
                    notes.append("part 1: switchyard-router followed the test API server (no `--store` "
                                 "in this build)")
                if router:
                    targets.append(router)
            else:
                router = api_router = None
                notes.append("switchyard-router: not measured (binary or API server missing)")
            haproxy = env.start_haproxy()
            nginx = env.start_nginx()
            targets += [haproxy, nginx]
        if 1 in parts:
            with guarded(md, "part 1"):
                section("1. Throughput and latency, side by side")
                rounds, seconds = (2, 2) if quick else (5, 3)
                levels = [32, 128]
                splits = [f"{t.name}: {split_of(env, t.port)}" for t in targets if t.proc]
                samples = part1(env, targets, rounds, seconds, levels)
                md += part1_table(samples, targets, levels, rounds, seconds)
                md += ["", "Observed split (1 s probe, 4 connections, before the runs): " + "; ".join(splits) + "."]

        # ---------------------------------------------------------------- 2
        if 2 in parts:
            with guarded(md, "part 2"):
                section("2. Weight change under load (100/0 ⇄ 0/100)")
                n_flips = 10 if quick else 50
                interval = 0.5
                rate, conns = 1000, 8
                rows = [
                    f"{n_flips} flips, {interval * 1000:.0f} ms apart, while a paced probe ({conns} keep-alive "
                    f"connections × {rate} req/s, core 1) runs. Time to effect: from the moment the change "
                    "is issued to the last response from the old version (router: `x-switchyard-served-by`; "
                    "HAProxy and nginx: the upstream's body). Failed: refused/reset/EOF or non-2xx. "
                    "Unsettled: flips whose old version still answered in the last 10% of the interval.",
                    "",
                    "| target | how the change is issued | flips | p50 ms | p99 ms | max ms | failed requests | unsettled |",
                    "|---|---|---|---|---|---|---|---|",
                ]
                if api_router:
                    res = flips(env, "router", api_router.port,
                                lambda v: env.kube.set_traffic(router_ns, "flip", [("1.0.0", 1000000 if v == "1.0.0" else 0),
                                                                                   ("2.0.0", 1000000 if v == "2.0.0" else 0)]),
                                n_flips, interval, "x-switchyard-served-by", "/flip", rate, conns)
                    rows.append(flips_row("switchyard-router", "PATCH `Function.spec.traffic` on the API server (merge patch), router watch", res))
                else:
                    rows.append("| switchyard-router | — | not measured: no router binary or API server | | | | | |")

                def hap(v):
                    w1, w2 = (100, 0) if v == "1.0.0" else (0, 100)
                    # Raise the new version before lowering the old: both at 0, even for a moment, is a 503.
                    first, second = ("v1", "v2") if v == "1.0.0" else ("v2", "v1")
                    w = {"v1": w1, "v2": w2}
                    haproxy_cmd(haproxy.sock, f"set server versions/{first} weight {w[first]}; "
                                              f"set server versions/{second} weight {w[second]}")
                res = flips(env, "haproxy", haproxy.port, hap, n_flips, interval, None, "/bench", rate, conns)
                rows.append(flips_row("HAProxy", "runtime API `set server … weight` (unix socket)", res))

                def ngx(v):
                    w1, w2 = (1, 0) if v == "1.0.0" else (0, 1)
                    open(nginx.conf, "w").write(env.nginx_conf(nginx.port, w1, w2))
                    os.kill(nginx.proc.pid, signal.SIGHUP)
                res = flips(env, "nginx", nginx.port, ngx, n_flips, interval, None, "/bench", rate, conns)
                rows.append(flips_row("nginx", "rewrite config (`down` for weight 0) + reload (SIGHUP)", res))
                md += rows

        if 5 in parts:
            with guarded(md, "part 5"):
                profile_md = part5(env, api_router, haproxy, nginx, router_ns)

        for t in targets + ([api_router] if api_router else []):
            if t.proc:
                stop(t.proc)

        if 6 in parts: part6(env, md, section, notes, quick)  # noqa: E701

        # ---------------------------------------------------------------- 3
        if 3 in parts:
            with guarded(md, "part 3"):
                section("3. Rollback end to end (`switchyard rollback`)")
                n = 10 if quick else 50
                rows = [
                    "Function `rb` with versions 1.0.0 and 2.0.0 (external endpoints on loopback); each "
                    "sample: `switchyard promote rb 2.0.0` (untimed), then `switchyard rollback rb` timed "
                    "from process start. *Acknowledged*: the CLI prints its one-line confirmation (its first "
                    "line on stdout, timed when it arrives) after every live router replica reported the new "
                    "generation (its RouterReport, docs/protocol.md v2); it exits 0 after one more write (the "
                    "`switchyard.dev/routers` annotation), which nobody waits for. *Confirmed on traffic*: the "
                    "last 2.0.0 response (by `x-switchyard-served-by`) across all replicas, probed at 2 "
                    "connections × 500 req/s per replica. Routers unpinned here (they share 2 cores with "
                    "the API server, etcd, the CLI and the probe).",
                    "",
                    "| router replicas | rollbacks | acknowledged p50 ms | p99 ms | max ms | confirmed on traffic p50 ms | p99 ms | max ms | failed requests |",
                    "|---|---|---|---|---|---|---|---|---|",
                ]
                if not (env.kube and os.path.exists(a.cli) and os.path.exists(a.router)):
                    rows.append("| 1, 3 | — | not measured: the CLI or router binary or the API server is missing | | | | | | |")
                else:
                    for replicas in (1, 3):
                        try:
                            res = rollbacks(env, replicas, n)
                            ac, tr = res["acks"], res["traffic"]
                            rows.append(f"| {replicas} | {len(ac)} | {ms(pct(ac, 50))} | {ms(pct(ac, 99))} | {ms(max(ac))} | "
                                        f"{ms(pct(tr, 50))} | {ms(pct(tr, 99))} | {ms(max(tr))} | {res['failed']} of {res['total']:,} |")
                            st = ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in res["stages"].items())
                            notes.append(f"rollback, {replicas} replica(s): the CLI's own stages (`SWITCHYARD_TIMING=1`, "
                                         f"medians, ms; process start not included): {st or 'not printed'}; "
                                         f"process exit (after the confirmation line) p50 {ms(pct(res['exits'], 50))} / "
                                         f"p99 {ms(pct(res['exits'], 99))} ms; "
                                         f"last output: `{res['sample_output'].splitlines()[0] if res['sample_output'] else ''}`")
                            for line in res["traces"]:
                                log(f"rollback {replicas}: {line}")
                        except Exception as e:  # noqa: BLE001
                            rows.append(f"| {replicas} | — | not measured: {str(e)[:200]} | | | | | | |")
                            log(f"rollback with {replicas}: {e}")
                md += rows

        if 7 in parts:  # the automated canary: abort times, and the cost of judging
            with guarded(md, "part 7"):
                section("7. Automated canary: time to abort, and its cost")
                rows, canary_notes = part7(env, quick)
                md += rows
                notes += canary_notes
        if 8 in parts and env.kube and os.path.exists(a.router):
            with guarded(md, "part 8"):
                section("8. Where the time of one rollback goes")
                md += part8(env, 10 if quick else 20)

        # ---------------------------------------------------------------- 4
        if 4 in parts:
            with guarded(md, "part 4"):
                section("4. Scale")
                try:
                    if a.skip_criterion:
                        raise RuntimeError("skipped (--skip-criterion)")
                    est = criterion(env)
                    md += [
                        "Criterion (`cargo bench -p switchyard-core --bench table`), medians. Each function has 3 "
                        "versions (0 / 90% / 10%), external endpoints. *lookup + pick*: one request's routing "
                        "decision, host + longest-prefix lookup then the weighted pick, requests spread over "
                        "all functions. *one route changed*: what a router's table costs per changed Function "
                        "(clone the served table, replace one route).",
                        "",
                        "| functions × 3 versions | `RoutingTable::build` | per function | lookup + pick per request | one route changed |",
                        "|---|---|---|---|---|",
                    ]
                    for n in ("100", "1000", "10000"):
                        b, lp = est.get(("build", n)), est.get(("lookup_and_pick", n))
                        c1 = est.get(("change_one", n))
                        md.append(f"| {int(n):,} | {fmt_ns(b) if b else 'not measured'} | "
                                  f"{fmt_ns(b / int(n)) if b else '—'} | {fmt_ns(lp) if lp else 'not measured'} | "
                                  f"{fmt_ns(c1) if c1 else 'not measured'} |")
                    p3 = est.get(("pick_3_versions", ""))
                    md += ["", f"`Route::pick` alone (3 versions, one roll): {fmt_ns(p3) if p3 else 'not measured'}.", ""]
                except Exception as e:  # noqa: BLE001
                    md += [f"Criterion: not measured: {e}", ""]
                    log(f"criterion: {e}")
                sizes = [100, 1000] if quick else [100, 1000, 10000]
                scale_profile = []
                rows = [
                    "The router (`--threads 1`, core 0) following the API server, with N functions × 3 versions "
                    "in its namespace (with the largest N, one more function: the one flipped, on this run's upstreams). Start: process start to `/readyz` (first full table: list + build). RSS "
                    "after ready. Weight change: PATCH of the measured function's `spec.traffic` (100/0 ⇄ 0/100 "
                    "between 1.1.0 and 1.2.0), timed from the write to the first response of the new version (a "
                    "polling client) and to the last response of the old one (probe: 4 connections × 500 req/s), "
                    f"and to the router's acknowledgement; {SCALE_CHANGES} changes, each issued once the previous "
                    f"one was on traffic (or {SCALE_CHANGE_WAIT_S} s passed) and acknowledged (or {ACK_WAIT_S} s "
                    "more passed), plus 300 ms.",
                    "",
                    "| functions × 3 versions | objects created in | router start to ready | router RSS MiB | one weight change reaches traffic, p50 / max ms | acknowledged in its RouterReport, p50 / max ms | failed requests |",
                    "|---|---|---|---|---|---|---|",
                ]
                if not (env.kube and os.path.exists(a.router)):
                    rows.append("| — | not measured: no router binary or API server | | | | |")
                else:
                    for size in sizes:
                        ns = SCALE_NS if size == 10000 else f"{SCALE_NS}-{size}"
                        ns, existing = env.scale_namespace(ns, keep=a.keep_scale)
                        t0 = time.monotonic()
                        todo = [i for i in range(size) if f"fn-{i}" not in existing]
                        populate(env, ns, todo)
                        created = (f"{time.monotonic() - t0:.1f} s" if todo else
                                   "(kept from an earlier run, --keep-scale)")
                        change = acked = failed = "—"
                        measured = f"measured-{os.getpid()}"
                        last = size == sizes[-1]
                        if last:
                            # One more function, on this run's upstreams: the one that is flipped.
                            populate(env, ns, [measured], threads=1)
                        r = env.start_router(ns, f"scale-{size}")
                        try:
                            time.sleep(1.0)
                            rss = rss_mib([r.proc.pid])
                            # The replica's API writes at rest (docs/protocol.md: only its Lease).
                            w0, tw0 = api_writes(env), time.monotonic()
                            time.sleep(6.0)
                            rest = per_second(w0, api_writes(env), time.monotonic() - tw0)
                            notes.append(f"scale, {size:,} functions: API writes at rest, one router replica: {rest}")
                            if last:
                                def flip(v, ns=ns):
                                    return env.kube.set_traffic(ns, measured, [
                                        ("1.0.0", 0), ("1.1.0", 1000000 if v == "1.0.0" else 0),
                                        ("1.2.0", 1000000 if v == "2.0.0" else 0)])
                                rec = None
                                if shutil_which("perf"):
                                    data = env.path("perf-scale.data")
                                    rec = subprocess.Popen(["perf", "record", "-F", "999", "-o", data, "-p", str(r.proc.pid)],
                                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                                b0, tb0 = build_metrics(r.admin), time.monotonic()
                                w0 = api_writes(env)
                                res = flips_fn0(env, ns, f"scale-{size}", r.port, flip, measured)
                                b1, tb1 = build_metrics(r.admin), time.monotonic()
                                busy = per_second(w0, api_writes(env), tb1 - tb0)
                                notes.append(f"scale, {size:,} functions: API writes during the {SCALE_CHANGES} "
                                             f"weight changes under the probe's traffic, one router replica: {busy}")
                                if b0 and b1:
                                    n_b, s_b = b1[0] - b0[0], b1[1] - b0[1]
                                    notes.append(
                                        f"scale, {size:,} functions: during the {SCALE_CHANGES} weight changes "
                                        f"({tb1 - tb0:.1f} s) the router built {n_b:.0f} tables "
                                        f"(`switchyard_router_table_build_seconds`), {1000 * s_b / max(1, n_b):.0f} ms "
                                        f"each on average, {100 * s_b / (tb1 - tb0):.0f}% of the time")
                                # The same change through the CLI, as a user makes it: process start to
                                # its confirmation line, and the wait's own "applied ... in N ms".
                                starts, waits = [], []
                                for k in range(SCALE_CHANGES):
                                    split = ["1.1.0=100", "1.2.0=0"] if k % 2 == 0 else ["1.1.0=0", "1.2.0=100"]
                                    took, _, out = confirmed_cli(env, ns, "traffic", measured, *split)
                                    starts.append(took)
                                    m = re.search(r"applied by \d+/\d+ routers in (\d+(?:\.\d+)?)\s*(ms|s)\b", out)
                                    if m:
                                        waits.append(float(m.group(1)) * (1000 if m.group(2) == "s" else 1))
                                    time.sleep(0.3)
                                notes.append(
                                    f"scale, {size:,} functions: one change through the CLI (`switchyard traffic "
                                    f"{measured} …`, {len(starts)} runs): process start to its confirmation line p50 "
                                    f"{ms(pct(starts, 50))} / max {ms(max(starts))} ms; the routers' acknowledgement "
                                    f"as the CLI's wait measures it (write → report) "
                                    + (f"p50 {pct(waits, 50):.0f} / max {max(waits):.0f} ms" if waits else "not printed"))
                                if rec:
                                    rec.send_signal(signal.SIGINT)
                                    rec.wait(60)
                                    for _ in range(3):  # once came back empty right after the recording
                                        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                                                              "--sort", "dso,sym", "--percent-limit", "1.5"],
                                                             capture_output=True, text=True).stdout
                                        scale_profile = [l for l in rep.splitlines()
                                                         if l.strip() and not l.startswith("#")][:20]
                                        if scale_profile:
                                            break
                                        time.sleep(1.0)
                                    if not scale_profile:
                                        scale_profile = [f"(perf report printed nothing; the data is in {data})"]
                                e = res["effects"]
                                ak = res["acked"]
                                seen = [x for x in res["seen"] if x is not None]
                                missed = len(res["seen"]) - len(seen)
                                change = (f"first new-version response {ms(pct(seen, 50))} / {ms(max(seen))}; "
                                          if seen else "") + \
                                    (f"{missed} of {len(res['seen'])} not on traffic within {SCALE_CHANGE_WAIT_S} s; " if missed else "") + \
                                    f"last old-version response {ms(pct(e, 50))} / {ms(max(e))}"
                                acked = (f"{ms(pct(ak, 50))} / {ms(max(ak))}" if ak else "—") + \
                                    f" ({len(ak)} of {len(e)} acknowledged within {ACK_WAIT_S} s)"
                                failed = f"{res['failed']} of {res['total']:,}"
                        finally:
                            stop(r.proc)
                            if last:
                                env.kube.delete_function(ns, measured)
                        label = f"{size:,}" + (" + 1 measured" if last else "")
                        rows.append(f"| {label} | {created} | {r.ready_s * 1000:.0f} ms | {rss:.1f} | {change} | {acked} | {failed} |")
                    if quick:
                        notes.append("scale: 10,000 functions not measured with --quick (creating 40,000 objects takes minutes)")
                md += rows
                if scale_profile:
                    md += ["", f"Where the router's CPU went during those {sizes[-1]:,}-function weight changes "
                           f"(`perf record -F 999 -p <router>` over the {SCALE_CHANGES} changes, under the probe's traffic; self time):",
                           "", "```"] + scale_profile + ["```"]
    finally:
        stop_all()
        if env.kube:
            for ns in env.namespaces:
                env.kube.clean(ns)

    md += profile_md
    if notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    md += ["", f"Load average at the end (`uptime`): {uptime_load()}", ""]
    text = "\n".join(md) + "\n"
    # Hand-written analysis below the marker survives a new run.
    try:
        old = open(a.out).read()
        if KEEP_MARKER in old:
            text += "\n" + old[old.index(KEEP_MARKER):]
    except OSError:
        pass
    open(a.out, "w").write(text)
    print(text)


def api_writes(env):
    """The API server's write counts so far, by (verb, resource)."""
    try:
        return env.kube.write_counts()
    except (RuntimeError, OSError):
        return None


def per_second(before, after, seconds):
    """Router writes per second between two api_writes readings: Lease and RouterReport writes
    (the bench's own PATCHes of Functions are left out)."""
    if before is None or after is None or seconds <= 0:
        return "not measured (the API server's /metrics could not be read)"
    parts = []
    for resource in ("leases", "routerreports"):
        n = sum(v - before.get(k, 0) for k, v in after.items() if k[1] == resource)
        parts.append(f"{resource} {n / seconds:.2f}/s")
    return ", ".join(parts) + f" (over {seconds:.1f} s)"


def build_metrics(admin):
    """(count, sum seconds) of the router's table builds, from /metrics; None if absent."""
    try:
        status, _, body = http_get(admin, "/metrics", timeout=10)
    except OSError:
        return None
    text = body.decode(errors="replace")
    c = re.search(r"^switchyard_router_table_build_seconds_count(?:\{[^}]*\})? (\S+)$", text, re.M)
    t = re.search(r"^switchyard_router_table_build_seconds_sum(?:\{[^}]*\})? (\S+)$", text, re.M)
    return (float(c.group(1)), float(t.group(1))) if status == 200 and c and t else None


def flips_fn0(env, ns, replica, port, flip, fn):
    """Part 4's weight change: versions 1.1.0 (`1.0.0` side) and 1.2.0 (`2.0.0` side) of fn-0.

    Each change waits for the router's acknowledgement of its generation (then 300 ms more)
    before the next, so that a slow change is measured whole, not cut by the next one."""
    out = env.path("scale-flips.txt")
    flip("1.0.0")
    time.sleep(0.5)
    stop_file = out + ".stop"
    p = probe(env, [(port, 4)], out, 600, rate=500, header="x-switchyard-served-by", path=f"/{fn}",
              stop_file=stop_file)
    time.sleep(0.5)
    issued, acked, seen = [], [], []
    want = {"1.0.0": "1.1.0", "2.0.0": "1.2.0"}
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    for i in range(SCALE_CHANGES):
        new = "2.0.0" if i % 2 == 0 else "1.0.0"
        t0 = now_ns()
        _gen, rv = flip(new)
        issued.append((t0, now_ns(), new))

        def served():
            try:
                conn.request("GET", f"/{fn}")
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException):
                conn.close()  # reconnects on the next request
                raise
            by = r.getheader("x-switchyard-served-by") or ""
            return now_ns() if by.endswith("@" + want[new]) else None
        try:
            seen.append(wait_for("the new version on traffic", served, timeout=SCALE_CHANGE_WAIT_S,
                                 interval=0.002) - t0)
        except RuntimeError:
            seen.append(None)

        def ack():
            # docs/protocol.md: the replica's report has read past the write and does not
            # list the Function as pending or refused.
            st = (env.kube.report(ns, replica) or {}).get("status") or {}
            applied = int(((st.get("applied") or {}).get("functions")) or 0)
            listed = any(x.get("name") == fn and x.get("namespace") == ns
                         for x in st.get("exceptions") or [])
            return now_ns() if applied >= rv and not listed else None
        try:
            acked.append(wait_for("the router's acknowledgement", ack, timeout=ACK_WAIT_S, interval=0.005) - t0)
        except RuntimeError:
            pass
        time.sleep(0.3)
    time.sleep(0.3)
    open(stop_file, "w").close()
    p.wait()
    STARTED.remove(p)
    rows = read_probe(out)
    # the function's versions are 1.1.0 / 1.2.0: map them onto the flip's two sides
    rows = [(t, g, {"1.1.0": "1.0.0", "1.2.0": "2.0.0"}.get(v, v), s) for t, g, v, s in rows]
    res = analyse_flips(rows, issued, now_end=rows[-1][0] + 1 if rows else 0)
    res["acked"] = acked
    res["seen"] = seen
    return res

if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
