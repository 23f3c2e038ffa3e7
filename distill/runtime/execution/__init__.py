"""Ray and MLflow running a chain: the driver, one stage's steps, Ray Data relabelling, Ray Train training, evaluation, MLflow logging, stages shared across chains."""
