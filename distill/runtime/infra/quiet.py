"""Ray's ``worker_process_setup_hook``: quiet logging in every worker process. Kept apart and
import-light because every worker process imports it at start (docs/design-notes.md)."""

import logging


def quiet_worker() -> None:
    for name in ("ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
