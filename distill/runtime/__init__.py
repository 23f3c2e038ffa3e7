"""Ray and MLflow: the runtime that calls into the pure-PyTorch method code (never the reverse).

Four rooms: ``execution`` (running a chain), ``infra`` (session, storage, errors, manifests,
resume), ``analysis`` (reports, figures, sweeps) and ``deployment`` (export, serving, predict).
"""
