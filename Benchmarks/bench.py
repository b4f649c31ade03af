"""Berth's benchmarks, side by side with its peers in the same run (Benchmarks/run.sh builds and calls this).

Every figure that matters is a ratio between programs measured minutes apart on the same machine, so a noisy
shared machine still gives a fair comparison. Sections (each can be skipped with --skip):

  rpc      ping and boot_instance from K = 1, 8, 32 concurrent callers against (a) a Berth worker, (b) the
           oslo.messaging peer (Benchmarks/peer/oslo_peer.py), (c) the C responder (the broker ceiling);
           calls/s, p50/p99, CPU per call of server, broker and load generator; RSS idle and under K = 32;
           start-up time (spawn → answer to a ping already waiting in its queue).
  scale    Berth pools of 1, 2 and 4 workers under the same load, CPU seconds per process from /proc.
  deploy   a 2 GiB-virtual qcow2 (~30 % data) to a disk file: berth deploy vs qemu-img convert -O raw
           (-S 4k and -S 0) vs dd; wall time, peak RSS (/usr/bin/time -v), allocated bytes of the output.

Prints one table and writes every raw figure as JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import amqp

BROKER = "amqp://guest:guest@127.0.0.1:5672/"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20


# --- processes ----------------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int, key: str) -> int:
    """A /proc/<pid>/status figure in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def memory_rollup(pid: int) -> dict:
    """RSS, PSS (shared pages divided among their users) and private bytes, from /proc/<pid>/smaps_rollup. A
    Swift worker's RSS is mostly shared library text (libswiftCore, Foundation, libvirt), which PSS spreads
    over every process mapping it; private is what this process alone holds."""
    figures = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Anonymous"):
                figures[key] = int(rest.split()[0]) * 1024
    return {"rss": figures.get("Rss", 0), "pss": figures.get("Pss", 0),
            "private": figures.get("Private_Clean", 0) + figures.get("Private_Dirty", 0),
            "anonymous": figures.get("Anonymous", 0)}


def reset_peak_rss(pid: int) -> None:
    """Resets VmHWM to the current RSS (Linux ≥ 4.0), so the next reading is the peak of what follows."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def broker_pid() -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        # The broker runs `-s rabbit boot`; rabbitmqctl runs in a short-lived beam.smp of its own.
        if cmd and cmd[0].endswith(b"beam.smp") and b"rabbit" in cmd and b"boot" in cmd:
            return int(entry)
    return None


def load_average() -> float:
    return os.getloadavg()[0]


class Broker:
    """py-amqp for set-up only: declarations, the start-up ping, clean-up. Never on the measured path."""

    def __init__(self):
        self.conn = amqp.Connection(host="127.0.0.1:5672", userid="guest", password="guest", virtual_host="/")
        self.conn.connect()
        self.channel = self.conn.channel()

    def declare_topic(self, exchange: str, topic: str):
        # Exactly oslo's default flags (OSLO-WIRE §2), so the servers' own declarations agree.
        self.channel.exchange_declare(exchange, "topic", durable=False, auto_delete=False)
        self.channel.queue_declare(topic, durable=False, auto_delete=False)
        self.channel.queue_bind(topic, exchange, topic)

    def delete_queues(self, *names: str):
        for name in names:
            try:
                self.channel.queue_delete(name)
            except amqp.exceptions.AMQPError:
                self.channel = self.conn.channel()

    def delete_exchange(self, name: str):
        try:
            self.channel.exchange_delete(name)
        except amqp.exceptions.AMQPError:
            self.channel = self.conn.channel()

    def timed_start(self, exchange: str, topic: str, host: str, spawn, timeout: float = 60):
        """Publishes a ping call to `<topic>.<host>`, spawns that server, and returns (server, seconds from spawn
        to the reply): start-up until the server consumes and answers, measured alike for every server. (The
        server's own queue, so that in a pool the answer comes from the new worker, not a running one.)"""
        self.declare_topic(exchange, topic)
        self.declare_topic(exchange, f"{topic}.{host}")
        topic = f"{topic}.{host}"
        reply_q = "reply_" + uuid.uuid4().hex
        self.channel.queue_declare(reply_q, durable=False, auto_delete=True, exclusive=True)
        msg_id = uuid.uuid4().hex
        inner = {"method": "ping", "args": {}, "version": "1.0", "_msg_id": msg_id, "_reply_q": reply_q,
                 "_timeout": None, "_unique_id": uuid.uuid4().hex, "_context_request_id": f"req-{uuid.uuid4()}"}
        body = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)})
        self.channel.basic_publish(
            amqp.Message(body, content_type="application/json", content_encoding="utf-8", delivery_mode=2,
                         priority=0, application_headers={}, expiration=str(int(timeout * 1000))),
            exchange=exchange, routing_key=topic)
        got = {}

        def on_reply(message):
            reply = json.loads(json.loads(message.body)["oslo.message"])
            if reply.get("_msg_id") == msg_id and reply.get("ending"):
                got["at"] = time.monotonic()

        tag = self.channel.basic_consume(reply_q, callback=on_reply, no_ack=True)
        started = time.monotonic()
        server = spawn()
        deadline = started + timeout
        while "at" not in got:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.label} exited with {server.proc.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.label} did not answer a ping within {timeout} s:\n{server.log_tail()}")
            try:
                self.conn.drain_events(timeout=0.05)
            except TimeoutError:
                pass
        self.channel.basic_cancel(tag)  # the queue is auto-delete: it goes with its consumer
        return server, got["at"] - started

    def close(self):
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


class Server:
    def __init__(self, label: str, argv: list[str], log_path: str, env: dict | None = None):
        self.label, self.argv, self.log_path = label, argv, log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


# --- the bench --------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = args.root
        self.tools = args.tools
        self.berth = args.berth
        self.python = sys.executable
        self.work = tempfile.mkdtemp(prefix="berth-bench-", dir=args.workdir)
        self.run_id = uuid.uuid4().hex[:8]
        self.exchange = f"bench-{self.run_id}"
        self.broker = Broker()
        self.beam = broker_pid()
        self.results: dict = {"machine": machine_info(args), "rpc": {}, "startup": {}, "memory": {}, "scale": [],
                              "deploy": {}, "checks": {}}
        self.catalog = os.path.join(self.work, "catalog")
        self.image_id = None
        self.queues: list[str] = []

    def log(self, text: str):
        print(f"[bench {time.strftime('%H:%M:%S')} load {load_average():.2f}] {text}", file=sys.stderr, flush=True)

    def sh(self, *argv, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kwargs)

    # --- set-up

    def make_catalog(self):
        os.makedirs(self.catalog, exist_ok=True)
        disk = os.path.join(self.work, "root.raw")
        with open(disk, "wb") as f:
            f.write(b"\0" * MiB)
        out = self.sh(self.berth, "images", "create", "--catalog", f"local:{self.catalog}", "--name", "bench-root",
                      "--disk-format", "raw", "--file", disk)
        self.image_id = json.loads(out.stdout)["id"]

    # --- servers

    def spawn(self, kind: str, topic: str, host: str):
        log = os.path.join(self.work, f"{kind}-{host}.log")
        state = os.path.join(self.work, f"state-{host}")
        os.makedirs(state, exist_ok=True)
        notifications = f"{topic}_notifications"
        if kind == "berth":
            argv = [self.berth, "worker", "--transport-url", BROKER, "--host", host, "--control-exchange",
                    self.exchange, "--topic", topic, "--libvirt-uri", "test:///default", "--catalog",
                    f"local:{self.catalog}", "--state-dir", state, "--metrics-interval", "0", "--concurrency",
                    str(self.args.berth_concurrency), "--notification-topic", notifications, "--log-level",
                    self.args.berth_log_level]
        elif kind == "oslo":
            argv = [self.python, os.path.join(self.root, "Benchmarks", "peer", "oslo_peer.py"), "--url", BROKER,
                    "--exchange", self.exchange, "--topic", topic, "--host", host, "--catalog", self.catalog,
                    "--state-dir", state, "--notification-topic", notifications]
        elif kind == "c":
            argv = [os.path.join(self.tools, "responder"), "--url", BROKER, "--exchange", self.exchange, "--topic",
                    topic, "--host", host]
        else:
            raise ValueError(kind)
        self.queues += [topic, f"{topic}.{host}", f"{notifications}.info", f"{notifications}.error"]
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        return lambda: Server(f"{kind}:{host}", argv, log, env=env)

    def loadgen(self, topic: str, method: str, calls: int, k: int, uuid_out: str | None = None,
                uuid_in: str | None = None, generators: int = 1) -> dict:
        """Runs the C load generator(s); with several, each holds K/generators calls on its own connection."""
        procs = []
        for g in range(generators):
            argv = [os.path.join(self.tools, "loadgen"), "--url", BROKER, "--exchange", self.exchange, "--topic",
                    topic, "--method", method, "--calls", str(calls // generators), "--concurrency",
                    str(max(1, k // generators)), "--timeout", "120"]
            if method == "boot_instance":
                argv += ["--image", self.image_id]
            if uuid_out:
                argv += ["--uuid-out", f"{uuid_out}.{g}"]
            if uuid_in:
                argv += ["--uuid-in", f"{uuid_in}.{g}"]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=900)
            if p.returncode != 0:
                raise RuntimeError(f"loadgen failed ({p.returncode}): {err.strip()}")
            reports.append(json.loads(out))
        if len(reports) == 1:
            return reports[0]
        merged = dict(reports[0])
        merged["calls"] = sum(r["calls"] for r in reports)
        merged["failures"] = sum(r["failures"] for r in reports)
        merged["seconds"] = max(r["seconds"] for r in reports)
        merged["calls_per_s"] = sum(r["calls_per_s"] for r in reports)
        merged["cpu_seconds"] = sum(r["cpu_seconds"] for r in reports)
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
            merged[key] = max(r[key] for r in reports)
        merged["generators"] = generators
        return merged

    def generators(self, k: int) -> int:
        """Generator processes for K callers: one connection (one broker channel process) per generator, so the
        callers' side is spread like the many client processes it stands for."""
        return max(1, min(self.args.generators, k // 4))

    def measured(self, pids: list[int], run) -> dict:
        """Runs `run()` (a loadgen) and adds the CPU seconds each process and the broker spent meanwhile."""
        before = {pid: proc_cpu(pid) for pid in pids}
        beam_before = proc_cpu(self.beam) if self.beam else 0
        started = time.monotonic()
        report = run()
        wall = time.monotonic() - started
        report["server_cpu_seconds"] = {str(pid): round(proc_cpu(pid) - before[pid], 3) for pid in pids}
        try:
            report["broker_cpu_seconds"] = round(proc_cpu(self.beam) - beam_before, 3) if self.beam else None
        except FileNotFoundError:  # someone restarted the broker
            self.beam = broker_pid()
            report["broker_cpu_seconds"] = None
        report["wall_seconds"] = round(wall, 3)
        return report

    def delete_booted(self, topic: str, uuids: str):
        """Deletes what a boot run made (not measured), so every run starts from an empty host."""
        names = []
        for g in range(8):
            if os.path.exists(f"{uuids}.{g}"):
                with open(f"{uuids}.{g}") as f:
                    names += [line.strip() for line in f if line.strip()]
        with open(f"{uuids}.all.0", "w") as f:
            f.write("".join(name + "\n" for name in names))
        if names:
            self.loadgen(topic, "delete_instance", len(names), 32, uuid_in=f"{uuids}.all")

    # --- sections

    def rpc(self):
        a = self.args
        for kind in self.args.servers:
            topic = f"bench_{self.run_id}_{kind}"
            host = f"{kind}-1"
            spawn = self.spawn(kind, topic, host)
            starts = []
            server = None
            for attempt in range(a.starts):
                server, seconds = self.broker.timed_start(self.exchange, topic, host, spawn)
                starts.append(seconds)
                at_start = memory_rollup(server.pid)
                if attempt < a.starts - 1:
                    server.stop()
            self.results["startup"][kind] = {"seconds": starts, "median": statistics.median(starts)}
            self.log(f"{kind}: started in {statistics.median(starts) * 1000:.0f} ms (median of {len(starts)})")
            pids = [server.pid]
            try:
                # Warm-up (not reported): first connections, caches, lazy initialisation.
                self.loadgen(topic, "ping", 200, 8)
                if kind != "c":
                    # Enough boots that a worker's lazily made files (lock stripes, image cache) exist, as on
                    # any host that has been running for a while.
                    warm = os.path.join(self.work, f"warm-{kind}")
                    self.loadgen(topic, "boot_instance", 512, 32, uuid_out=warm, generators=self.generators(32))
                    self.delete_booted(topic, warm)
                time.sleep(1)
                idle = memory_rollup(server.pid)
                memory = {"rss_start": at_start["rss"], "rss_idle": idle["rss"], "start": at_start, "idle": idle}
                self.results["rpc"][kind] = {}
                for method, calls in (("ping", a.ping_calls), ("boot_instance", a.boot_calls)):
                    if kind == "c" and method == "boot_instance":
                        calls = a.ping_calls
                    for k in (1, 8, 32):
                        if k == 32:
                            reset_peak_rss(server.pid)
                        booted = os.path.join(self.work, f"booted-{kind}-{k}") if method == "boot_instance" else None
                        report = self.measured(pids, lambda: self.loadgen(
                            topic, method, calls, k, uuid_out=booted if kind != "c" else None,
                            generators=self.generators(k)))
                        if k == 32:
                            memory[f"rss_peak_k32_{method}"] = proc_status(server.pid, "VmHWM")
                            memory[f"after_k32_{method}"] = memory_rollup(server.pid)
                        if report["failures"]:
                            raise RuntimeError(f"{kind} {method} K={k}: {report['failures']} failures, e.g. "
                                               f"{report['first_failure']}")
                        self.results["rpc"][kind][f"{method}/{k}"] = report
                        self.log(f"{kind} {method} K={k}: {report['calls_per_s']:.0f} calls/s p50 "
                                 f"{report['p50_ms']:.2f} ms p99 {report['p99_ms']:.2f} ms")
                        if booted and kind != "c":
                            self.delete_booted(topic, booted)
                if kind == "c":
                    # Is the generator the limit? Twice as many generator processes sharing K = 32 should not
                    # go faster.
                    more = 2 * self.generators(32)
                    report = self.measured(pids, lambda: self.loadgen(topic, "ping", a.ping_calls, 32, generators=more))
                    self.results["checks"]["ceiling_more_generators"] = report
                    self.log(f"c ping K=32 with {more} generators: {report['calls_per_s']:.0f} calls/s")
                self.results["memory"][kind] = memory
            finally:
                code = server.stop()
                if code not in (0, -signal.SIGTERM):
                    self.log(f"{kind} exited with {code}:\n{server.log_tail()}")

    def scale(self):
        a = self.args
        for workers in (1, 2, 4):
            topic = f"bench_{self.run_id}_pool{workers}"
            servers = []
            try:
                for i in range(workers):
                    host = f"p{workers}-{i}"
                    server, _ = self.broker.timed_start(self.exchange, topic, host, self.spawn("berth", topic, host))
                    servers.append(server)
                pids = [s.pid for s in servers]
                warm = os.path.join(self.work, f"warm-pool{workers}")
                self.loadgen(topic, "boot_instance", 512, 32, uuid_out=warm, generators=self.generators(32))
                self.delete_booted(topic, warm)
                row = {"workers": workers}
                for method, calls in (("ping", a.ping_calls), ("boot_instance", a.boot_calls)):
                    booted = os.path.join(self.work, f"booted-pool{workers}") if method == "boot_instance" else None
                    report = self.measured(pids, lambda: self.loadgen(topic, method, calls, 32, uuid_out=booted,
                                                                      generators=self.generators(32)))
                    if report["failures"]:
                        raise RuntimeError(f"pool of {workers}: {report['failures']} failures: {report['first_failure']}")
                    row[method] = report
                    self.log(f"pool of {workers} {method} K=32: {report['calls_per_s']:.0f} calls/s; worker CPU "
                             f"{sum(report['server_cpu_seconds'].values()):.2f} s, broker {report['broker_cpu_seconds']} s "
                             f"in {report['wall_seconds']} s")
                    if booted:
                        self.delete_booted(topic, booted)
                self.results["scale"].append(row)
            finally:
                for s in servers:
                    s.stop()

    def deploy(self):
        a = self.args
        d = os.path.join(self.work, "deploy")
        os.makedirs(d, exist_ok=True)
        raw, qcow2 = os.path.join(d, "image.raw"), os.path.join(d, "image.qcow2")
        virtual = a.deploy_gib << 30
        self.log(f"making a {a.deploy_gib} GiB-virtual image with ~30 % data")
        # A partitioned whole-disk image (GPT, one partition leaving room for the config drive at the end),
        # data in 1 MiB runs spread over the partition: 3 of every 10 MiB, random bytes (incompressible,
        # never zero, so no writer can skip them).
        with open(raw, "wb") as f:
            f.truncate(virtual)
        self.sh("sgdisk", "-n", f"1:2048:+{a.deploy_gib * 1024 - 128}M", "-t", "1:8300", "-c", "1:root", raw)
        blocks = virtual // MiB
        with open(raw, "r+b") as f:
            for i in range(1, blocks - 128):
                if i % 10 in (1, 4, 7):
                    f.seek(i * MiB)
                    f.write(os.urandom(MiB))
        self.sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
        image_data = qcow2_data_bytes(qcow2)
        catalog = os.path.join(d, "catalog")
        out = self.sh(self.berth, "images", "create", "--catalog", f"local:{catalog}", "--name", "deploy-bench",
                      "--disk-format", "qcow2", "--file", qcow2)
        image_id = json.loads(out.stdout)["id"]
        target = os.path.join(d, "out.disk")
        state = os.path.join(d, "state")
        deploy_argv = [self.berth, "deploy", "--catalog", f"local:{catalog}", "--image", image_id, "--node",
                       f"n={target}", "--state-dir", state, "--quiet"]

        def first_use():
            # The catalog hashed the image when it was imported and keeps a stamp of that beside the data; without
            # it the deploy hashes the whole image first (a host's first use of data it did not import itself).
            stamp = os.path.join(catalog, "images", image_id + ".verified")
            if os.path.exists(stamp):
                os.unlink(stamp)
            return deploy_argv, True

        variants = {
            "berth deploy": lambda: (deploy_argv, True),
            "berth deploy, hashing": first_use,
            "qemu-img convert -S 4k": lambda: (["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-S", "4k", qcow2,
                                                target], False),
            "qemu-img convert -S 0": lambda: (["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-S", "0", qcow2,
                                               target], False),
            "dd (all bytes)": lambda: (["dd", f"if={raw}", f"of={target}", "bs=4M", "conv=fsync", "status=none"], False),
            "dd conv=sparse": lambda: (["dd", f"if={raw}", f"of={target}", "bs=4M", "conv=sparse,fsync",
                                        "status=none"], False),
        }
        # Sources in the page cache for every variant alike.
        for path in (raw, qcow2, os.path.join(catalog, "images", image_id + ".data")):
            with open(path, "rb") as f:
                while f.read(16 * MiB):
                    pass
        self.results["deploy"] = {"virtual_bytes": virtual, "image_data_bytes": image_data,
                                  "qcow2_file_bytes": os.path.getsize(qcow2), "variants": {}}
        for name, make in variants.items():
            runs = []
            for _ in range(a.deploy_runs):
                if os.path.exists(target):
                    os.unlink(target)
                shutil.rmtree(state, ignore_errors=True)
                argv, needs_disk = make()
                if needs_disk:
                    with open(target, "wb") as f:
                        f.truncate(virtual)  # the node's disk: a file of the image's size
                subprocess.run(["sync"], check=False)
                started = time.monotonic()
                proc = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} failed: {proc.stderr[-2000:]}")
                # Every writer's figure ends with its output on disk: berth deploy and dd fsync themselves,
                # qemu-img convert does not (its default cache mode for the output skips the flush), so an
                # fsync of the output file (coreutils `sync FILE`, not the whole file system) is part of it.
                subprocess.run(["sync", target], check=True)
                wall = time.monotonic() - started
                rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) * 1024
                runs.append({"seconds": wall, "peak_rss": rss, "allocated": os.stat(target).st_blocks * 512})
            # Correctness: the partition's bytes equal the image's.
            same = subprocess.run(["cmp", "-s", "-i", str(MiB), "-n", str(virtual - 129 * MiB), raw, target]).returncode == 0
            seconds = statistics.median(r["seconds"] for r in runs)
            self.results["deploy"]["variants"][name] = {
                "runs": runs, "seconds": seconds, "peak_rss": max(r["peak_rss"] for r in runs),
                "allocated": statistics.median(r["allocated"] for r in runs), "content_matches": same}
            self.log(f"deploy {name}: {seconds:.2f} s, peak RSS {max(r['peak_rss'] for r in runs) / MiB:.1f} MiB, "
                     f"allocated {runs[-1]['allocated'] / MiB:.0f} MiB, content {'ok' if same else 'DIFFERS'}")
        os.unlink(target)

    # --- run

    def run(self):
        started = time.monotonic()
        self.results["machine"]["load_average_start"] = os.getloadavg()
        self.log(f"work directory {self.work}; broker pid {self.beam}")
        try:
            self.make_catalog()
            if "rpc" not in self.args.skip:
                self.rpc()
            if "scale" not in self.args.skip:
                self.scale()
            if "deploy" not in self.args.skip:
                self.deploy()
        finally:
            self.broker.delete_queues(*self.queues)
            self.broker.delete_exchange(self.exchange)
            self.broker.close()
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        self.results["machine"]["load_average_end"] = os.getloadavg()
        self.results["seconds"] = round(time.monotonic() - started, 1)
        return self.results


def qcow2_data_bytes(path: str) -> int:
    """Bytes of the image that hold data (allocated, not zero), from qemu-img map."""
    extents = json.loads(subprocess.run(["qemu-img", "map", "--output=json", path], check=True, capture_output=True,
                                        text=True).stdout)
    return sum(e["length"] for e in extents if e.get("data") and not e.get("zero"))


def machine_info(args) -> dict:
    def first(argv, pattern=None):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        if pattern:
            m = re.search(pattern, out)
            return m.group(1).strip() if m else None
        return out.strip().splitlines()[0] if out.strip() else None

    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    fs = first(["df", "-T", args.workdir or tempfile.gettempdir()], r"\n\S+\s+(\S+)")
    import oslo_messaging  # noqa: F401  (the version, below)
    from importlib.metadata import version
    return {
        "cpu": first(["lscpu"], r"Model name:\s*(.*)"),
        "cores": os.cpu_count(),
        "memory_gib": round(mem / (1 << 30), 1),
        "kernel": platform.release(),
        "rabbitmq": first(["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"]),
        "libvirt": first(["dpkg-query", "-W", "-f", "${Version}", "libvirt-daemon"]),
        "librabbitmq": first(["pkg-config", "--modversion", "librabbitmq"]),
        "qemu_img": first(["qemu-img", "--version"]),
        "swift": first(["swift", "--version"]),
        "python": platform.python_version(),
        "oslo.messaging": version("oslo.messaging"),
        "filesystem": fs,
    }


# --- the table ----------------------------------------------------------------------------------------


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def table(r: dict) -> str:
    out = []
    m = r["machine"]
    out.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
               f"{m['filesystem']}; RabbitMQ {m['rabbitmq']}, libvirt {m['libvirt']}, oslo.messaging "
               f"{m['oslo.messaging']}; load average {m['load_average_start'][0]:.2f} at start, "
               f"{m.get('load_average_end', [0])[0]:.2f} at end; {r.get('seconds', 0):.0f} s")
    rpc = r["rpc"]
    if rpc:
        out.append("")
        out.append("RPC (C load generator, closed loop of K callers): calls/s, latency p50/p99 in ms, server CPU ms "
                   "per call")
        head = f"{'method':<14}{'K':>3} | {'berth':>26} | {'oslo peer':>26} | {'C ceiling':>26} | " \
               f"{'berth/peer':>10} {'berth/ceil':>10} {'p99 b/p':>8}"
        out.append(head)
        out.append("-" * len(head))
        for method in ("ping", "boot_instance"):
            for k in (1, 8, 32):
                cells, rates = [], {}
                for kind in ("berth", "oslo", "c"):
                    rep = rpc.get(kind, {}).get(f"{method}/{k}")
                    if not rep:
                        cells.append(f"{'-':>26}")
                        continue
                    rates[kind] = rep
                    cells.append(f"{rep['calls_per_s']:7.0f} {rep['p50_ms']:6.2f}/{rep['p99_ms']:<7.2f}"
                                 f"{cpu_per_call(rep):>5}")
                b, p, c = rates.get("berth"), rates.get("oslo"), rates.get("c")
                bp = b["calls_per_s"] / p["calls_per_s"] if b and p else None
                bc = b["calls_per_s"] / c["calls_per_s"] if b and c else None
                lat = b["p99_ms"] / p["p99_ms"] if b and p else None
                out.append(f"{method:<14}{k:>3} | " + " | ".join(cells) +
                           f" | {fmt_ratio(bp):>10} {fmt_ratio(bc):>10} {fmt_ratio(lat):>8}")
        gen = [rep for reps in rpc.values() for rep in reps.values()]
        worst = max(rep["cpu_seconds"] / rep["seconds"] for rep in gen)
        out.append(f"load generator CPU: at most {worst * 100:.0f} % of one core in any run")
        more = r["checks"].get("ceiling_more_generators")
        if more and rpc.get("c", {}).get("ping/32"):
            out.append(f"ceiling ping K=32 with {more.get('generators', 1)} generator processes: "
                       f"{more['calls_per_s']:.0f} calls/s (as measured, {rpc['c']['ping/32'].get('generators', 1)}: "
                       f"{rpc['c']['ping/32']['calls_per_s']:.0f})")
    if r["memory"] or r["startup"]:
        out.append("")
        out.append(f"{'server':<10}{'start→answer ms':>17}{'RSS start MiB':>15}{'RSS idle MiB':>14}"
                   f"{'RSS peak K=32 MiB':>19}{'idle PSS/private MiB':>22}{'K=32 PSS/private MiB':>22}")
        for kind in ("berth", "oslo", "c"):
            s = r["startup"].get(kind)
            mem = r["memory"].get(kind, {})
            peak = max([v for key, v in mem.items() if key.startswith("rss_peak")] or [0])
            idle = mem.get("idle", {})
            loaded = mem.get("after_k32_boot_instance") or mem.get("after_k32_ping") or {}
            out.append(f"{kind:<10}{(s['median'] * 1000 if s else 0):>17.0f}{mem.get('rss_start', 0) / MiB:>15.1f}"
                       f"{mem.get('rss_idle', 0) / MiB:>14.1f}{peak / MiB:>19.1f}"
                       f"{idle.get('pss', 0) / MiB:>15.1f}/{idle.get('private', 0) / MiB:<6.1f}"
                       f"{loaded.get('pss', 0) / MiB:>15.1f}/{loaded.get('private', 0) / MiB:<6.1f}")
    if r["scale"]:
        out.append("")
        out.append("Scale-out (Berth workers, K=32): calls/s; CPU seconds during the run: workers (each) / broker / "
                   "load generator; wall s")
        for row in r["scale"]:
            for method in ("ping", "boot_instance"):
                rep = row[method]
                each = "+".join(f"{v:.1f}" for v in rep["server_cpu_seconds"].values())
                busy = (sum(rep["server_cpu_seconds"].values()) + (rep["broker_cpu_seconds"] or 0)
                        + rep["cpu_seconds"]) / rep["wall_seconds"]
                out.append(f"  {row['workers']} worker(s) {method:<14}{rep['calls_per_s']:7.0f}/s   workers {each} "
                           f"/ broker {rep['broker_cpu_seconds']:.1f} / gen {rep['cpu_seconds']:.1f} in "
                           f"{rep['wall_seconds']:.1f} s = {busy:.2f} of {r['machine']['cores']} cores")
    dep = r["deploy"]
    if dep.get("variants"):
        out.append("")
        out.append(f"Deploy: {dep['virtual_bytes'] / (1 << 30):.0f} GiB virtual qcow2, "
                   f"{dep['image_data_bytes'] / MiB:.0f} MiB data ({dep['image_data_bytes'] / dep['virtual_bytes'] * 100:.0f} %),"
                   f" file {dep['qcow2_file_bytes'] / MiB:.0f} MiB; median of {len(next(iter(dep['variants'].values()))['runs'])}")
        ref = dep["variants"].get("qemu-img convert -S 4k")
        out.append(f"{'writer':<24}{'seconds':>9}{'vs -S 4k':>10}{'peak RSS MiB':>14}{'allocated MiB':>15}"
                   f"{'vs data':>9}  content")
        for name, v in dep["variants"].items():
            ratio = v["seconds"] / ref["seconds"] if ref else None
            out.append(f"{name:<24}{v['seconds']:>9.2f}{fmt_ratio(ratio):>10}{v['peak_rss'] / MiB:>14.1f}"
                       f"{v['allocated'] / MiB:>15.0f}{v['allocated'] / dep['image_data_bytes']:>8.2f}x  "
                       f"{'same' if v['content_matches'] else 'DIFFERS'}")
    out.append("")
    out.append(goals(r))
    return "\n".join(out)


def cpu_per_call(rep: dict) -> str:
    server = sum(rep.get("server_cpu_seconds", {}).values())
    return f"{server / rep['calls'] * 1000:.2f}" if rep.get("calls") else "-"


def goals(r: dict) -> str:
    lines = ["Goals (ratios from this run):"]

    def check(name, ok, detail):
        lines.append(f"  [{'met ' if ok else 'MISS'}] {name}: {detail}")

    rpc = r["rpc"]
    b, p, c = rpc.get("berth", {}), rpc.get("oslo", {}), rpc.get("c", {})
    if b.get("boot_instance/32") and p.get("boot_instance/32"):
        x = b["boot_instance/32"]["calls_per_s"] / p["boot_instance/32"]["calls_per_s"]
        check("boot throughput K=32 >= 5x peer", x >= 5, f"{x:.2f}x")
    if b.get("ping/32") and c.get("ping/32"):
        worst = min(b[f"ping/{k}"]["calls_per_s"] / c[f"ping/{k}"]["calls_per_s"] for k in (1, 8, 32))
        x = b["ping/32"]["calls_per_s"] / c["ping/32"]["calls_per_s"]
        check("ping throughput >= 60 % of C ceiling", x >= 0.6, f"K=32 {x * 100:.0f} %, lowest over K {worst * 100:.0f} %")
    if b and p:
        worst = max(b[key]["p99_ms"] / p[key]["p99_ms"] for key in b if key in p)
        check("p99 latency <= 1/3 of peer", worst <= 1 / 3, f"worst over methods and K {worst:.2f}x")
    mem = r["memory"].get("berth")
    if mem:
        peak = max(v for key, v in mem.items() if key.startswith("rss_peak"))
        check("RSS idle <= 30 MiB", mem["rss_idle"] <= 30 * MiB, f"{mem['rss_idle'] / MiB:.1f} MiB")
        check("RSS under load <= 64 MiB", peak <= 64 * MiB, f"{peak / MiB:.1f} MiB")
    dep = r["deploy"].get("variants", {})
    if dep.get("berth deploy") and dep.get("qemu-img convert -S 4k"):
        v, q = dep["berth deploy"], dep["qemu-img convert -S 4k"]
        hashing = dep.get("berth deploy, hashing")
        first = f"; {hashing['seconds'] / q['seconds']:.2f}x when it first hashes the image" if hashing else ""
        check("deploy time <= 1.0x qemu-img -S 4k", v["seconds"] <= q["seconds"],
              f"{v['seconds'] / q['seconds']:.2f}x{first}")
        check("deploy peak RSS <= 64 MiB", v["peak_rss"] <= 64 * MiB, f"{v['peak_rss'] / MiB:.1f} MiB")
        data = r["deploy"]["image_data_bytes"]
        check("deploy allocation within 5 % of data", abs(v["allocated"] - data) <= 0.05 * data,
              f"{(v['allocated'] - data) / data * 100:+.1f} %")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--berth", required=True, help="the release-built berth executable")
    parser.add_argument("--tools", required=True, help="directory with the compiled loadgen and responder")
    parser.add_argument("--workdir", default=None, help="where temporary files go (default: the system's)")
    parser.add_argument("--ping-calls", type=int, default=4000)
    parser.add_argument("--boot-calls", type=int, default=1000)
    parser.add_argument("--berth-concurrency", type=int, default=32)
    parser.add_argument("--generators", type=int, default=4, help="most load generator processes (K/4 for K < 16)")
    parser.add_argument("--berth-log-level", default="info", help="the worker's --log-level (default: its own)")
    parser.add_argument("--starts", type=int, default=3, help="start-up measurements per server")
    parser.add_argument("--deploy-gib", type=int, default=2)
    parser.add_argument("--deploy-runs", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["rpc", "scale", "deploy"])
    parser.add_argument("--servers", nargs="*", default=["c", "berth", "oslo"], choices=["c", "berth", "oslo"],
                        help="which servers the rpc section measures")
    parser.add_argument("--json", help="write all figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--table-from", help="print the table of an earlier --json and exit")
    args = parser.parse_args()
    if args.table_from:
        with open(args.table_from) as f:
            print(table(json.load(f)))
        return 0
    results = Bench(args).run()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
