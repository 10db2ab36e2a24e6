"""The committed experiment's finding as the MyST substitution ``{{ experiment_verdict }}``, written
from `data/results/factorial_experiment_verdict.csv` at build time, so the intro never carries a
hand-copied number."""
from carmenes_dtl import experiment


def add_verdict(app, config):
    config.myst_substitutions = {**config.myst_substitutions, "experiment_verdict": experiment.committed_headline()}


def setup(app):
    app.connect("config-inited", add_verdict)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
