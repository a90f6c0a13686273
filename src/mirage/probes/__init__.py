"""Robustness probes: ways of asking an audited model again, after changing the model (quantize, relearn,
ablate_refusal) or its inputs (figstep, query_relevant, visual_pgd, gcg). A probe only declares variants
(`mirage.probes.base`); `mirage.workflows.audit` trains, evaluates and compares them."""
