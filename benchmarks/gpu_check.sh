#!/usr/bin/env bash
# The GPU path in one go, for a machine with an NVIDIA GPU; at most 8 minutes.
#
#   benchmarks/gpu_check.sh [OUT]            on the GPU machine (default OUT: ./gpu-check)
#   benchmarks/gpu_check.sh --dry-run [OUT]  the same steps on CPUs, GPU settings off (CI runs it)
#
# 1. Installs what the project needs and nothing else: a venv that sees the machine's own
#    packages (--system-site-packages: its CUDA torch and torchaudio stay, if pyproject's range
#    allows them), then `pip install -e .` adds the rest. PLD_WHEELS=DIR installs from a folder
#    of wheels instead of an index. PLD_SITE=FILE.tar.xz (benchmarks/gpu_bundle.py: what the
#    machine's image lacks, packed to travel in the 64 MiB a device call carries) unpacks it
#    beside the image's own python3 instead, for a machine that reaches no index. PYTHON=...
#    skips the step (with PLD_SITE, it names the python that gets the bundle).
# 2. Records the machine: nvidia-smi, torch's CUDA build and device (env.txt).
# 3. Runs `benchmarks/throughput.py --quick --gpu`: a short chain (`pld run`, teacher 1000 ms →
#    student 500 ms) training in a Ray Train worker on the GPU with bf16 autocast and relabeling
#    on a GPU actor, then the relabel and train figures against the plain loop on the same GPU.
#    nvidia-smi samples the GPU's use every second meanwhile (gpu-use.csv).
# Everything lands in OUT (six files at most): steps.log, env.txt, throughput.{txt,json},
# quickstart.log (the chain's console), gpu-use.csv. The exit status is the first failure's.
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
if [[ ${1:-} == --dry-run ]]; then dry=1; shift; fi
out=$(realpath -m "${1:-gpu-check}")
mkdir -p "$out"
budget=${PLD_GPU_CHECK_BUDGET_S:-480}  # 8 minutes, every step included
start=$SECONDS
say() { echo "[gpu_check $((SECONDS - start)) s] $*" | tee -a "$out/steps.log"; }
left() { echo $((budget - (SECONDS - start))); }
: >"$out/steps.log"
say "$( ((dry)) && echo "dry run (CPUs)" || echo "GPU run") → $out"

# 1. the project's dependencies
py=${PYTHON:-}
site="" work="" sampler=""
trap '[[ -n $sampler ]] && kill $sampler 2>/dev/null; rm -rf ${work:+"$work"} ${site:+"$site"}' EXIT
if [[ -n ${PLD_SITE:-} ]]; then
  site=$(mktemp -d -t pld-site-XXXX)
  say "1. unpacking $PLD_SITE into $site for ${py:=python3} (the image's packages kept)"
  tar -xJf "$PLD_SITE" -C "$site"
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"  # Ray's workers inherit it
  if ! "$py" -c "import distill, ray, mlflow, torch; print('   ray', ray.__version__, 'mlflow', mlflow.__version__, 'torch', torch.__version__)" \
    2>&1 | tee -a "$out/steps.log"; then
    say "1. failed: $py cannot import the project with $PLD_SITE (above); build it again for this machine with benchmarks/gpu_bundle.py"
    exit 1
  fi
elif [[ -z $py ]]; then
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import distill" 2>/dev/null; then
    py=.venv/bin/python
    say "1. using the existing .venv"
  else
    say "1. installing the project into .venv-gpu (the machine's own packages kept)"
    python3 -m venv --system-site-packages .venv-gpu
    timeout "$(left)" .venv-gpu/bin/pip install -q ${PLD_WHEELS:+--no-index --find-links "$PLD_WHEELS"} -e . \
      2>&1 | tail -5 | tee -a "$out/steps.log"
    py=.venv-gpu/bin/python
  fi
fi

# 2. the machine
{
  echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  if ((dry)); then echo "dry run: no GPU asked for"; else nvidia-smi || true; fi
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
        *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))'
} >"$out/env.txt" 2>&1
say "2. $(tail -1 "$out/env.txt")"

# 3. the chain and the throughput figures
gpu=(--gpu)
if ((dry)); then
  gpu=()
else
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 >"$out/gpu-use.csv" 2>&1 &
  sampler=$!
fi
work=$(mktemp -d -t pld-gpu-check-XXXX)
say "3. throughput.py --quick ${gpu[*]} (work in $work)"
status=0
PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 timeout "$(left)" "$py" benchmarks/throughput.py --quick "${gpu[@]}" --espeak-only \
  --workdir "$work" --json "$out/throughput.json" >"$out/throughput.txt" 2>&1 || status=$?
cp "$work/quickstart.log" "$out/quickstart.log" 2>/dev/null || true
if ((status)); then
  say "3. failed (exit $status$( ((status == 124)) && echo ": over the ${budget} s budget")); the end of throughput.txt:"
  tail -20 "$out/throughput.txt" | tee -a "$out/steps.log"
  exit "$status"
fi
say "3. done: $(grep -E '^(relabel crops|train samples)' "$out/throughput.txt" | tr -s ' ' | paste -sd ';' -)"
say "all steps passed in $((SECONDS - start)) s"
