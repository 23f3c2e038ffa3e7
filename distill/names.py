"""Names that other tools rely on, defined once: files on disk, MLflow tags and artifacts,
label constants. docs/mlflow.md is the contract these spell out."""

# Files. Every sealed dataset (the source, each stage's crops) has a manifest, written last.
MANIFEST = "manifest.json"
RUN_CONFIG = "config.json"  # the resolved config, in the chain's run directory
QUARANTINE = "quarantine.csv"  # the source's skipped files and why (also a chain-run artifact)

# MLflow artifacts of a chain run
CONFIG_ARTIFACT = "config.yaml"
SUMMARY_ARTIFACT = "summary.md"
CONFUSION_ARTIFACT = "eval/confusion.json"  # of every stage run

# MLflow tags
KIND = "pld.kind"  # chain | teacher | student | baseline | sweep | eval
METHOD = "pld.method"  # pld | direct | one_shot
INPUT_MS = "pld.input_ms"
TEACHER_RUN = "pld.teacher_run_id"
STAGE = "pld.stage"
TRAIN_RUNNER = "pld.train_runner"  # local | actor | workers: where a stage trained (train.runner, auto resolved)
STAGES = "pld.stages"  # a chain's stage names in plan order, comma-separated
RUN_DIR = "pld.run_dir"
FINGERPRINT = "pld.config_fingerprint"
SUPERSEDED = "pld.superseded"
REUSED_FROM = "pld.reused_from"  # a stage run that reuses another chain's finished stage (runtime/execution/shared.py)
SWEEP_POINT = "pld.sweep_point"
BEST_CHAIN = "pld.best_chain_run_id"

# Labels
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")  # Speech Commands' ten
NOISE_DIR = "_background_noise_"  # the dataset folder of long noise recordings

# Evaluation protocols (docs/cli.md: how a clip is scored by a shorter network)
PROTOCOLS = ("window", "stream", "center")
