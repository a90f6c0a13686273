"""The workflow layer: whole jobs built from the layers below (training, evaluation, train-then-evaluate,
the demo's chain of stages). Entry points call one function here; nothing here imports an entry point."""
