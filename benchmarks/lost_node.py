"""A worker node lost mid-chain, by hand: two 1-CPU nodes (`ray start`, on this machine), a chain
through `pld run --address` (1000 -> 750 -> 500 ms, two 1-CPU training workers), and the second
node's processes killed by pid when the chain reaches a point of your choice; with RESUME=1 the
node is started again and `pld resume` finishes the chain. Prints the chain's lines with seconds.

    python benchmarks/lost_node.py relabel    # killed as student_750ms starts relabeling
    python benchmarks/lost_node.py train      # killed after student_750ms's second epoch
    env: EPOCHS (12), RESUME=1, LIMIT (600 s), DELAY (s after the trigger), KEEP=1 (keep the work dir)

tests/integration/test_lost_node_integration.py runs the training case in CI."""
import os, sys, time, signal, subprocess, tempfile, socket, shutil, threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import write_sc_layout  # noqa: E402
import yaml  # noqa: E402
BIN = Path(sys.executable).parent
WHEN = sys.argv[1]  # "relabel" or "train"
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]
def pids(marker):
    out = []
    for e in Path("/proc").iterdir():
        if e.name.isdigit():
            try:
                if marker in (e / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"): out.append(int(e.name))
            except OSError: pass
    return out
def kill(marker):
    for _ in range(3):
        for p in pids(marker):
            try: os.kill(p, signal.SIGKILL)
            except ProcessLookupError: pass
        time.sleep(0.5)
work = Path(tempfile.mkdtemp(prefix="ln", dir="/tmp"))
env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
gcs = free_port()
common = ["--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
def start_worker():
    subprocess.run([BIN / "ray", "start", "--address", f"127.0.0.1:{gcs}", "--dashboard-agent-listen-port", str(free_port()),
                    "--metrics-export-port", str(free_port()), "--temp-dir", str(work / "worker"), *common], env=env, check=True, capture_output=True)
subprocess.run([BIN / "ray", "start", "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(free_port()), "--include-dashboard", "true",
                "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                "--metrics-export-port", str(free_port()), "--temp-dir", str(work / "head"), *common], env=env, check=True, capture_output=True)
try:
    start_worker()
except subprocess.CalledProcessError as e:
    print(e.stdout[-2000:], e.stderr[-2000:]); kill(str(work)); raise
speakers = [f"{i:08x}" for i in range(24)]
corpus = write_sc_layout(work / "corpus", ["yes","no","up","down","left","right","on","off","stop","go","bed","cat"], speakers, val={speakers[0], speakers[1]}, test={speakers[2], speakers[3]})
(work / "c.yaml").write_text(yaml.safe_dump({"data": {"path": str(corpus)}, "chain": {"lengths_ms": [1000, 750, 500], "crops_per_clip": 4, "baselines": []},
    "train": {"epochs": int(os.environ.get("EPOCHS", "12")), "batch_size": 32, "num_workers": 2, "cpus_per_worker": 1, "resource_wait_s": 90},
    "relabel": {"batch_size": 16, "cpus_per_actor": 1}, "storage": {"root": str(work / "runs")}}))
t0 = time.time()
proc = subprocess.Popen([sys.executable, "-u", "-m", "distill.cli", "run", "c.yaml", "--address", f"127.0.0.1:{gcs}",
                         "--tracking-uri", f"sqlite:///{work / 'm.db'}"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
trigger = "== [2/3] student_750ms" if WHEN == "relabel" else "[student_750ms] epoch 2/"
killed = None
lines = []
def reader():
    for line in proc.stdout:
        lines.append((time.time() - t0, line.rstrip()))
        (not line.startswith(" " * 4) or "epoch" in line) and print(f"{time.time()-t0:7.1f} {line.rstrip()}", flush=True)
threading.Thread(target=reader, daemon=True).start()
while proc.poll() is None and time.time() - t0 < float(os.environ.get("LIMIT", "600")):
    if killed is None and any(trigger in l for _, l in lines):
        time.sleep(float(os.environ.get("DELAY", "0")))
        kill(str(work / "worker")); killed = time.time() - t0
        print(f"{killed:7.1f} >>> killed the worker node", flush=True)
        if os.environ.get("RESTART_AFTER"):
            time.sleep(float(os.environ["RESTART_AFTER"])); start_worker(); print(f"{time.time()-t0:7.1f} >>> worker node back", flush=True)
    time.sleep(0.5)
print("rc", proc.poll(), "after", time.time() - t0)
if proc.poll() is None:
    subprocess.run(["sh", "-c", f"RAY_ADDRESS=127.0.0.1:{gcs} {BIN}/ray status 2>&1 | head -30"])
    proc.kill()
if os.environ.get("RESUME") and proc.poll() == 2:
    run_id = [l for _, l in lines if "pld resume " in l][-1].split("pld resume ")[1].strip()
    start_worker(); print(f"{time.time()-t0:7.1f} >>> worker node back; pld resume {run_id}", flush=True)
    t1 = time.time()
    r = subprocess.run([sys.executable, "-u", "-m", "distill.cli", "resume", run_id, "--address", f"127.0.0.1:{gcs}",
                        "--tracking-uri", f"sqlite:///{work / 'm.db'}"], cwd=work, env=env, capture_output=True, text=True)
    print("\n".join(l for l in r.stdout.splitlines() if not l.startswith(" " * 4)))
    print(r.stderr[-1500:]); print("resume rc", r.returncode, "in", time.time() - t1)
print("WORK", work)
if os.environ.get("KEEP") != "1":
    kill(str(work)); shutil.rmtree(work, ignore_errors=True)
