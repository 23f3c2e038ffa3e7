"""What every runtime step stands on: the Ray session, storage (local paths and URIs), error translation, sealed manifests, resume."""
